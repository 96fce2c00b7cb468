//! The self-service socket (`[self_service] socket`), on which a local user
//! sets up a token for themselves with `otpctl enrol`: one JSON object per
//! line each way, at most 4 KiB a line (the protocol is
//! `otpproto::selfservice`).
//!
//! Any local user may connect (the socket's mode is 0666); the user is the
//! one the peer runs as (SO_PEERCRED), mapped to its login name, never a
//! name the peer sends. `allowed_groups` narrows who may enrol. An enrol
//! request follows the input rules of `otpctl issue`; a user with an active
//! token must give one of its current codes or a recovery code, verified
//! by the [`Verifier`] like a login (so it counts toward the lockout and is
//! spent). The token is then issued with replace semantics (the active one
//! works until the new one is confirmed) and its setup mail sent; a mail
//! that cannot be sent withdraws the enrolment. Confirmation with the first
//! code is the setup page's ([`enrolment::confirm_first_code`]).
//!
//! Bounds: connections, the idle time of a connection, one line, and the
//! heavy work (the argon2id hash of the activation password and the mail)
//! to a few at once, so that a flood here cannot starve the PAM socket;
//! each user may enrol and confirm a limited number of times an hour.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::unistd::{getgrouplist, Group, Uid, User};
use otpcore::config::{Language, SelfServiceConfig};
use otpcore::enrol::State;
use otpcore::rules;
use otpproto::selfservice::{
    parse_request, Answer, Confirm, Confirmed as Activated, Enrol, EnrolStatus, ErrorCode, Fault,
    Issued, Request,
};
use otpstore::{Channel, NewEnrolment, RecoveryCode, VerifyOutcome};
use tokio::io::{AsyncWrite, BufReader};
use tokio::net::UnixStream;
use zeroize::Zeroizing;

use crate::daemon::{unix_now, Daemon, Decision, Shutdown};
use crate::enrolment::{self, with_store, Attempt, Confirmed, PasswordChecks};
use crate::socket::{bind_unix, read_line, serve_unix, write_line, LineRead};
use crate::verifier::Verifier;

/// Any local user may connect; who may enrol is decided per peer.
const SOCKET_MODE: u32 = 0o666;
/// A connection that sends no whole line for this long is closed, and an
/// answer the peer does not read within it is dropped.
const IDLE: Duration = Duration::from_secs(30);
/// Connections served at once; further ones wait in the listen queue.
const MAX_CONNECTIONS: usize = 64;
/// Enrolments (argon2id hash and setup mail) at work at once.
const HEAVY_AT_ONCE: usize = 2;
/// How long an enrolment waits for one of those before it is refused as
/// busy.
const HEAVY_WAIT: Duration = Duration::from_secs(10);
/// Enrol requests one user may make in [`QUOTA_WINDOW`].
const ENROLS_PER_WINDOW: usize = 10;
/// Confirm requests one user may make in [`QUOTA_WINDOW`].
const CONFIRMS_PER_WINDOW: usize = 30;
const QUOTA_WINDOW: Duration = Duration::from_secs(3600);

// One line reader serves both sockets.
const _: () = assert!(otpproto::selfservice::MAX_LINE == otpproto::socket::MAX_LINE);

/// The self-service socket, bound with mode 0666.
pub struct SelfServiceListener {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
}

impl SelfServiceListener {
    /// Binds `[self_service] socket`. A stale socket file is replaced; one
    /// that another process still answers on is an error.
    pub fn bind(config: &SelfServiceConfig) -> Result<SelfServiceListener, String> {
        Ok(SelfServiceListener {
            listener: bind_unix(&config.socket, SOCKET_MODE)?,
            path: config.socket.clone(),
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
        let service = Arc::new(Service::new(daemon, verifier));
        let serve = move |stream, shutdown| Arc::clone(&service).serve(stream, shutdown);
        let bound = (self.listener, self.path.as_path());
        serve_unix("self-service", bound, MAX_CONNECTIONS, shutdown, serve).await
    }
}

/// How many times each user did something within a window.
struct Quota {
    limit: usize,
    window: Duration,
    used: Mutex<HashMap<u32, VecDeque<Instant>>>,
}

impl Quota {
    fn new(limit: usize, window: Duration) -> Quota {
        Quota {
            limit,
            window,
            used: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one of `uid`'s uses at `now`; false when all are used.
    fn take(&self, uid: u32, now: Instant) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.window;
        let recent = |t: &Instant| now.saturating_duration_since(*t) < window;
        // Users whose uses have all aged out are forgotten.
        used.retain(|_, times| times.back().is_some_and(recent));
        let times = used.entry(uid).or_default();
        while times.front().is_some_and(|t| !recent(t)) {
            times.pop_front();
        }
        if times.len() >= self.limit {
            return false;
        }
        times.push_back(now);
        true
    }
}

/// The peer of a connection.
struct Peer {
    uid: u32,
    /// `uid=1000 pid=4242`, for the logs and the audit trail.
    label: String,
    /// The login name of `uid`, when it may use self-service; otherwise
    /// why not.
    user: Result<String, &'static str>,
}

/// What every connection shares.
struct Service {
    daemon: Arc<Daemon>,
    verifier: Verifier,
    groups: Vec<String>,
    heavy: PasswordChecks,
    enrols: Quota,
    confirms: Quota,
}

impl Service {
    fn new(daemon: Arc<Daemon>, verifier: Verifier) -> Service {
        let groups = daemon
            .config
            .self_service
            .as_ref()
            .map(|s| s.allowed_groups.clone())
            .unwrap_or_default();
        Service {
            daemon,
            verifier,
            groups,
            heavy: PasswordChecks::new(HEAVY_AT_ONCE, HEAVY_WAIT),
            enrols: Quota::new(ENROLS_PER_WINDOW, QUOTA_WINDOW),
            confirms: Quota::new(CONFIRMS_PER_WINDOW, QUOTA_WINDOW),
        }
    }

    async fn serve(self: Arc<Self>, stream: UnixStream, shutdown: Shutdown) {
        let (uid, pid) = match stream.peer_cred() {
            Ok(c) => (c.uid(), c.pid().unwrap_or(0)),
            Err(e) => {
                log::error!("self-service: cannot read the peer's credentials: {e}");
                return;
            }
        };
        // The user database may be slow (NSS over the network): off the
        // async workers.
        let groups = self.groups.clone();
        let user = tokio::task::spawn_blocking(move || login_name(uid, &groups))
            .await
            .unwrap_or(Err("your user could not be looked up"));
        let peer = Peer {
            uid,
            label: format!("uid={uid} pid={pid}"),
            user,
        };
        let (reader, mut writer) = stream.into_split();
        let mut reader = BufReader::new(reader);
        let mut line = Zeroizing::new(Vec::with_capacity(256));
        loop {
            line.clear();
            let read = tokio::select! {
                r = tokio::time::timeout(IDLE, read_line(&mut reader, &mut line)) => r,
                () = shutdown.clone().wait() => return,
            };
            let (answer, last) = match read {
                Err(_) | Ok(Ok(LineRead::Closed)) => return,
                Ok(Err(e)) => {
                    log::debug!("self-service: read from {}: {e}", peer.label);
                    return;
                }
                // The rest of the line cannot be told from the next request.
                Ok(Ok(LineRead::TooLong)) => (Answer::from(Fault::TooLong), true),
                // The request is read before the refusal, so the peer gets
                // the answer rather than a reset connection.
                Ok(Ok(LineRead::Line)) => match &peer.user {
                    Err(why) => (self.deny(&peer, why), true),
                    Ok(user) => (self.answer(&line, user, &peer).await, false),
                },
            };
            if send(&mut writer, &answer).await.is_err() || last {
                return;
            }
        }
    }

    fn deny(&self, peer: &Peer, why: &str) -> Answer {
        let reason = format!("self-service: permission denied: {why}");
        self.daemon.log(&decision("-", &peer.label, false, &reason));
        Answer::error(
            ErrorCode::PermissionDenied,
            format!("permission denied: {why}"),
        )
    }

    /// Records a decision about `user` in the audit trail and the logs.
    fn record(&self, user: &str, peer: &Peer, ok: bool, reason: &str) {
        self.daemon.record(&decision(user, &peer.label, ok, reason));
    }

    /// Answers one request line of `user`.
    async fn answer(&self, line: &[u8], user: &str, peer: &Peer) -> Answer {
        match parse_request(line) {
            Ok(Request::Enrol(request)) => self.enrol(request, user, peer).await,
            Ok(Request::Status {}) => self.status(user).await,
            Ok(Request::Confirm(request)) => self.confirm(request, user, peer).await,
            Err(fault) => {
                log::debug!(
                    "self-service: {} sent a malformed request: {fault}",
                    peer.label
                );
                fault.into()
            }
        }
    }

    async fn enrol(&self, request: Enrol, user: &str, peer: &Peer) -> Answer {
        let password = Zeroizing::new(request.activation_password);
        let otp = request.otp.map(Zeroizing::new);
        let email = request.email;
        let Some(default_language) = self.daemon.config.mail.as_ref().map(|m| m.language) else {
            log::error!("self-service: the configuration has no [mail] section");
            return internal();
        };
        let language = match request.language.as_deref() {
            None => default_language,
            Some(text) => match Language::parse(text) {
                Some(language) => language,
                None => {
                    return Answer::error(ErrorCode::BadInput, "language must be ja or en");
                }
            },
        };
        let rules =
            rules::check_email(&email).and_then(|()| rules::check_activation_password(&password));
        if let Err(broken) = rules {
            return Answer::error(ErrorCode::BadInput, broken.to_string());
        }
        if !self.enrols.take(peer.uid, Instant::now()) {
            let reason = "enrol refused: too many enrolments in the last hour";
            self.record(user, peer, false, reason);
            return Answer::error(
                ErrorCode::Busy,
                "too many enrolments in the last hour; try again later",
            );
        }
        let Some(slot) = self.heavy.take().await else {
            self.record(
                user,
                peer,
                false,
                "enrol refused: too many enrolments at once",
            );
            return Answer::error(ErrorCode::Busy, "otpd is busy; try again in a minute");
        };
        let owner = user.to_owned();
        let active = with_store(&self.daemon, move |_, store| store.active(&owner)).await;
        let active = match active {
            Some(Ok(active)) => active,
            Some(Err(e)) => {
                log::error!("self-service: cannot read the token of {user}: {e}");
                return internal();
            }
            None => return internal(),
        };
        if active.is_some() {
            if let Some(refused) = self.check_current_code(otp, user, peer).await {
                return refused;
            }
        }
        let daemon = Arc::clone(&self.daemon);
        let (user, label) = (user.to_owned(), peer.label.clone());
        let task = tokio::task::spawn_blocking(move || {
            // The slot stays taken until the hash and the mail are done,
            // even when the client gives up meanwhile.
            let _slot = slot;
            issue_and_mail(&daemon, &user, &label, &email, &password, language)
        });
        task.await.unwrap_or_else(|e| {
            log::error!("self-service: enrolment task failed: {e}");
            internal()
        })
    }

    /// A user with an active token proves to hold it: a current code or a
    /// recovery code, verified like a login. `None` when it was accepted.
    async fn check_current_code(
        &self,
        otp: Option<Zeroizing<String>>,
        user: &str,
        peer: &Peer,
    ) -> Option<Answer> {
        let Some(otp) = otp else {
            let reason = "enrol refused: an active token, and no current code or recovery code";
            self.record(user, peer, false, reason);
            return Some(Answer::error(
                ErrorCode::CodeRequired,
                "you have an active token: give one of its current codes or a recovery code \
                 (otpctl enrol --otp CODE)",
            ));
        };
        let outcome = self
            .verifier
            .verify(
                user.to_owned(),
                otp,
                Channel::SelfService,
                peer.label.clone(),
            )
            .await;
        match outcome {
            VerifyOutcome::Accept | VerifyOutcome::Reauth => None,
            VerifyOutcome::Reject(_) => {
                let reason = "enrol refused: the current code or recovery code was not accepted";
                self.record(user, peer, false, reason);
                Some(Answer::error(
                    ErrorCode::WrongCode,
                    "the code was not accepted (wrong, already used, or the token is locked); \
                     nothing was issued",
                ))
            }
            VerifyOutcome::Error(e) => {
                log::error!("self-service: cannot verify the code of {user}: {e}");
                Some(internal())
            }
        }
    }

    async fn status(&self, user: &str) -> Answer {
        let owner = user.to_owned();
        let latest = with_store(&self.daemon, move |_, store| store.latest(&owner)).await;
        let state = match latest {
            Some(Ok(None)) => "none",
            Some(Ok(Some(e))) if e.state == State::Issued && unix_now() >= e.expires_at => {
                "expired"
            }
            Some(Ok(Some(e))) => e.state.as_str(),
            Some(Err(e)) => {
                log::error!("self-service: cannot read the token of {user}: {e}");
                return internal();
            }
            None => return internal(),
        };
        Answer::Status(EnrolStatus {
            user: user.to_owned(),
            state: state.to_owned(),
        })
    }

    async fn confirm(&self, request: Confirm, user: &str, peer: &Peer) -> Answer {
        let otp = Zeroizing::new(request.otp);
        if !self.confirms.take(peer.uid, Instant::now()) {
            let reason = "confirmation refused: too many tries in the last hour";
            self.record(user, peer, false, reason);
            return Answer::error(
                ErrorCode::Busy,
                "too many confirmations in the last hour; try again later",
            );
        }
        let owner = user.to_owned();
        let pending = with_store(&self.daemon, move |_, store| store.pending(&owner)).await;
        let e = match pending {
            Some(Ok(Some(e))) if e.state == State::Activated => e,
            Some(Ok(Some(_))) => {
                return Answer::error(
                    ErrorCode::NotActivated,
                    "the setup has not been unlocked on the phone yet: open the setup mail \
                     and enter the activation password first",
                );
            }
            Some(Ok(None)) => {
                return Answer::error(
                    ErrorCode::NoEnrolment,
                    "you have no token waiting for its first code",
                );
            }
            Some(Err(e)) => {
                log::error!("self-service: cannot read the token of {user}: {e}");
                return internal();
            }
            None => return internal(),
        };
        let attempt = Attempt::new(
            Channel::SelfService,
            e.service_id,
            e.user_id.as_str().to_owned(),
            otp,
            peer.label.clone(),
        );
        match enrolment::confirm_first_code(&self.daemon, attempt).await {
            Confirmed::Active {
                period,
                adapted,
                recovery_codes,
            } => Answer::Confirmed(Activated {
                user: user.to_owned(),
                period,
                adapted,
                recovery_codes: recovery_codes
                    .iter()
                    .map(RecoveryCode::as_str)
                    .map(str::to_owned)
                    .collect(),
            }),
            Confirmed::Wrong => Answer::error(
                ErrorCode::WrongFirstCode,
                "the code does not match; check the phone's clock and type the code shown now",
            ),
            Confirmed::Gone(state) => Answer::error(
                ErrorCode::NoEnrolment,
                format!("your token changed meanwhile (it is {})", state.as_str()),
            ),
            Confirmed::Internal => internal(),
        }
    }
}

/// A decision about `user` on this channel, made now.
fn decision<'a>(user: &'a str, peer: &'a str, ok: bool, reason: &'a str) -> Decision<'a> {
    Decision {
        channel: Channel::SelfService,
        peer,
        user,
        ok,
        reason,
        time: unix_now(),
    }
}

fn internal() -> Answer {
    Answer::error(ErrorCode::Internal, "internal error; see the otpd log")
}

/// Writes one answer line, within [`IDLE`].
async fn send<W: AsyncWrite + Unpin>(writer: &mut W, answer: &Answer) -> std::io::Result<()> {
    tokio::time::timeout(IDLE, write_line(writer, answer))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// The login name of `uid`, when it may use self-service: it has a passwd
/// entry, a name a token can be kept under and, when `groups` is not
/// empty, one of them among its primary and supplementary groups.
fn login_name(uid: u32, groups: &[String]) -> Result<String, &'static str> {
    let user = match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user,
        Ok(None) => return Err("your uid has no user name"),
        Err(e) => {
            log::error!("self-service: cannot look up uid {uid}: {e}");
            return Err("your user could not be looked up");
        }
    };
    if !otpcore::import::valid_user(&user.name) {
        return Err("your login name cannot hold a token (1 to 64 of A-Z a-z 0-9 . _ - @)");
    }
    if groups.is_empty() {
        return Ok(user.name);
    }
    let name = std::ffi::CString::new(user.name.as_str())
        .map_err(|_| "your login name cannot hold a token")?;
    let member_of = getgrouplist(&name, user.gid).map_err(|e| {
        log::error!("self-service: cannot read the groups of uid {uid}: {e}");
        "your groups could not be looked up"
    })?;
    let allowed = groups.iter().any(|group| match Group::from_name(group) {
        Ok(Some(g)) => member_of.contains(&g.gid),
        _ => false,
    });
    if allowed {
        Ok(user.name)
    } else {
        Err("self-service is for members of [self_service] allowed_groups")
    }
}

/// Issues the token of `user` (replacing a pending one; an active one
/// works until the new one is confirmed) and sends its setup mail; a mail
/// that cannot be sent withdraws it. Blocks: the argon2id hash, the store
/// and the mail server.
fn issue_and_mail(
    daemon: &Daemon,
    user: &str,
    label: &str,
    email: &str,
    password: &str,
    language: Language,
) -> Answer {
    let config = &daemon.config;
    let (Some(mail), Some(http)) = (config.mail.as_ref(), config.http.as_ref()) else {
        log::error!("self-service: the configuration has no [mail] or [http] section");
        return internal();
    };

    let now = unix_now();
    let new = NewEnrolment {
        user,
        email,
        service_id: &config.service_id,
        params: config.token.params(),
        language: language.as_str(),
        activation_password: password,
        expires_at: config.policy.link_expires_at(now),
        replace: true,
    };
    let e = match daemon.store().issue(&new, now) {
        Ok(e) => e,
        Err(err) => {
            log::error!("self-service: cannot issue a token to {user}: {err}");
            daemon.record_undecided(&decision(user, label, false, "enrol failed: store error"));
            return internal();
        }
    };
    let setup_url = otpmail::setup_url(&http.public_url, &e.service_id, &e.user_id);
    let setup = otpmail::SetupMail {
        to: &e.email,
        user,
        service_id: &e.service_id,
        user_id: &e.user_id,
        setup_url: &setup_url,
        expires_at: e.expires_at,
    };
    if let Err(err) = otpmail::send_setup_mail(mail, language, &setup) {
        if let Err(store) = daemon.store().withdraw(e.id) {
            log::error!("self-service: cannot withdraw the unsent enrolment of {user}: {store}");
        }
        log::warn!("self-service: setup mail for {user} not sent: {err}");
        let reason = "setup mail not sent; enrolment withdrawn";
        daemon.record_undecided(&decision(user, label, false, reason));
        return Answer::error(
            ErrorCode::MailFailed,
            format!("cannot send the setup mail: {err}\nnothing was issued"),
        );
    }
    let reason = format!("issued user ID {}; setup mail sent", e.user_id.as_str());
    daemon.record(&decision(user, label, true, &reason));
    Answer::Issued(Issued {
        user: user.to_owned(),
        email: e.email,
        service_id: e.service_id,
        user_id: e.user_id.as_str().to_owned(),
        setup_url,
        expires_at: e.expires_at,
    })
}

#[cfg(test)]
mod tests;
