//! The Unix socket that `pam_otp.so` and `otpctl test` ask: one
//! JSON object per line each way, at most 4 KiB a line (the protocol is
//! `otpproto::socket`). The peer's credentials (SO_PEERCRED) are checked
//! before anything is answered.

use std::fs;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use nix::unistd::{Gid, Group, Uid, User};
use otpcore::config::SocketConfig;
use otpcore::verify::Refusal;
use otpproto::socket::{
    check_verify, read_request, Answer, Fault, Request, Status, Text, Verify, MAX_LINE,
};
use otpstore::{Channel, VerifyOutcome};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::accept::accept_bounded;
use crate::daemon::{Daemon, Decision, Shutdown};
use crate::verifier::Verifier;

/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(30);
/// Connections served at once; further ones wait in the listen queue. PAM
/// hosts hold a connection for one login, so this is far above what logins
/// need, and it bounds the descriptors a local client can take.
const MAX_CONNECTIONS: usize = 256;

/// The socket, bound with its mode set.
pub struct SocketListener {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
}

impl SocketListener {
    /// Binds `[socket].path` with `[socket].mode`. A stale socket file is
    /// replaced; one that another process still answers on is an error.
    pub fn bind(config: &SocketConfig) -> Result<SocketListener, String> {
        Ok(SocketListener {
            listener: bind_unix(&config.path, config.mode)?,
            path: config.path.clone(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers connections until `shutdown`; then removes the socket file.
    pub async fn serve(
        self,
        daemon: Arc<Daemon>,
        verifier: Verifier,
        shutdown: Shutdown,
    ) -> std::io::Result<()> {
        let access = Arc::new(Access::from_daemon(&daemon));
        let serve = move |stream, shutdown| {
            let connection = Connection {
                daemon: Arc::clone(&daemon),
                verifier: verifier.clone(),
                access: Arc::clone(&access),
            };
            connection.serve(stream, shutdown)
        };
        let bound = (self.listener, self.path.as_path());
        serve_unix("socket", bound, MAX_CONNECTIONS, shutdown, serve).await
    }
}

/// Serves the bound Unix socket `listener` at `path` until `shutdown`,
/// for the PAM socket and the self-service socket: at most `max`
/// connections at once, each handed to `serve` with the stop signal; then
/// removes the socket file. `what` names the listener in the log.
pub(crate) async fn serve_unix<F, C>(
    what: &str,
    (listener, path): (std::os::unix::net::UnixListener, &Path),
    max: usize,
    shutdown: Shutdown,
    serve: F,
) -> std::io::Result<()>
where
    F: Fn(UnixStream, Shutdown) -> C,
    C: Future<Output = ()> + Send + 'static,
{
    let listener = UnixListener::from_std(listener)?;
    let slots = Arc::new(Semaphore::new(max));
    let stop = pin!(shutdown.clone().wait());
    accept_bounded(what, &listener, &slots, stop, |stream, slot| {
        let connection = serve(stream, shutdown.clone());
        tokio::spawn(async move {
            connection.await;
            drop(slot);
        });
    })
    .await;
    let _ = fs::remove_file(path);
    Ok(())
}

/// Binds a Unix socket at `path` and gives it `mode`, for the PAM socket
/// and the self-service socket. A stale socket file is replaced; one that
/// another process still answers on is an error, and so is a file that is
/// not a socket.
pub(crate) fn bind_unix(
    path: &Path,
    mode: u32,
) -> Result<std::os::unix::net::UnixListener, String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot listen on {}: {e}", path.display());
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(fail(&"a file that is not a socket is in the way"));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(fail(&"another otpd is serving it"));
        }
        fs::remove_file(path).map_err(|e| fail(&e))?;
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| fail(&e))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(|e| fail(&e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| fail(&e))?;
    listener.set_nonblocking(true).map_err(|e| fail(&e))?;
    Ok(listener)
}

/// Who may ask: `[socket].allowed_uids`, members of `allowed_groups`, and
/// the user otpd runs as.
struct Access {
    uids: Vec<u32>,
    groups: Vec<String>,
}

impl Access {
    fn from_daemon(daemon: &Daemon) -> Access {
        let socket = daemon.config.socket.as_ref();
        Access {
            uids: socket.map(|s| s.allowed_uids.clone()).unwrap_or_default(),
            groups: socket.map(|s| s.allowed_groups.clone()).unwrap_or_default(),
        }
    }

    /// Whether `uid` (with primary group `gid`) may verify. Group
    /// membership is looked up afresh for each connection.
    fn allows(&self, uid: u32, gid: u32) -> bool {
        // otpd's own user owns the store anyway; otpctl switches to it.
        if self.uids.contains(&uid) || uid == Uid::effective().as_raw() {
            return true;
        }
        if self.groups.is_empty() {
            return false;
        }
        let name = User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name);
        self.groups
            .iter()
            .any(|group| match Group::from_name(group) {
                Ok(Some(g)) => {
                    g.gid == Gid::from_raw(gid)
                        || name.as_ref().is_some_and(|n| g.mem.iter().any(|m| m == n))
                }
                _ => false,
            })
    }
}

/// Appends ` key=label` to `who`: a peer-supplied label kept short and in
/// one word of the peer field: a space (any visible one, U+3000 too) would
/// start a forged `key=value`. Control, format and separator characters
/// are left as they are: the log line and the audit trail escape them,
/// once, where the field is written.
fn push_label(who: &mut String, key: &str, text: &str) {
    who.push(' ');
    who.push_str(key);
    who.push('=');
    who.extend(text.chars().take(64).map(|c| {
        if c.is_whitespace() && !otpproto::logtext::is_hidden(c) {
            '?'
        } else {
            c
        }
    }));
}

struct Connection {
    daemon: Arc<Daemon>,
    verifier: Verifier,
    access: Arc<Access>,
}

impl Connection {
    async fn serve(self, mut stream: UnixStream, shutdown: Shutdown) {
        let (uid, gid, pid) = match stream.peer_cred() {
            Ok(c) => (c.uid(), c.gid(), c.pid().unwrap_or(0)),
            Err(e) => {
                log::error!("socket: cannot read the peer's credentials: {e}");
                return;
            }
        };
        let peer = format!("uid={uid} pid={pid}");
        // Borrowed halves: dropping them costs no shutdown(2) before the
        // close.
        let (reader, writer) = stream.split();
        let allowed = self.access.allows(uid, gid);
        if !allowed {
            self.daemon.log(&Decision {
                channel: Channel::Pam,
                peer: &peer,
                user: "-",
                ok: false,
                reason: "socket: permission denied",
                time: otpproto::clock::unix_now(),
            });
        }
        let mut reader = BufReader::new(reader);
        let mut writer = LineWriter::new(writer);
        // One buffer for every request of the connection, zeroed when it
        // closes: it holds the codes.
        let mut line = Zeroizing::new(Vec::with_capacity(256));
        let mut stop = pin!(shutdown.wait());
        loop {
            line.clear();
            let read = tokio::select! {
                r = tokio::time::timeout(IDLE, read_line(&mut reader, &mut line)) => r,
                () = &mut stop => return,
            };
            let served = match read {
                Err(_) | Ok(Ok(LineRead::Closed)) => return,
                Ok(Err(e)) => {
                    log::debug!("socket: read from {peer}: {e}");
                    return;
                }
                Ok(Ok(LineRead::TooLong)) => {
                    // The rest of the line cannot be told from the next
                    // request: answer and hang up.
                    let _ = writer.send(&Answer::from(Fault::TooLong)).await;
                    return;
                }
                // The request is read before the refusal, so the peer
                // gets the answer rather than a reset connection.
                Ok(Ok(LineRead::Line)) if !allowed => {
                    let _ = writer.send(&Answer::from(Fault::PermissionDenied)).await;
                    return;
                }
                Ok(Ok(LineRead::Line)) => self.answer(&line, &peer, &mut writer).await,
            };
            if served.is_err() {
                return;
            }
        }
    }

    /// Answers one request line.
    async fn answer<W: AsyncWriteExt + Unpin>(
        &self,
        line: &[u8],
        peer: &str,
        writer: &mut LineWriter<W>,
    ) -> std::io::Result<()> {
        match read_request(line) {
            Ok(Request::Status) => {
                let status = Status {
                    version: otpcore::VERSION.to_owned(),
                };
                writer.send(&status).await
            }
            Ok(Request::Verify(request)) => {
                let answer = self.verify(request, peer).await;
                writer.send(&answer).await
            }
            Err(fault) => writer.send(&Answer::from(fault)).await,
        }
    }

    async fn verify(&self, request: Verify<Text<'_>>, peer: &str) -> Answer {
        if let Err(fault) = check_verify(&request.user, &request.otp) {
            return fault.into();
        }
        let mut who = String::with_capacity(peer.len() + 96);
        who.push_str(peer);
        if let Some(service) = &request.service {
            push_label(&mut who, "service", service);
        }
        if let Some(rhost) = &request.rhost {
            push_label(&mut who, "rhost", rhost);
        }
        let otp = Zeroizing::new(request.otp.into_owned());
        match self
            .verifier
            .verify(request.user.into_owned(), otp, Channel::Pam, who)
            .await
        {
            VerifyOutcome::Accept | VerifyOutcome::Reauth => Answer::Accept,
            VerifyOutcome::Reject(Refusal::NoToken) if request.nullok => Answer::Ignore,
            VerifyOutcome::Reject(_) => Answer::Reject,
            VerifyOutcome::Error(_) => Fault::Internal.into(),
        }
    }
}

/// Writes answer lines to one connection through a buffer kept for the
/// connection: each line is one write, its newline included.
struct LineWriter<W> {
    writer: W,
    buffer: Vec<u8>,
}

impl<W: AsyncWriteExt + Unpin> LineWriter<W> {
    fn new(writer: W) -> LineWriter<W> {
        LineWriter {
            writer,
            buffer: Vec::with_capacity(128),
        }
    }

    async fn send(&mut self, answer: &impl Serialize) -> std::io::Result<()> {
        self.buffer.clear();
        encode_line(&mut self.buffer, answer)?;
        self.writer.write_all(&self.buffer).await
    }
}

pub(crate) enum LineRead {
    Line,
    TooLong,
    Closed,
}

/// Reads up to and including `\n`, never buffering more than [`MAX_LINE`]
/// (the self-service protocol's bound is the same).
pub(crate) async fn read_line<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<LineRead> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if line.is_empty() {
                LineRead::Closed
            } else {
                LineRead::Line
            });
        }
        let (taken, done) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        if line.len() + taken > MAX_LINE {
            return Ok(LineRead::TooLong);
        }
        line.extend_from_slice(&available[..taken]);
        reader.consume(taken);
        if done {
            return Ok(LineRead::Line);
        }
    }
}

pub(crate) async fn write_line<W: AsyncWriteExt + Unpin>(
    writer: &mut W,
    answer: &impl Serialize,
) -> std::io::Result<()> {
    let mut line = Vec::new();
    encode_line(&mut line, answer)?;
    writer.write_all(&line).await
}

/// Appends `answer` as one JSON line, its newline included, to `line`.
fn encode_line(line: &mut Vec<u8>, answer: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *line, answer).map_err(std::io::Error::other)?;
    line.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::exchange;
    use otpcore::config::Config;
    use otpstore::Store;
    use serde_json::{json, Value};

    pub(super) struct Fixture {
        _dir: tempfile::TempDir,
        pub(super) path: PathBuf,
        daemon: Arc<Daemon>,
        _stop: tokio::sync::watch::Sender<bool>,
    }

    /// A daemon serving the socket; `allowed_uids` replaces the default.
    pub(super) async fn serve(allowed_uids: Vec<u32>) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::embedded_defaults(dir.path());
        let socket = config.socket.as_mut().expect("socket section");
        socket.allowed_uids = allowed_uids;
        let path = socket.path.clone();
        let listener = SocketListener::bind(socket).expect("bind");
        let store = Store::open(dir.path()).expect("store");
        let daemon = Arc::new(Daemon::new(config, store, false).expect("daemon"));
        let verifier = Verifier::start(Arc::clone(&daemon)).expect("verifier");
        let (stop, shutdown) = Shutdown::new();
        tokio::spawn(listener.serve(Arc::clone(&daemon), verifier, shutdown));
        Fixture {
            _dir: dir,
            path,
            daemon,
            _stop: stop,
        }
    }

    pub(super) fn own_uid() -> u32 {
        Uid::current().as_raw()
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_for_a_free_slot() {
        let f = serve(vec![own_uid()]).await;
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(UnixStream::connect(&f.path).await.expect("connect"));
        }
        // Queued by the kernel, not served: no answer while every slot is
        // taken.
        let waiting = UnixStream::connect(&f.path).await.expect("connect");
        let (reader, mut writer) = waiting.into_split();
        writer
            .write_all(b"{\"op\":\"status\"}\n")
            .await
            .expect("write");
        let mut reader = BufReader::new(reader);
        let mut line = String::new();
        let early =
            tokio::time::timeout(Duration::from_millis(500), reader.read_line(&mut line)).await;
        assert!(early.is_err(), "answered past the cap: {line}");
        drop(idle.pop());
        tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
            .await
            .expect("answered once a slot is free")
            .expect("read");
        let answer: Value = serde_json::from_str(&line).expect("JSON answer");
        assert_eq!(answer["result"], "ok");
    }

    #[tokio::test]
    async fn status_and_malformed_lines_on_one_connection() {
        let f = serve(vec![own_uid()]).await;
        let answers = exchange(
            &f.path,
            b"{\"op\":\"status\"}\nnot json\n\xff\xfe\n{\"op\":\"verify\",\"user\":\"a\",\"otp\":123456}\n\
              {\"op\":\"verify\",\"user\":\"a\"}\n{\"op\":\"reboot\"}\n[1,2]\n",
            7,
        )
        .await;
        assert_eq!(
            answers[0],
            json!({"result": "ok", "version": otpcore::VERSION})
        );
        for answer in &answers[1..] {
            assert_eq!(answer["result"], "error", "{answer}");
        }
        assert!(
            !answers[3].to_string().contains("123456"),
            "the code is echoed"
        );
        assert!(answers[4]["message"]
            .as_str()
            .is_some_and(|m| m.contains("otp")));
    }

    #[tokio::test]
    async fn oversized_line_is_refused_and_the_daemon_goes_on() {
        let f = serve(vec![own_uid()]).await;
        let mut big = vec![b'a'; MAX_LINE + 10];
        big.push(b'\n');
        let answers = exchange(&f.path, &big, 2).await;
        assert_eq!(answers.len(), 1, "the connection closes after the refusal");
        assert!(answers[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("4096")));
        let answers = exchange(&f.path, b"{\"op\":\"status\"}\n", 1).await;
        assert_eq!(answers[0]["result"], "ok");
    }

    #[test]
    fn access_by_uid_group_and_own_user() {
        let me = own_uid();
        let stranger = me.wrapping_add(4242);
        let none = Access {
            uids: vec![],
            groups: vec![],
        };
        assert!(none.allows(me, 0), "otpd's own user may always ask");
        assert!(!none.allows(stranger, 4242));
        let listed = Access {
            uids: vec![stranger],
            groups: vec![],
        };
        assert!(listed.allows(stranger, 4242));
        // Group 0 (root) exists everywhere: a stranger whose primary group
        // it is gets in through allowed_groups.
        let root_name = Group::from_gid(Gid::from_raw(0))
            .ok()
            .flatten()
            .map(|g| g.name)
            .expect("group 0");
        let by_group = Access {
            uids: vec![],
            groups: vec![root_name],
        };
        assert!(by_group.allows(stranger, 0));
        assert!(!by_group.allows(stranger, 4242));
    }

    #[tokio::test]
    async fn verify_accepts_once_under_concurrency_and_nullok_ignores() {
        let f = serve(vec![own_uid()]).await;
        crate::testing::active_token(&f.daemon, "alice");
        let params = f.daemon.config.token.params();
        let code = params
            .code_at(crate::testing::SECRET, otpproto::clock::unix_now())
            .to_string();
        let request = format!(
            "{{\"op\":\"verify\",\"user\":\"alice\",\"otp\":\"{code}\",\"service\":\"sshd\"}}\n"
        );
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let path = f.path.clone();
            let request = request.clone();
            tasks.spawn(async move { exchange(&path, request.as_bytes(), 1).await.remove(0) });
        }
        let mut accepted = 0;
        while let Some(answer) = tasks.join_next().await {
            let answer = answer.expect("task");
            match answer["result"].as_str() {
                Some("accept") => accepted += 1,
                Some("reject") => {}
                other => panic!("unexpected {other:?}: {answer}"),
            }
        }
        assert_eq!(accepted, 1);
        let answers = exchange(
            &f.path,
            b"{\"op\":\"verify\",\"user\":\"bob\",\"otp\":\"123456\",\"nullok\":true}\n\
              {\"op\":\"verify\",\"user\":\"bob\",\"otp\":\"123456\"}\n",
            2,
        )
        .await;
        assert_eq!(
            answers,
            [json!({"result": "ignore"}), json!({"result": "reject"})]
        );
        let audit = f
            .daemon
            .store()
            .audit_entries(Some("alice"), 0)
            .expect("audit");
        assert_eq!(audit.iter().filter(|a| a.result == "ok").count(), 1);
        assert!(audit
            .iter()
            .all(|a| a.channel == "pam" && a.peer.contains("service=sshd")));
    }
}
