//! Fixtures the listeners' in-process unit tests share.

use otpstore::ImportedToken;

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
