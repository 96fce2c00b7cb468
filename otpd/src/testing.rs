//! Fixtures the listeners' in-process unit tests share.

use std::path::Path;

use otpstore::ImportedToken;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::daemon::{unix_now, Daemon};

/// A fixed secret for test tokens.
pub const SECRET: &[u8] = b"otpd in-process test";

/// Gives `user` an active token with [`SECRET`] and the configured
/// parameters.
pub fn active_token(daemon: &Daemon, user: &str) {
    let token = ImportedToken {
        user,
        secret: SECRET,
        params: daemon.config.token.params(),
        last_step: None,
    };
    daemon
        .store()
        .import_tokens(&[token], "OTPD", false, unix_now())
        .expect("import a test token");
}

/// Sends raw bytes to the Unix socket at `path`, returns every answer line
/// until the server closes or `lines` answers came.
pub async fn exchange(path: &Path, bytes: &[u8], lines: usize) -> Vec<Value> {
    let stream = UnixStream::connect(path).await.expect("connect");
    let (reader, mut writer) = stream.into_split();
    writer.write_all(bytes).await.expect("write");
    let mut reader = BufReader::new(reader);
    let mut answers = Vec::new();
    while answers.len() < lines {
        let mut line = String::new();
        if reader.read_line(&mut line).await.expect("read") == 0 {
            break;
        }
        answers.push(serde_json::from_str(&line).expect("JSON answer"));
    }
    answers
}
