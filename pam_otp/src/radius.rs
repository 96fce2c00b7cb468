//! One verify exchange with otpd nodes over RADIUS, for hosts that hold
//! only a shared secret: an Access-Request (User-Name, User-Password hidden
//! as RFC 2865 §5.2 says, NAS-Identifier, and the Message-Authenticator
//! first) to each server in turn, each with its own deadline, until one
//! answers.
//!
//! An answer counts only when it comes from the server asked, carries the
//! request's Identifier, and both its Response Authenticator and its
//! Message-Authenticator verify with the secret; anything else is ignored
//! like a forgery, and the wait goes on until the deadline. Each server
//! gets a fresh socket, Identifier and Request Authenticator (from the
//! OS's random source), so a late answer from a server given up on is
//! never taken. Blocking I/O, no threads; the packet codec is otpcore's.

#![forbid(unsafe_code)]

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use otpcore::radius::{self, attr, code, Packet, RadiusError};
use otpproto::socket::Answer;
use zeroize::Zeroizing;

use crate::auth::{Level, Log};

/// The longest secret file read, newline included.
pub const MAX_SECRET: usize = 1024;
/// What NAS-Identifier says when the host has no name.
const NAS_FALLBACK: &str = "pam_otp";

/// Why the secret file is not used. The messages name the file, never
/// its content.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot open {0}: {1}")]
    Open(String, io::Error),
    #[error("cannot read {0}: {1}")]
    Read(String, io::Error),
    #[error("{0} is not a regular file")]
    NotAFile(String),
    #[error("{path} is owned by uid {uid}; it must be root's")]
    Owner { path: String, uid: u32 },
    #[error(
        "{path} has mode {mode:04o}, readable by group or others; it must be \
         root's alone (chmod 600)"
    )]
    Mode { path: String, mode: u32 },
    #[error("{0} is longer than 1024 bytes")]
    TooLong(String),
    #[error("{0} is empty")]
    Empty(String),
}

/// Reads the shared secret from `path`: a regular file owned by `owner`
/// (root in production) that no group or other user may read or write,
/// at most [`MAX_SECRET`] bytes; one trailing newline (`\n` or `\r\n`) is
/// not part of the secret. The bytes are wiped when dropped. A FIFO at
/// the path is opened without waiting for a writer, then refused.
pub fn load_secret(path: &Path, owner: u32) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let shown = path.display().to_string();
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| SecretError::Open(shown.clone(), e))?;
    let meta = file
        .metadata()
        .map_err(|e| SecretError::Read(shown.clone(), e))?;
    if !meta.is_file() {
        return Err(SecretError::NotAFile(shown));
    }
    if meta.uid() != owner {
        return Err(SecretError::Owner {
            path: shown,
            uid: meta.uid(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Mode { path: shown, mode });
    }
    // A fixed buffer, never reallocated: no copy of the secret is left
    // behind un-wiped.
    let mut buffer = Zeroizing::new([0u8; MAX_SECRET + 1]);
    let mut len = 0;
    while let Some(rest) = buffer.get_mut(len..).filter(|r| !r.is_empty()) {
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SecretError::Read(shown, e)),
        }
    }
    if len > MAX_SECRET {
        return Err(SecretError::TooLong(shown));
    }
    let mut text = buffer.get(..len).unwrap_or_default();
    if let Some(line) = text.strip_suffix(b"\n") {
        text = line.strip_suffix(b"\r").unwrap_or(line);
    }
    if text.is_empty() {
        return Err(SecretError::Empty(shown));
    }
    Ok(Zeroizing::new(text.to_vec()))
}

/// The Access-Request: User-Name, User-Password hidden with `secret` and
/// `authenticator`, NAS-Identifier `nas`, and the Message-Authenticator
/// first.
pub fn access_request(
    identifier: u8,
    authenticator: &[u8; 16],
    user: &str,
    otp: &str,
    nas: &str,
    secret: &[u8],
) -> Result<Vec<u8>, RadiusError> {
    let hidden = radius::encrypt_password(otp.as_bytes(), secret, authenticator)?;
    radius::encode_request(
        code::ACCESS_REQUEST,
        identifier,
        authenticator,
        &[
            (attr::USER_NAME, user.as_bytes()),
            (attr::USER_PASSWORD, &hidden),
            (attr::NAS_IDENTIFIER, nas.as_bytes()),
        ],
        secret,
        true,
    )
}

/// Why a datagram is not the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// From an address other than the server asked.
    OtherAddress,
    Malformed,
    OtherIdentifier,
    /// The Response Authenticator or the Message-Authenticator does not
    /// verify, or the Message-Authenticator is missing.
    NotAuthenticated,
    /// Authenticated, but neither Access-Accept nor Access-Reject.
    UnexpectedCode(u8),
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ignored::OtherAddress => f.write_str("from another address"),
            Ignored::Malformed => f.write_str("not a RADIUS packet"),
            Ignored::OtherIdentifier => f.write_str("another request's identifier"),
            Ignored::NotAuthenticated => {
                f.write_str("bad or missing authenticators (a wrong secret, or forged)")
            }
            Ignored::UnexpectedCode(code) => write!(f, "packet code {code}"),
        }
    }
}

/// What `datagram` says about the request with `identifier` and
/// `authenticator`: Access-Accept or Access-Reject, each only when
/// authenticated with `secret` (Response Authenticator and
/// Message-Authenticator both).
pub fn answer_to(
    datagram: &[u8],
    identifier: u8,
    authenticator: &[u8; 16],
    secret: &[u8],
) -> Result<Answer, Ignored> {
    let packet = Packet::decode(datagram).map_err(|_| Ignored::Malformed)?;
    if packet.identifier != identifier {
        return Err(Ignored::OtherIdentifier);
    }
    if !packet.is_authenticated_response_to(authenticator, secret) {
        return Err(Ignored::NotAuthenticated);
    }
    match packet.code {
        code::ACCESS_ACCEPT => Ok(Answer::Accept),
        code::ACCESS_REJECT => Ok(Answer::Reject),
        other => Err(Ignored::UnexpectedCode(other)),
    }
}

/// Why one server gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("no random numbers from the system: {0}")]
    Random(String),
    #[error("cannot encode the request: {0}")]
    Encode(RadiusError),
    #[error("cannot open a UDP socket: {0}")]
    Socket(io::Error),
    #[error("cannot send the request: {0}")]
    Send(io::Error),
    #[error("cannot read the answer: {0}")]
    Receive(io::Error),
    #[error("port closed (connection refused)")]
    Refused,
    #[error("no answer within {ms} ms{}", ignored_note(*.ignored, *.last))]
    Timeout {
        ms: u128,
        ignored: usize,
        last: Option<Ignored>,
    },
}

fn ignored_note(count: usize, last: Option<Ignored>) -> String {
    match last {
        Some(why) if count > 0 => format!(" ({count} datagram(s) ignored, the last: {why})"),
        _ => String::new(),
    }
}

/// Why no server gave an answer.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The request cannot be put into RADIUS (a user name longer than an
    /// attribute holds): refused without asking.
    #[error("{0}")]
    Request(RadiusError),
    /// Every server failed; each with its reason.
    #[error("{}", .0.iter().map(|(s, e)| format!("{s}: {e}")).collect::<Vec<_>>().join("; "))]
    NoAnswer(Vec<(SocketAddr, ServerError)>),
}

/// The otpd nodes, the shared secret and each node's deadline.
pub struct Remote {
    servers: Vec<SocketAddr>,
    secret: Zeroizing<Vec<u8>>,
    timeout: Duration,
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RADIUS ")?;
        for (i, server) in self.servers.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{server}")?;
        }
        Ok(())
    }
}

impl Remote {
    pub fn new(servers: Vec<SocketAddr>, secret: Zeroizing<Vec<u8>>, timeout: Duration) -> Remote {
        Remote {
            servers,
            secret,
            timeout,
        }
    }

    /// Asks each server in turn whether `otp` is `user`'s code, until one
    /// answers; a server that does not is logged (naming `who`) before the
    /// next is asked.
    pub fn ask(
        &self,
        user: &str,
        otp: &str,
        log: &dyn Log,
        who: &str,
    ) -> Result<Answer, RemoteError> {
        let nas = crate::ffi::host_name().unwrap_or_else(|| NAS_FALLBACK.to_owned());
        // Checked once up front: a request that cannot be encoded fails the
        // same way for every server.
        if let Err(e) = access_request(0, &[0u8; 16], user, otp, &nas, &self.secret) {
            return Err(RemoteError::Request(e));
        }
        let mut failures = Vec::with_capacity(self.servers.len());
        for (i, &server) in self.servers.iter().enumerate() {
            match self.ask_one(server, user, otp, &nas) {
                Ok(answer) => return Ok(answer),
                Err(e) => {
                    if i + 1 < self.servers.len() {
                        log.log(
                            Level::Warning,
                            &format!(
                                "RADIUS server {server} unusable for {who}: {e}; asking the next"
                            ),
                        );
                    }
                    failures.push((server, e));
                }
            }
        }
        Err(RemoteError::NoAnswer(failures))
    }

    fn ask_one(
        &self,
        server: SocketAddr,
        user: &str,
        otp: &str,
        nas: &str,
    ) -> Result<Answer, ServerError> {
        let mut random = [0u8; 17];
        getrandom::getrandom(&mut random).map_err(|e| ServerError::Random(e.to_string()))?;
        let [identifier, rest @ ..] = random;
        let authenticator: [u8; 16] = rest;
        let request = access_request(identifier, &authenticator, user, otp, nas, &self.secret)
            .map_err(ServerError::Encode)?;
        exchange(
            server,
            &request,
            identifier,
            &authenticator,
            &self.secret,
            self.timeout,
        )
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Sends `request` to `server` and waits at most `timeout` for its answer,
/// ignoring (and counting) every datagram that is not it.
pub fn exchange(
    server: SocketAddr,
    request: &[u8],
    identifier: u8,
    authenticator: &[u8; 16],
    secret: &[u8],
    timeout: Duration,
) -> Result<Answer, ServerError> {
    let start = Instant::now();
    // A deadline past what the clock can hold is now: fail closed.
    let deadline = start.checked_add(timeout).unwrap_or(start);
    // Any local address and port of the server's family.
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::from(0u32), 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::from(0u128), 0).into(),
    };
    // Opened with SOCK_CLOEXEC: a host that forks does not leak it.
    let socket = UdpSocket::bind(local).map_err(ServerError::Socket)?;
    // Connected: the kernel passes on datagrams from the server only, and
    // reports a closed port at once.
    socket.connect(server).map_err(ServerError::Socket)?;
    match socket.send(request) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(ServerError::Refused),
        Err(e) => return Err(ServerError::Send(e)),
    }
    // One byte more than the largest packet, to see oversized ones.
    let mut buffer = [0u8; radius::MAX_PACKET + 1];
    let mut ignored = 0;
    let mut last = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ServerError::Timeout {
                ms: timeout.as_millis(),
                ignored,
                last,
            });
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(ServerError::Receive)?;
        match socket.recv_from(&mut buffer) {
            Ok((len, from)) => {
                let verdict = if from.ip() == server.ip() && from.port() == server.port() {
                    let datagram = buffer.get(..len).unwrap_or_default();
                    answer_to(datagram, identifier, authenticator, secret)
                } else {
                    // Only if the kernel let it through the connected
                    // socket.
                    Err(Ignored::OtherAddress)
                };
                match verdict {
                    Ok(answer) => return Ok(answer),
                    Err(why) => {
                        ignored += 1;
                        last = Some(why);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(ServerError::Refused)
            }
            Err(e) if is_timeout(&e) => {
                return Err(ServerError::Timeout {
                    ms: timeout.as_millis(),
                    ignored,
                    last,
                })
            }
            Err(e) => return Err(ServerError::Receive(e)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::thread::JoinHandle;

    use md5::Digest;
    use proptest::prelude::*;

    pub(crate) const SECRET: &[u8] = b"shared-secret";
    const CODE: &str = "924683";

    #[derive(Default)]
    struct Lines(RefCell<Vec<String>>);

    impl Log for Lines {
        fn log(&self, level: Level, message: &str) {
            self.0.borrow_mut().push(format!("{level:?}: {message}"));
        }
    }

    /// A secret file in a temp dir with `text` and `mode`; the dir, the
    /// path and the uid that owns it.
    pub(crate) fn secret_file(text: &[u8], mode: u32) -> (tempfile::TempDir, PathBuf, u32) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let uid = std::fs::metadata(&path).unwrap().uid();
        (dir, path, uid)
    }

    #[test]
    fn secret_files() {
        for (text, secret) in [
            (&b"s3cret\n"[..], &b"s3cret"[..]),
            (b"s3cret", b"s3cret"),
            (b"s3cret\r\n", b"s3cret"),
            (b"s3cret\n\n", b"s3cret\n"),
            (b" spaced secret \n", b" spaced secret "),
        ] {
            let (_dir, path, uid) = secret_file(text, 0o600);
            assert_eq!(load_secret(&path, uid).unwrap().as_slice(), secret);
        }
        let (_dir, path, uid) = secret_file(b"s3cret\n", 0o400);
        assert_eq!(load_secret(&path, uid).unwrap().as_slice(), b"s3cret");
        let (_dir, path, uid) = secret_file(&[b'x'; MAX_SECRET], 0o600);
        assert_eq!(load_secret(&path, uid).unwrap().len(), MAX_SECRET);
    }

    #[test]
    fn unsafe_or_unusable_secret_files_are_refused() {
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o610, 0o666] {
            let (_dir, path, uid) = secret_file(b"s3cret\n", mode);
            let error = load_secret(&path, uid).unwrap_err();
            assert!(
                matches!(error, SecretError::Mode { .. }),
                "{mode:o}: {error}"
            );
            let message = error.to_string();
            assert!(
                message.contains(&path.display().to_string())
                    && message.contains(&format!("mode {mode:04o}"))
                    && message.contains("readable by group or others"),
                "{message}"
            );
            assert!(!message.contains("s3cret"), "{message}");
        }
        let (_dir, path, uid) = secret_file(b"s3cret\n", 0o600);
        let error = load_secret(&path, uid.wrapping_add(1)).unwrap_err();
        assert!(
            error.to_string().contains(&format!("owned by uid {uid}")),
            "{error}"
        );
        for text in [&b""[..], b"\n", b"\r\n"] {
            let (_dir, path, uid) = secret_file(text, 0o600);
            assert!(matches!(
                load_secret(&path, uid),
                Err(SecretError::Empty(_))
            ));
        }
        let (_dir, path, uid) = secret_file(&[b'x'; MAX_SECRET + 1], 0o600);
        assert!(matches!(
            load_secret(&path, uid),
            Err(SecretError::TooLong(_))
        ));
        let (dir, _, uid) = secret_file(b"x", 0o600);
        assert!(matches!(
            load_secret(dir.path(), uid),
            Err(SecretError::NotAFile(_))
        ));
        assert!(matches!(
            load_secret(&dir.path().join("missing"), uid),
            Err(SecretError::Open(..))
        ));
        // A FIFO: refused without waiting for a writer.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg("-m")
            .arg("600")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert!(matches!(
            load_secret(&fifo, uid),
            Err(SecretError::NotAFile(_))
        ));
    }

    /// A valid answer to `request` from a server with `secret`.
    pub(crate) fn answer(code: u8, request: &[u8], secret: &[u8]) -> Vec<u8> {
        let request = Packet::decode(request).unwrap();
        radius::encode_response(
            code,
            request.identifier,
            &request.authenticator,
            &[],
            secret,
        )
        .unwrap()
    }

    fn request(identifier: u8, authenticator: [u8; 16]) -> Vec<u8> {
        access_request(identifier, &authenticator, "alice", CODE, "host", SECRET).unwrap()
    }

    #[test]
    fn the_request_is_pap_with_the_message_authenticator_first() {
        let auth = [0x42u8; 16];
        let bytes = access_request(7, &auth, "alice", CODE, "ssh1.example.jp", SECRET).unwrap();
        let packet = Packet::decode(&bytes).unwrap();
        assert_eq!(packet.code, code::ACCESS_REQUEST);
        assert_eq!(packet.identifier, 7);
        assert_eq!(packet.authenticator, auth);
        assert_eq!(
            packet.attributes()[0].kind,
            attr::MESSAGE_AUTHENTICATOR,
            "the Message-Authenticator must come first"
        );
        assert_eq!(
            packet.message_authenticator(SECRET, None),
            radius::MessageAuthenticator::Valid
        );
        assert_eq!(packet.user_name(), Some(&b"alice"[..]));
        assert_eq!(
            packet.attribute(attr::NAS_IDENTIFIER),
            Some(&b"ssh1.example.jp"[..])
        );
        let hidden = packet.attribute(attr::USER_PASSWORD).unwrap();
        assert_eq!(hidden.len(), 16);
        assert!(!bytes.windows(CODE.len()).any(|w| w == CODE.as_bytes()));
        assert_eq!(
            packet.user_password(SECRET).unwrap().unwrap().as_slice(),
            CODE.as_bytes()
        );
        // A user name longer than an attribute holds cannot be sent.
        assert_eq!(
            access_request(7, &auth, &"u".repeat(254), CODE, "h", SECRET),
            Err(RadiusError::ValueTooLong)
        );
    }

    #[test]
    fn only_authenticated_answers_count() {
        let auth = [9u8; 16];
        let req = request(5, auth);
        let accept = answer(code::ACCESS_ACCEPT, &req, SECRET);
        let reject = answer(code::ACCESS_REJECT, &req, SECRET);
        assert_eq!(answer_to(&accept, 5, &auth, SECRET), Ok(Answer::Accept));
        assert_eq!(answer_to(&reject, 5, &auth, SECRET), Ok(Answer::Reject));
        assert_eq!(
            answer_to(&accept, 6, &auth, SECRET),
            Err(Ignored::OtherIdentifier)
        );
        assert_eq!(
            answer_to(&accept, 5, &[8u8; 16], SECRET),
            Err(Ignored::NotAuthenticated)
        );
        assert_eq!(
            answer_to(
                &answer(code::ACCESS_ACCEPT, &req, b"other"),
                5,
                &auth,
                SECRET
            ),
            Err(Ignored::NotAuthenticated)
        );
        // Without a Message-Authenticator, even with the right Response
        // Authenticator: ignored.
        let mut bare = vec![code::ACCESS_ACCEPT, 5, 0, 20];
        bare.extend_from_slice(&auth);
        bare.extend_from_slice(SECRET);
        let response_auth: [u8; 16] = md5::Md5::digest(&bare).into();
        bare.truncate(4);
        bare.extend_from_slice(&response_auth);
        assert!(Packet::decode(&bare).unwrap().is_response_to(&auth, SECRET));
        assert_eq!(
            answer_to(&bare, 5, &auth, SECRET),
            Err(Ignored::NotAuthenticated)
        );
        // Authenticated, but a challenge: not an answer here.
        assert_eq!(
            answer_to(
                &answer(code::ACCESS_CHALLENGE, &req, SECRET),
                5,
                &auth,
                SECRET
            ),
            Err(Ignored::UnexpectedCode(code::ACCESS_CHALLENGE))
        );
        assert_eq!(answer_to(b"", 5, &auth, SECRET), Err(Ignored::Malformed));
    }

    /// A fake otpd node on a loopback UDP port: receives one request and
    /// runs `act` with the socket, the sender and the request's bytes;
    /// `join` returns the request.
    pub(crate) struct FakeNode {
        pub(crate) address: SocketAddr,
        thread: JoinHandle<Vec<u8>>,
    }

    impl FakeNode {
        pub(crate) fn start(
            act: impl FnOnce(&UdpSocket, SocketAddr, &[u8]) + Send + 'static,
        ) -> FakeNode {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let address = socket.local_addr().unwrap();
            let thread = std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                let (len, from) = socket.recv_from(&mut buffer).unwrap();
                let request = buffer[..len].to_vec();
                act(&socket, from, &request);
                request
            });
            FakeNode { address, thread }
        }

        /// A node that answers `code` correctly.
        pub(crate) fn answering(code: u8) -> FakeNode {
            FakeNode::start(move |socket, from, request| {
                socket
                    .send_to(&answer(code, request, SECRET), from)
                    .unwrap();
            })
        }

        pub(crate) fn request(self) -> Vec<u8> {
            self.thread.join().unwrap()
        }
    }

    /// A UDP port that never answers, while the socket lives.
    pub(crate) fn silent() -> (UdpSocket, SocketAddr) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = socket.local_addr().unwrap();
        (socket, address)
    }

    fn remote(servers: Vec<SocketAddr>, ms: u64) -> Remote {
        Remote::new(
            servers,
            Zeroizing::new(SECRET.to_vec()),
            Duration::from_millis(ms),
        )
    }

    #[test]
    fn forged_and_stray_datagrams_are_ignored_until_the_answer() {
        let node = FakeNode::start(|socket, from, request| {
            let req = Packet::decode(request).unwrap();
            let mut other_id = answer(code::ACCESS_ACCEPT, request, SECRET);
            other_id[1] = other_id[1].wrapping_add(1);
            let mut tampered = answer(code::ACCESS_ACCEPT, request, SECRET);
            tampered[4] ^= 1;
            for datagram in [
                b"garbage".to_vec(),
                vec![0u8; 4097],
                answer(code::ACCESS_ACCEPT, request, b"wrong secret"),
                other_id,
                tampered,
                radius::encode_response(code::ACCESS_ACCEPT, req.identifier, &[0; 16], &[], SECRET)
                    .unwrap(),
                answer(code::ACCESS_REJECT, request, SECRET),
                answer(code::ACCESS_ACCEPT, request, SECRET),
            ] {
                socket.send_to(&datagram, from).unwrap();
            }
        });
        let lines = Lines::default();
        let answer = remote(vec![node.address], 5000).ask("alice", CODE, &lines, "user");
        assert_eq!(answer.unwrap(), Answer::Reject);
        let request = node.request();
        let request = Packet::decode(&request).unwrap();
        assert_eq!(request.user_name(), Some(&b"alice"[..]));
        assert!(request.attribute(attr::NAS_IDENTIFIER).is_some());
        assert!(lines.0.borrow().is_empty());
    }

    #[test]
    fn an_answer_from_another_address_is_not_taken() {
        // The node answers from a second socket of its own.
        let node = FakeNode::start(|_, from, request| {
            let other = UdpSocket::bind("127.0.0.1:0").unwrap();
            other
                .send_to(&answer(code::ACCESS_ACCEPT, request, SECRET), from)
                .unwrap();
        });
        let error = remote(vec![node.address], 300)
            .ask("alice", CODE, &Lines::default(), "user")
            .unwrap_err();
        assert!(
            matches!(&error, RemoteError::NoAnswer(f) if matches!(f[..], [(_, ServerError::Timeout { .. })])),
            "{error}"
        );
        node.request();
    }

    #[test]
    fn servers_are_tried_in_order_each_with_its_deadline() {
        let (_first, silent_address) = silent();
        let node = FakeNode::answering(code::ACCESS_ACCEPT);
        let lines = Lines::default();
        let started = Instant::now();
        let answer = remote(vec![silent_address, node.address], 200).ask(
            "alice",
            CODE,
            &lines,
            "user \"alice\"",
        );
        assert_eq!(answer.unwrap(), Answer::Accept);
        assert!(started.elapsed() >= Duration::from_millis(190));
        let lines = lines.0.borrow();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("Warning: RADIUS server ")
                && lines[0].contains(&silent_address.to_string())
                && lines[0].contains("user \"alice\"")
                && lines[0].contains("no answer within 200 ms"),
            "{lines:?}"
        );
        node.request();

        // Nobody answers: every server named with its reason.
        let (_a, first) = silent();
        let (_b, second) = silent();
        let started = Instant::now();
        let error = remote(vec![first, second], 150)
            .ask("alice", CODE, &Lines::default(), "user")
            .unwrap_err();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(290), "{took:?}");
        let message = error.to_string();
        assert_eq!(
            message,
            format!("{first}: no answer within 150 ms; {second}: no answer within 150 ms")
        );
    }

    #[test]
    fn a_closed_port_is_given_up_on_at_once() {
        let closed = silent().1;
        let started = Instant::now();
        let error = remote(vec![closed], 10_000)
            .ask("alice", CODE, &Lines::default(), "user")
            .unwrap_err();
        assert!(
            matches!(&error, RemoteError::NoAnswer(f) if matches!(f[..], [(_, ServerError::Refused)])),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_user_name_too_long_for_radius_asks_nobody() {
        let (_socket, address) = silent();
        let error = remote(vec![address], 10_000)
            .ask(&"u".repeat(254), CODE, &Lines::default(), "user")
            .unwrap_err();
        assert!(matches!(
            error,
            RemoteError::Request(RadiusError::ValueTooLong)
        ));
    }

    #[test]
    fn each_request_has_a_fresh_identifier_and_authenticator() {
        let mut seen = Vec::new();
        for _ in 0..4 {
            let node = FakeNode::answering(code::ACCESS_REJECT);
            let answer = remote(vec![node.address], 5000)
                .ask("alice", CODE, &Lines::default(), "user")
                .unwrap();
            assert_eq!(answer, Answer::Reject);
            let request = node.request();
            let packet = Packet::decode(&request).unwrap();
            seen.push(packet.authenticator);
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 4);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn arbitrary_bytes_are_never_an_answer(
            datagram in proptest::collection::vec(any::<u8>(), 0..4200),
            identifier in any::<u8>(),
            authenticator in any::<[u8; 16]>(),
        ) {
            prop_assert!(answer_to(&datagram, identifier, &authenticator, SECRET).is_err());
        }

        #[test]
        fn arbitrary_bytes_in_a_packet_frame_are_never_an_answer(
            code in prop::sample::select(vec![code::ACCESS_ACCEPT, code::ACCESS_REJECT]),
            identifier in any::<u8>(),
            authenticator in any::<[u8; 16]>(),
            attributes in proptest::collection::vec(
                (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
        ) {
            // Well formed, the right code and identifier, any attributes
            // (a Message-Authenticator among them or not): still forged.
            let mut datagram = vec![code, identifier, 0, 0];
            datagram.extend_from_slice(&authenticator);
            for (kind, value) in &attributes {
                datagram.push(*kind);
                datagram.push(u8::try_from(value.len() + 2).unwrap());
                datagram.extend_from_slice(value);
            }
            let len = u16::try_from(datagram.len()).unwrap().to_be_bytes();
            datagram[2..4].copy_from_slice(&len);
            prop_assert!(Packet::decode(&datagram).is_ok());
            prop_assert!(answer_to(&datagram, identifier, &authenticator, SECRET).is_err());
        }

        #[test]
        fn a_changed_answer_is_never_an_answer(
            accept in any::<bool>(),
            identifier in any::<u8>(),
            authenticator in any::<[u8; 16]>(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            extra in proptest::collection::vec(any::<u8>(), 0..4),
            cut in any::<usize>(),
        ) {
            let code = if accept { code::ACCESS_ACCEPT } else { code::ACCESS_REJECT };
            let req = request(identifier, authenticator);
            let original = answer(code, &req, SECRET);
            let mut changed = original.clone();
            for (at, value) in edits {
                let len = changed.len();
                changed[at % len] = value;
            }
            changed.extend_from_slice(&extra);
            changed.truncate(cut % (changed.len() + 1));
            let verdict = answer_to(&changed, identifier, &authenticator, SECRET);
            if changed == original {
                prop_assert_eq!(verdict, Ok(if accept { Answer::Accept } else { Answer::Reject }));
            } else {
                prop_assert!(verdict.is_err(), "{:?}", verdict);
            }
        }
    }

    proptest! {
        // Each case is a real exchange over loopback UDP.
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn over_udp_only_the_authenticated_answer_counts(
            junk in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..300), 0..6),
            tamper in proptest::option::of((any::<usize>(), 1u8..=255)),
            then_answer in any::<bool>(),
        ) {
            let node = FakeNode::start(move |socket, from, request| {
                for datagram in &junk {
                    socket.send_to(datagram, from).unwrap();
                }
                if let Some((at, flip)) = tamper {
                    let mut forged = answer(code::ACCESS_ACCEPT, request, SECRET);
                    let len = forged.len();
                    forged[at % len] ^= flip;
                    socket.send_to(&forged, from).unwrap();
                }
                if then_answer {
                    socket.send_to(&answer(code::ACCESS_ACCEPT, request, SECRET), from).unwrap();
                }
            });
            let result = remote(vec![node.address], if then_answer { 5000 } else { 150 })
                .ask("alice", CODE, &Lines::default(), "user");
            node.request();
            if then_answer {
                prop_assert_eq!(result.unwrap(), Answer::Accept);
            } else {
                prop_assert!(
                    matches!(&result, Err(RemoteError::NoAnswer(f)) if matches!(f[..], [(_, ServerError::Timeout { .. })])),
                    "{:?}", result
                );
            }
        }
    }
}
