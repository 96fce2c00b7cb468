//! One verify exchange with otpd over its Unix socket (the protocol is
//! `otpproto::socket`): one JSON line out, one JSON line (at most 4 KiB)
//! back, then the connection is closed. Blocking I/O with one deadline for connect, write and read; no
//! threads, no runtime; writes never raise SIGPIPE in the host.

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use otpproto::socket::{parse_answer, Answer, AnswerError, Request, Verify, MAX_LINE};
use socket2::{Domain, SockAddr, Socket, Type};
use zeroize::Zeroizing;

/// A `Write` into a buffer allocated once: it refuses to grow past
/// [`MAX_LINE`], so the bytes holding the code are never reallocated (and
/// left behind un-zeroed).
struct Line(Zeroizing<Vec<u8>>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.len().saturating_add(buf.len()) > MAX_LINE {
            return Err(io::Error::other("request longer than 4 KiB"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The request line, newline included, in a zeroizing buffer; `None` when
/// it would exceed [`MAX_LINE`].
pub fn verify_request(
    user: &str,
    otp: &str,
    service: Option<&str>,
    rhost: Option<&str>,
    nullok: bool,
) -> Option<Zeroizing<Vec<u8>>> {
    let mut line = Line(Zeroizing::new(Vec::with_capacity(MAX_LINE)));
    let request = Request::Verify(Verify {
        user,
        otp,
        service,
        rhost,
        nullok,
    });
    serde_json::to_writer(&mut line, &request).ok()?;
    line.write_all(b"\n").ok()?;
    Some(line.0)
}

/// Why no answer could be had.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("cannot send the request: {0}")]
    Send(io::Error),
    #[error("cannot read the answer: {0}")]
    Receive(io::Error),
    #[error("no answer within {0} ms")]
    Timeout(u128),
    #[error("the connection closed before a whole answer line")]
    Closed,
    #[error("answer line longer than 4 KiB")]
    TooLong,
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// Reads one answer line (without its newline).
fn answer(line: &[u8]) -> Result<Answer, ClientError> {
    parse_answer(line).map_err(|e| {
        ClientError::Malformed(match e {
            AnswerError::NotJson(e) => format!("not JSON ({e})"),
            AnswerError::NotObject => "not a JSON object".to_owned(),
            AnswerError::NoResult => "no \"result\" string".to_owned(),
            AnswerError::Unexpected(other) => {
                format!("unexpected result {}", crate::auth::shown(&other))
            }
        })
    })
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// What is left of the time until `deadline`, or a timeout error.
fn remaining(deadline: Instant, timeout: Duration) -> Result<Duration, ClientError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(ClientError::Timeout(timeout.as_millis()))
    } else {
        Ok(left)
    }
}

/// Sends `request` (one line) to the socket at `path` and reads one answer
/// line, all within `timeout`.
pub fn exchange(path: &Path, request: &[u8], timeout: Duration) -> Result<Answer, ClientError> {
    // A deadline past what the clock can hold is now: fail closed.
    let start = Instant::now();
    let deadline = start.checked_add(timeout).unwrap_or(start);
    let address = SockAddr::unix(path).map_err(ClientError::Connect)?;
    // socket2 opens it with SOCK_CLOEXEC: a host that forks does not leak it.
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(ClientError::Connect)?;
    // A blocking connect on a Unix stream socket waits for a full backlog at
    // most SO_SNDTIMEO.
    socket
        .set_write_timeout(Some(remaining(deadline, timeout)?))
        .map_err(ClientError::Connect)?;
    socket.connect(&address).map_err(|e| {
        if is_timeout(&e) {
            ClientError::Timeout(timeout.as_millis())
        } else {
            ClientError::Connect(e)
        }
    })?;

    let mut sent = 0;
    while let Some(rest) = request.get(sent..).filter(|r| !r.is_empty()) {
        socket
            .set_write_timeout(Some(remaining(deadline, timeout)?))
            .map_err(ClientError::Send)?;
        // MSG_NOSIGNAL: a daemon gone away is an error here, not a SIGPIPE
        // that kills the host.
        match socket.send_with_flags(rest, libc::MSG_NOSIGNAL) {
            Ok(0) => return Err(ClientError::Closed),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(ClientError::Timeout(timeout.as_millis())),
            Err(e) => return Err(ClientError::Send(e)),
        }
    }

    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            line.truncate(end);
            break;
        }
        if line.len() > MAX_LINE {
            return Err(ClientError::TooLong);
        }
        socket
            .set_read_timeout(Some(remaining(deadline, timeout)?))
            .map_err(ClientError::Receive)?;
        match (&socket).read(&mut chunk) {
            // A last line without its newline still counts; a truncated
            // one fails to parse.
            Ok(0) if line.is_empty() => return Err(ClientError::Closed),
            Ok(0) => break,
            Ok(n) => line.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(ClientError::Timeout(timeout.as_millis())),
            Err(e) => return Err(ClientError::Receive(e)),
        }
    }
    if line.len() >= MAX_LINE {
        return Err(ClientError::TooLong);
    }
    answer(&line)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let line = verify_request("a\"b\n", "1", Some("sshd"), None, true).unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(
            otpproto::socket::parse_request(&line),
            Ok(Request::Verify(Verify {
                user: "a\"b\n".to_owned(),
                otp: "1".to_owned(),
                service: Some("sshd".to_owned()),
                rhost: None,
                nullok: true,
            }))
        );
        assert!(verify_request(&"x".repeat(5000), "1", None, None, false).is_none());
        // 35 bytes of frame around the user name, newline included.
        let at_limit = verify_request(&"x".repeat(MAX_LINE - 35), "", None, None, false).unwrap();
        assert_eq!(at_limit.len(), MAX_LINE);
        assert!(verify_request(&"x".repeat(MAX_LINE - 34), "", None, None, false).is_none());
    }

    #[test]
    fn answers_and_what_is_wrong_with_the_others() {
        assert_eq!(answer(br#"{"result":"reject"}"#).unwrap(), Answer::Reject);
        for (line, expected) in [
            (
                &b"accept"[..],
                "not JSON (expected value at line 1 column 1)",
            ),
            (br#"["accept"]"#, "not a JSON object"),
            (br#"{"result":1}"#, "no \"result\" string"),
            (
                br#"{"result":"ok","version":"0.1.0"}"#,
                "unexpected result \"ok\"",
            ),
            (br#"{"result":"a\"b"}"#, "unexpected result \"a\"\"b\""),
        ] {
            assert_eq!(
                answer(line).unwrap_err().to_string(),
                format!("malformed answer: {expected}")
            );
        }
    }
}
