//! Log lines to the local syslog daemon: facility authpriv, ident
//! `pam_otp`, written as RFC 3164 datagrams to /dev/log by the module
//! itself. Not `openlog(3)`, which would change the host's ident and
//! facility for the rest of its life, and not the `syslog` crate, whose
//! formatter unwraps and stamps UTC as local time. Nothing goes to the
//! host's stdout or stderr; a line that cannot be written is dropped.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::auth::{Level, Log};

/// The local syslog socket.
pub const DEV_LOG: &str = "/dev/log";
/// LOG_AUTHPRIV.
const FACILITY_AUTHPRIV: u8 = 10 << 3;
/// How long one line may wait for a busy syslog daemon.
const SEND_TIMEOUT: Duration = Duration::from_millis(250);
/// The longest message kept, in characters before escaping.
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// Writes each line over a fresh connection to the syslog socket (no
/// state kept between calls, so nothing is shared between threads).
#[derive(Debug, Clone)]
pub struct Syslog {
    path: PathBuf,
}

impl Default for Syslog {
    fn default() -> Self {
        Syslog {
            path: PathBuf::from(DEV_LOG),
        }
    }
}

fn severity(level: Level) -> u8 {
    match level {
        Level::Err => 3,
        Level::Warning => 4,
        Level::Notice => 5,
        Level::Info => 6,
        Level::Debug => 7,
    }
}

/// One RFC 3164 line as syslog(3) writes it: `<PRI>Mmm dd hh:mm:ss
/// pam_otp[PID]: message`, the message escaped (control, format and
/// separator characters as `\u{hex}`, a backslash as `\\`) and at most
/// [`MAX_MESSAGE_CHARS`] long. This is where the module's log lines are
/// escaped, once.
pub fn format_line(level: Level, message: &str, unix: i64, pid: u32) -> String {
    let stamp = libc::time_t::try_from(unix)
        .ok()
        .and_then(crate::ffi::local_timestamp)
        .map(|s| format!("{s} "))
        .unwrap_or_default();
    let message = otpproto::logtext::escape(message, MAX_MESSAGE_CHARS);
    format!(
        "<{}>{stamp}pam_otp[{pid}]: {message}",
        FACILITY_AUTHPRIV | severity(level)
    )
}

impl Syslog {
    /// A writer to another socket (tests).
    pub fn at(path: impl Into<PathBuf>) -> Syslog {
        Syslog { path: path.into() }
    }

    fn send(&self, line: &[u8]) -> std::io::Result<()> {
        let address = SockAddr::unix(&self.path)?;
        let socket = Socket::new(Domain::UNIX, Type::DGRAM, None)?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        match socket.connect(&address) {
            Ok(()) => {
                socket.send_with_flags(line, libc::MSG_NOSIGNAL)?;
            }
            // A stream socket at /dev/log (some syslog daemons): one line,
            // NUL-terminated, as glibc sends it.
            Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
                socket.set_write_timeout(Some(SEND_TIMEOUT))?;
                socket.connect(&address)?;
                let mut framed = line.to_vec();
                framed.push(0);
                let mut sent = 0;
                while let Some(rest) = framed.get(sent..).filter(|r| !r.is_empty()) {
                    sent += socket.send_with_flags(rest, libc::MSG_NOSIGNAL)?;
                }
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

impl Log for Syslog {
    fn log(&self, level: Level, message: &str) {
        let now = i64::try_from(otpproto::clock::unix_now()).unwrap_or(0);
        let line = format_line(level, message, now, std::process::id());
        let _ = self.send(line.as_bytes());
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn lines_reach_a_datagram_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        Syslog::at(&path).log(Level::Notice, "refused user \"alice\"\nforged");
        let mut buf = [0u8; 2048];
        let n = server.recv(&mut buf).unwrap();
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        // authpriv (10) * 8 + notice (5) = 85
        assert!(line.starts_with("<85>"), "{line}");
        assert!(
            line.ends_with(&format!(
                " pam_otp[{}]: refused user \"alice\"\\u{{a}}forged",
                std::process::id()
            )),
            "{line}"
        );
    }

    #[test]
    fn format_and_separator_characters_are_escaped() {
        let line = format_line(
            Level::Notice,
            "refused user \"ali\u{202e}ecb\" service \"x\u{2028}y\u{200b}\"",
            0,
            7,
        );
        assert!(
            line.ends_with(
                " pam_otp[7]: refused user \"ali\\u{202e}ecb\" service \"x\\u{2028}y\\u{200b}\""
            ),
            "{line}"
        );
        assert!(
            !line.contains(['\u{202e}', '\u{2028}', '\u{200b}']),
            "{line}"
        );
    }

    #[test]
    fn a_missing_socket_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        Syslog::at(dir.path().join("nothing")).log(Level::Err, "dropped");
    }

    #[test]
    fn format() {
        let line = format_line(Level::Err, "x", 0, 7);
        assert!(line.starts_with("<83>"), "{line}");
        assert!(line.ends_with(" pam_otp[7]: x"), "{line}");
        assert_eq!(format_line(Level::Debug, "y", 0, 1).get(..4), Some("<87>"));
    }
}
