//! PAM: otpd's Unix socket as pam_otp.so asks it, and PAM service files
//! for pamtester.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use otpproto::socket::{Request, Status};
use serde_json::Value;

use crate::http::bad;
use crate::process::{built_binary, run_with_input, RUN_TIMEOUT, START_TIMEOUT};
use crate::TestEnv;

/// The PAM module that sshd and sudo load: `$PAM_OTP_SO`, or
/// `target/debug/libpam_otp.so` beside this test.
pub fn pam_module_path() -> PathBuf {
    built_binary("PAM_OTP_SO", "libpam_otp.so")
}

/// Sends `requests` (one JSON object a line) on one connection to the
/// socket at `path` and reads one answer line per request.
pub fn socket_exchange(path: &Path, requests: &[Value]) -> std::io::Result<Vec<Value>> {
    use std::io::BufRead;
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(RUN_TIMEOUT))?;
    stream.set_write_timeout(Some(RUN_TIMEOUT))?;
    let mut text = String::new();
    for request in requests {
        text.push_str(&request.to_string());
        text.push('\n');
    }
    stream.write_all(text.as_bytes())?;
    let mut reader = std::io::BufReader::new(stream);
    let mut answers = Vec::new();
    for _ in requests {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "otpd closed the connection after {} answer(s)",
                    answers.len()
                ),
            ));
        }
        answers.push(
            serde_json::from_str(&line)
                .map_err(|e| bad(format!("answer is not JSON ({e}): {line:?}")))?,
        );
    }
    Ok(answers)
}

impl TestEnv {
    /// `[socket].path` of the config.
    pub fn socket_path(&self) -> PathBuf {
        self.root().join("otpd.sock")
    }

    /// One request over the socket, one answer; panics when otpd does not
    /// answer.
    pub fn socket_request(&self, request: &Value) -> Value {
        socket_exchange(&self.socket_path(), std::slice::from_ref(request))
            .unwrap_or_else(|e| panic!("socket request: {e}\n{}", self.otpd_log()))
            .remove(0)
    }
    /// Waits until otpd answers a status request on the socket.
    pub fn wait_for_socket(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let status = serde_json::to_value(Request::<String>::Status).expect("status request");
        let ok = serde_json::to_value(Status {
            version: otpcore::VERSION.to_owned(),
        })
        .expect("status answer");
        loop {
            let answer = socket_exchange(&self.socket_path(), std::slice::from_ref(&status));
            if matches!(&answer, Ok(a) if a[0] == ok) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "otpd did not answer on its socket within {START_TIMEOUT:?} ({answer:?}):\n{}",
                self.otpd_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What pamtester prints for each outcome (pam_strerror(3) texts).
pub mod pamtester {
    pub const SUCCESS: &str = "successfully authenticated";
    pub const AUTH_ERR: &str = "Authentication failure";
    pub const AUTHINFO_UNAVAIL: &str = "Authentication service cannot retrieve authentication info";
    pub const SERVICE_ERR: &str = "Error in service module";

    /// Whether pamtester ended as `expected` says: exit 0 and
    /// [`SUCCESS`], or exit 1 and the given pam_strerror text.
    pub fn ended_with(output: &std::process::Output, expected: &str) -> bool {
        let exit_ok = if expected == SUCCESS {
            output.status.success()
        } else {
            output.status.code() == Some(1)
        };
        exit_ok && crate::said(output).contains(expected)
    }
}

/// A PAM service file `/etc/pam.d/NAME` for pamtester, removed on drop.
pub struct PamService {
    name: String,
    path: PathBuf,
}

impl PamService {
    /// `auth required <built module> ARGS` followed by the `extra` lines.
    pub fn new(args: &str, extra: &[&str]) -> PamService {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "otpd-e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = Path::new("/etc/pam.d").join(&name);
        let mut text = format!("auth required {} {args}\n", pam_module_path().display());
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        fs::write(&path, text).expect("write the /etc/pam.d service file");
        PamService { name, path }
    }

    /// The service name, as pamtester takes it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `pamtester SERVICE USER authenticate` with `input` typed at the prompts.
    pub fn authenticate(&self, user: &str, input: &str) -> Output {
        run_with_input(
            Command::new("pamtester").args([self.name.as_str(), user, "authenticate"]),
            input,
        )
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
