//! The directory password: whether a user's password is right, by an LDAP
//! simple bind as the user's entry (RFC 4513), the first factor of RADIUS
//! requests that carry the password and the code together.
//!
//! [`Directory::open`] reads `[ldap]` once: it checks the rules of the
//! section, loads the CA certificates and the search account's password
//! file, so that a broken setup fails at start. [`Directory::check_password`]
//! then takes a connection (TLS from the first byte for `ldaps://`,
//! StartTLS before anything else for `ldap://` with `starttls`), finds the
//! user's DN (the `bind_dn` template, or one search), and binds as it with
//! the password.
//!
//! At most [`CONNECTIONS`] checks use the directory at once, each on a
//! connection of its own; the others wait for one of them to end, within
//! their `timeout_ms`. Connections are kept for the next check once a check
//! on them ended cleanly: the user's bind answered
//! success or `invalidCredentials`, or the search answered that no entry
//! matches. After any other answer, an error or a timeout the connection is
//! closed. A reused connection is still bound as the last user: in
//! search-then-bind mode it binds again as the search account, or
//! anonymously, before it searches. When a reused connection fails (the
//! server closed it while idle, or restarted), the check runs once more on a
//! new connection, within the same `timeout_ms`.
//!
//! - An empty password, one holding NUL, one that is not UTF-8 and an empty
//!   user name are [`Verdict::Wrong`] before any traffic: a simple bind with
//!   an empty password is an anonymous bind that many servers accept.
//! - `{user}` is escaped for a DN or a filter ([`escape`]), so no user name
//!   can change the DN or the filter.
//! - A search that finds no entry is `Wrong`; one that finds more than one
//!   is `Wrong` too, logged as ambiguous, since binding as any of them
//!   could let one user in with another's password.
//! - The bind's result `invalidCredentials` (49), `noSuchObject` (32),
//!   `inappropriateAuthentication` (48), `insufficientAccessRights` (50)
//!   and `unwillingToPerform` (53) are the directory refusing this user:
//!   `Wrong`. Every other result is an [`LdapError`]: the directory could
//!   not say, and a caller must not take that as either answer.
//! - The whole check, from connecting to the last answer, ends within
//!   `timeout_ms`; when it does not, the connection is closed and the
//!   error says which step was waiting.
//! - No password (the user's or the search account's) appears in a log
//!   line, an error or a `Debug` output.

pub mod escape;
mod secret;
mod tls;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ldap3::asn1::{StructureTag, PL};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchOptions, StdStream};
use otpcore::config::{LdapBind, LdapConfig, LdapRuleError, LdapTransport, LdapUrl};
use otpproto::logtext;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

/// What the directory said of a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The directory took the password for the user's entry.
    Right,
    /// The password, or the user, is wrong (see the crate's description).
    Wrong,
}

/// A step of one check, for the errors that say where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    /// Waiting for one of the [`CONNECTIONS`] other checks to end.
    Waiting,
    Connecting,
    /// The TLS handshake, after StartTLS for `ldap://`.
    Tls,
    /// The bind as `search_bind_dn`.
    SearchAccountBind,
    /// The anonymous bind that undoes a previous user's bind on a reused
    /// connection, before an anonymous search.
    AnonymousBind,
    Searching,
    /// The bind as the user.
    UserBind,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Waiting => "waiting for a free connection",
            Step::Connecting => "connecting",
            Step::Tls => "setting up TLS",
            Step::SearchAccountBind => "binding as search_bind_dn",
            Step::AnonymousBind => "binding anonymously",
            Step::Searching => "searching for the user",
            Step::UserBind => "binding as the user",
        })
    }
}

/// The directory's answer to one operation, when it was not a success: its
/// result code and diagnostic text (escaped for a log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: u32,
    pub text: String,
}

impl Answer {
    fn of(result: &ldap3::LdapResult) -> Answer {
        Answer {
            code: result.rc,
            text: logtext::escape(&result.text, logtext::MAX_CHARS),
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "result code {}", self.code)?;
        if !self.text.is_empty() {
            write!(f, " ({})", self.text)?;
        }
        Ok(())
    }
}

/// Why a password could not be checked. Never a wrong password, and never
/// a success: the caller answers neither Right nor Wrong. No variant holds
/// a password.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// `[ldap]` breaks a rule (a configuration built without
    /// [`otpcore::config::Config::parse`]).
    #[error("[ldap]: {0}")]
    Rule(#[from] LdapRuleError),
    #[error("ldap.search_filter: not a valid LDAP filter")]
    Filter,
    #[error("ldap.ca_file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("ldap.search_password_file {path}: {reason}")]
    PasswordFile { path: PathBuf, reason: String },
    /// Nothing took the connection: refused, unreachable, a name that does
    /// not resolve.
    #[error("{url}: cannot connect: {reason}")]
    Unreachable { url: String, reason: String },
    /// The TLS handshake failed: a certificate that does not chain to the
    /// CAs or names another host, or a server that does not speak TLS.
    #[error("{url}: TLS failed: {reason}")]
    Tls { url: String, reason: String },
    /// The server answered StartTLS with an error.
    #[error("{url}: StartTLS refused: {answer}")]
    StartTlsRefused { url: String, answer: Answer },
    /// The check did not end within `timeout_ms`.
    #[error("{url}: no answer within {timeout_ms} ms while {step}")]
    Timeout {
        url: String,
        timeout_ms: u64,
        step: Step,
    },
    /// The directory refused `search_bind_dn` and its password.
    #[error("{url}: the directory refused search_bind_dn {dn}: {answer}")]
    SearchAccountRefused {
        url: String,
        dn: String,
        answer: Answer,
    },
    /// An answer that says neither right nor wrong (busy, unavailable, a
    /// search base that does not exist, ...).
    #[error("{url}: {step} failed: {answer}")]
    Directory {
        url: String,
        step: Step,
        answer: Answer,
    },
    /// The connection broke or the server's answer made no sense.
    #[error("{url}: {step}: {reason}")]
    Protocol {
        url: String,
        step: Step,
        reason: String,
    },
}

/// How the user's DN is found, with what [`Directory::open`] read.
enum Find {
    Template(String),
    Search {
        base: String,
        filter: String,
        account: Option<(String, Zeroizing<String>)>,
    },
}

/// `[ldap]`, checked and loaded: the CAs and the search account's
/// password are read once, when it opens.
pub struct Directory {
    url: LdapUrl,
    transport: LdapTransport,
    tls: Option<Arc<rustls::ClientConfig>>,
    find: Find,
    timeout_ms: u64,
    /// Idle connections that ended their last check cleanly, newest last.
    idle: Mutex<Vec<Connection>>,
    /// One permit per check at work: [`CONNECTIONS`].
    slots: Semaphore,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let find = match &self.find {
            Find::Template(dn) => format!("bind_dn {dn}"),
            Find::Search {
                base,
                filter,
                account,
            } => format!(
                "search {filter} under {base} as {}",
                account.as_ref().map_or("anonymous", |(dn, _)| dn.as_str())
            ),
        };
        f.debug_struct("Directory")
            .field("url", &self.url.to_string())
            .field("transport", &self.transport)
            .field("find", &find)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

/// The result codes of a bind that mean the directory refused this user
/// and password; see the crate's description.
const REFUSED_USER: [u32; 5] = [49, 32, 48, 50, 53];
/// `invalidCredentials`: a wrong password, after which the connection is
/// still fit for another check.
const INVALID_CREDENTIALS: u32 = 49;
/// `sizeLimitExceeded`: a search that found more entries than it asked for.
const SIZE_LIMIT_EXCEEDED: u32 = 4;

/// Which [`Step`] a check is at, readable after its future is dropped.
struct Progress(AtomicU8);

impl Progress {
    fn set(&self, step: Step) {
        self.0.store(step as u8, Ordering::Relaxed);
    }

    fn get(&self) -> Step {
        [
            Step::Waiting,
            Step::Connecting,
            Step::Tls,
            Step::SearchAccountBind,
            Step::AnonymousBind,
            Step::Searching,
            Step::UserBind,
        ]
        .into_iter()
        .find(|s| *s as u8 == self.0.load(Ordering::Relaxed))
        .unwrap_or(Step::Waiting)
    }
}

/// How many checks a [`Directory`] runs at once, hence how many
/// connections it opens to the directory at most (and keeps for later
/// checks). More checks wait for one of them rather than open more:
/// a connection's TCP and TLS set-up costs the directory and otpd far more
/// than the bind that follows.
pub const CONNECTIONS: usize = 16;

/// The task that drives one connection; aborted, and the connection
/// closed, when this is dropped.
struct Driver(tokio::task::JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection to the directory, TLS set up, and the task driving it.
struct Connection {
    ldap: ldap3::Ldap,
    _driver: Driver,
}

/// The outcome of one check on one connection.
struct Outcome {
    verdict: Result<Verdict, LdapError>,
    /// Whether the last answer was one after which the connection may serve
    /// another check.
    clean: bool,
}

impl Outcome {
    fn failed(e: LdapError) -> Outcome {
        Outcome {
            verdict: Err(e),
            clean: false,
        }
    }
}

/// Opens `config` ([`Directory::open`]) and checks `password` for `user`
/// ([`Directory::check_password`]): the files are read on each call.
pub async fn check_password(
    config: &LdapConfig,
    user: &str,
    password: &[u8],
) -> Result<Verdict, LdapError> {
    Directory::open(config)?
        .check_password(user, password)
        .await
}

impl Directory {
    /// Checks `config`'s rules, reads its CA file (or the system's CAs)
    /// for TLS and the search account's password file, and checks the
    /// search filter's syntax. Nothing goes over the network.
    pub fn open(config: &LdapConfig) -> Result<Directory, LdapError> {
        let transport = config.transport()?;
        let tls = match transport {
            LdapTransport::Plain => None,
            LdapTransport::Ldaps | LdapTransport::StartTls => {
                Some(tls::client_config(config.ca_file.as_deref())?)
            }
        };
        let find = match config.bind()? {
            LdapBind::Template { dn } => Find::Template(dn.to_owned()),
            LdapBind::Search {
                base,
                filter,
                account,
            } => {
                ldap3::parse_filter(escape::fill(filter, "x")).map_err(|()| LdapError::Filter)?;
                let account = match account {
                    Some((dn, file)) => Some((
                        dn.to_owned(),
                        secret::read_password(file).map_err(|reason| LdapError::PasswordFile {
                            path: file.to_owned(),
                            reason,
                        })?,
                    )),
                    None => None,
                };
                Find::Search {
                    base: base.to_owned(),
                    filter: filter.to_owned(),
                    account,
                }
            }
        };
        Ok(Directory {
            url: config.url.clone(),
            transport,
            tls,
            find,
            timeout_ms: config.timeout_ms,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(CONNECTIONS),
        })
    }

    /// Whether `password` is `user`'s directory password; see the crate's
    /// description. Runs on a tokio runtime; ends within `timeout_ms`.
    pub async fn check_password(&self, user: &str, password: &[u8]) -> Result<Verdict, LdapError> {
        let password = match std::str::from_utf8(password) {
            Ok(p) if !p.is_empty() && !p.contains('\0') && !user.is_empty() => p,
            _ => return Ok(Verdict::Wrong),
        };
        let progress = Progress(AtomicU8::new(Step::Waiting as u8));
        let deadline = Duration::from_millis(self.timeout_ms);
        match tokio::time::timeout(deadline, self.exchange(user, password, &progress)).await {
            Ok(verdict) => verdict,
            Err(_) => Err(LdapError::Timeout {
                url: self.url.to_string(),
                timeout_ms: self.timeout_ms,
                step: progress.get(),
            }),
        }
    }

    /// Runs the check on an idle connection, and on a new one when there
    /// is none or the idle one fails; keeps the connection when the check
    /// ended cleanly.
    async fn exchange(
        &self,
        user: &str,
        password: &str,
        progress: &Progress,
    ) -> Result<Verdict, LdapError> {
        // The semaphore is never closed; were it, the check could not say.
        let _slot = self.slots.acquire().await.map_err(|_| LdapError::Timeout {
            url: self.url.to_string(),
            timeout_ms: self.timeout_ms,
            step: Step::Waiting,
        })?;
        progress.set(Step::Connecting);
        if let Some(mut connection) = self.take_idle() {
            let outcome = self
                .bind_user(&mut connection.ldap, user, password, progress, true)
                .await;
            match outcome.verdict {
                Ok(verdict) if outcome.clean => {
                    self.keep(connection);
                    return Ok(verdict);
                }
                Ok(verdict) => {
                    Self::close(connection).await;
                    return Ok(verdict);
                }
                Err(e) => log::debug!("ldap: a reused connection failed, trying a new one: {e}"),
            }
        }
        progress.set(Step::Connecting);
        let mut connection = self.connect(progress).await?;
        let outcome = self
            .bind_user(&mut connection.ldap, user, password, progress, false)
            .await;
        if outcome.clean {
            self.keep(connection);
        } else {
            Self::close(connection).await;
        }
        outcome.verdict
    }

    /// The newest idle connection the server has not closed; the closed
    /// ones are dropped.
    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut connection) = idle.pop() {
            if !connection.ldap.is_closed() {
                return Some(connection);
            }
        }
        None
    }

    /// Keeps `connection` for a later check, unless [`CONNECTIONS`] are
    /// kept already.
    fn keep(&self, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < CONNECTIONS {
            idle.push(connection);
        }
    }

    /// Says goodbye on `connection`, which closes when dropped.
    async fn close(mut connection: Connection) {
        // The verdict stands whatever the goodbye does.
        let _ = connection.ldap.unbind().await;
    }

    /// Connects and sets up TLS.
    async fn connect(&self, progress: &Progress) -> Result<Connection, LdapError> {
        let url = self.url.to_string();
        // Without TCP_NODELAY, the handshake's and the bind's small
        // writes wait for the server's delayed acknowledgement (some 40 ms
        // each on Linux).
        let tcp = TcpStream::connect((self.url.host.as_str(), self.url.port))
            .await
            .and_then(|s| s.set_nodelay(true).map(|()| s))
            .and_then(|s| s.into_std())
            .map_err(|e| LdapError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let mut settings = LdapConnSettings::new().set_std_stream(StdStream::Tcp(tcp));
        if let Some(tls) = &self.tls {
            progress.set(Step::Tls);
            settings = settings
                .set_config(Arc::clone(tls))
                .set_starttls(self.transport == LdapTransport::StartTls);
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &url)
            .await
            .map_err(|e| self.connect_error(e))?;
        let driver = Driver(tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                log::debug!("ldap: the connection ended: {e}");
            }
        }));
        Ok(Connection {
            ldap,
            _driver: driver,
        })
    }

    /// What a failed connection set-up means, by the step it failed at.
    fn connect_error(&self, e: ldap3::LdapError) -> LdapError {
        let url = self.url.to_string();
        match e {
            ldap3::LdapError::LdapResult { result } => LdapError::StartTlsRefused {
                url,
                answer: Answer::of(&result),
            },
            e if self.tls.is_some() => LdapError::Tls {
                url,
                reason: e.to_string(),
            },
            e => LdapError::Protocol {
                url,
                step: Step::Connecting,
                reason: e.to_string(),
            },
        }
    }

    fn protocol(&self, step: Step) -> impl Fn(ldap3::LdapError) -> LdapError + '_ {
        move |e| LdapError::Protocol {
            url: self.url.to_string(),
            step,
            reason: e.to_string(),
        }
    }

    /// Finds the user's DN and binds as it with `password`. On a `reused`
    /// connection, which is still bound as the last user, an anonymous
    /// search first binds anonymously.
    async fn bind_user(
        &self,
        ldap: &mut ldap3::Ldap,
        user: &str,
        password: &str,
        progress: &Progress,
        reused: bool,
    ) -> Outcome {
        let dn = match &self.find {
            Find::Template(template) => escape::fill(template, &escape::dn_value(user)),
            Find::Search {
                base,
                filter,
                account,
            } => {
                let rebind = match account {
                    Some((dn, account_password)) => Some((
                        Step::SearchAccountBind,
                        dn.as_str(),
                        account_password.as_str(),
                    )),
                    None if reused => Some((Step::AnonymousBind, "", "")),
                    None => None,
                };
                if let Some((step, dn, account_password)) = rebind {
                    progress.set(step);
                    let result = match ldap.simple_bind(dn, account_password).await {
                        Ok(result) => result,
                        Err(e) => return Outcome::failed(self.protocol(step)(e)),
                    };
                    if result.rc != 0 {
                        return Outcome::failed(match step {
                            Step::SearchAccountBind => LdapError::SearchAccountRefused {
                                url: self.url.to_string(),
                                dn: dn.to_owned(),
                                answer: Answer::of(&result),
                            },
                            _ => LdapError::Directory {
                                url: self.url.to_string(),
                                step,
                                answer: Answer::of(&result),
                            },
                        });
                    }
                }
                progress.set(Step::Searching);
                match self.search(ldap, base, filter, user).await {
                    Ok(Found::One(dn)) => dn,
                    Ok(Found::None) => {
                        return Outcome {
                            verdict: Ok(Verdict::Wrong),
                            clean: true,
                        }
                    }
                    Ok(Found::Several) => {
                        return Outcome {
                            verdict: Ok(Verdict::Wrong),
                            clean: false,
                        }
                    }
                    Err(e) => return Outcome::failed(e),
                }
            }
        };
        progress.set(Step::UserBind);
        let result = match ldap.simple_bind(&dn, password).await {
            Ok(result) => result,
            Err(e) => return Outcome::failed(self.protocol(Step::UserBind)(e)),
        };
        let verdict = match result.rc {
            0 => Ok(Verdict::Right),
            code if REFUSED_USER.contains(&code) => Ok(Verdict::Wrong),
            _ => Err(LdapError::Directory {
                url: self.url.to_string(),
                step: Step::UserBind,
                answer: Answer::of(&result),
            }),
        };
        Outcome {
            verdict,
            clean: result.rc == 0 || result.rc == INVALID_CREDENTIALS,
        }
    }

    /// The one entry under `base` that `filter` finds for `user`; none or
    /// several are logged.
    async fn search(
        &self,
        ldap: &mut ldap3::Ldap,
        base: &str,
        filter: &str,
        user: &str,
    ) -> Result<Found, LdapError> {
        let filter = escape::fill(filter, &escape::filter_value(user));
        let ldap3::SearchResult(entries, result) = ldap
            .with_search_options(SearchOptions::new().sizelimit(2))
            .search(base, Scope::Subtree, &filter, vec!["1.1"])
            .await
            .map_err(self.protocol(Step::Searching))?;
        if result.rc != 0 && result.rc != SIZE_LIMIT_EXCEEDED {
            return Err(LdapError::Directory {
                url: self.url.to_string(),
                step: Step::Searching,
                answer: Answer::of(&result),
            });
        }
        let shown = logtext::escape(user, logtext::MAX_CHARS);
        match entries.as_slice() {
            [] => {
                log::info!("ldap: no entry for user {shown} under {base}");
                Ok(Found::None)
            }
            [entry] if result.rc == 0 => {
                entry_dn(&entry.0)
                    .map(Found::One)
                    .ok_or_else(|| LdapError::Protocol {
                        url: self.url.to_string(),
                        step: Step::Searching,
                        reason: "an entry without a DN".to_owned(),
                    })
            }
            _ => {
                log::warn!(
                    "ldap: the search for user {shown} under {base} found more than one entry; \
                     taken as a wrong password: make search_filter find one entry per user"
                );
                Ok(Found::Several)
            }
        }
    }
}

/// What a search for the user found.
enum Found {
    One(String),
    None,
    Several,
}

/// The DN of a SearchResultEntry (`[APPLICATION 4] { objectName, ... }`).
fn entry_dn(entry: &StructureTag) -> Option<String> {
    match &entry.payload {
        PL::C(parts) if entry.id == 4 => match &parts.first()?.payload {
            PL::P(name) => String::from_utf8(name.clone()).ok(),
            PL::C(_) => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpcore::config::Config;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// `[ldap]` with `lines`, as `Config::parse` reads it.
    fn ldap(lines: &[String]) -> LdapConfig {
        let text = format!(
            "service_id = \"X\"\nissuer = \"I\"\nstate_dir = \"/tmp/x\"\n[ldap]\n{}\n",
            lines.join("\n")
        );
        Config::parse(&text, Path::new("otpd.toml"), false)
            .expect("config")
            .ldap
            .expect("[ldap]")
    }

    fn private_file(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// Checks beyond [`CONNECTIONS`] wait for a free connection instead
    /// of opening more: against a server that accepts and never answers,
    /// no more than that many connections reach it before the deadline.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_beyond_the_connections_wait_for_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let port = listener.local_addr().expect("address").port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        let config = ldap(&[
            format!("url = \"ldap://127.0.0.1:{port}\""),
            "bind_dn = \"uid={user},dc=example\"".to_owned(),
            "timeout_ms = 500".to_owned(),
        ]);
        let directory = Arc::new(Directory::open(&config).expect("open"));
        let checks: Vec<_> = (0..CONNECTIONS + 8)
            .map(|_| {
                let directory = Arc::clone(&directory);
                tokio::spawn(async move { directory.check_password("alice", b"pw").await })
            })
            .collect();
        // Halfway to the deadline every check has started: the first ones
        // hold every connection, the others wait.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), CONNECTIONS);
        for check in checks {
            let result = check.await.expect("check");
            assert!(
                matches!(result, Err(LdapError::Timeout { .. })),
                "a silent server gives a timeout, not {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn unusable_passwords_and_names_are_wrong_before_any_traffic() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let config = ldap(&[
            format!("url = \"ldap://127.0.0.1:{port}\""),
            "bind_dn = \"uid={user},dc=example\"".to_owned(),
        ]);
        for (user, password) in [
            ("alice", &b""[..]),
            ("alice", b"pass\0word"),
            ("alice", b"\0"),
            ("alice", b"caf\xe9"),
            ("", b"password"),
        ] {
            assert_eq!(
                check_password(&config, user, password)
                    .await
                    .expect("no error"),
                Verdict::Wrong,
                "{user:?}"
            );
        }
        let accepted = listener.accept();
        assert!(
            matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a connection was made: {accepted:?}"
        );
    }

    #[test]
    fn open_reads_the_files_and_refuses_broken_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.pem");
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a certificate");
        std::fs::write(&ca, issued.cert.pem()).expect("write ca.pem");
        let password = dir.path().join("search.password");
        private_file(&password, "xq7-account-secret\n", 0o600);
        let search = |ca_file: &Path, password_file: &Path, filter: &str| {
            ldap(&[
                "url = \"ldaps://localhost:6360\"".to_owned(),
                format!("ca_file = \"{}\"", ca_file.display()),
                "search_base = \"dc=example\"".to_owned(),
                format!("search_filter = \"{filter}\""),
                "search_bind_dn = \"cn=reader,dc=example\"".to_owned(),
                format!("search_password_file = \"{}\"", password_file.display()),
            ])
        };
        let directory = Directory::open(&search(&ca, &password, "(uid={user})")).expect("opens");
        let shown = format!("{directory:?}");
        assert!(shown.contains("cn=reader,dc=example"), "{shown}");
        assert!(!shown.contains("xq7"), "{shown}");

        let broken =
            Directory::open(&search(&ca, &password, "((uid={user})")).expect_err("a broken filter");
        assert!(matches!(broken, LdapError::Filter), "{broken}");

        let missing = Directory::open(&search(
            &dir.path().join("none.pem"),
            &password,
            "(uid={user})",
        ))
        .expect_err("no CA file");
        assert!(missing.to_string().contains("ldap.ca_file"), "{missing}");
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "no certificate here\n").expect("write");
        let empty = Directory::open(&search(&not_pem, &password, "(uid={user})"))
            .expect_err("no certificate");
        assert!(
            empty.to_string().contains("holds no certificate"),
            "{empty}"
        );

        private_file(&password, "xq7-account-secret\n", 0o644);
        let loose = Directory::open(&search(&ca, &password, "(uid={user})"))
            .expect_err("a readable password file");
        let message = loose.to_string();
        assert!(message.contains("ldap.search_password_file"), "{message}");
        assert!(message.contains("mode 0644"), "{message}");
        assert!(!message.contains("xq7"), "{message}");
    }

    #[test]
    fn a_configuration_built_by_hand_still_obeys_the_rules() {
        let mut config = ldap(&[
            "url = \"ldap://127.0.0.1\"".to_owned(),
            "bind_dn = \"uid={user},dc=example\"".to_owned(),
        ]);
        assert!(Directory::open(&config).is_ok());
        config.url.host = "ldap.example.com".to_owned();
        let message = Directory::open(&config)
            .expect_err("clear text")
            .to_string();
        assert!(message.contains("ldap.url"), "{message}");
        config.starttls = true;
        config.search_base = Some("dc=example".to_owned());
        let message = Directory::open(&config).expect_err("two ways").to_string();
        assert!(message.contains("ldap.bind_dn"), "{message}");
    }

    /// otpd shares one directory between tasks and spawns the checks.
    #[test]
    fn a_directory_and_its_checks_go_between_threads() {
        fn shared<T: Send + Sync>(_: &T) {}
        fn spawnable<T: Send>(_: T) {}
        let directory = Directory::open(&ldap(&[
            "url = \"ldap://127.0.0.1\"".to_owned(),
            "bind_dn = \"uid={user},dc=example\"".to_owned(),
        ]))
        .expect("opens");
        shared(&directory);
        spawnable(directory.check_password("alice", b"x"));
    }

    #[test]
    fn entry_dns_are_read_without_trusting_the_shape() {
        let entry = |id, payload| StructureTag {
            class: ldap3::asn1::TagClass::Application,
            id,
            payload,
        };
        let octets = |bytes: &[u8]| StructureTag {
            class: ldap3::asn1::TagClass::Universal,
            id: 4,
            payload: PL::P(bytes.to_vec()),
        };
        let dn = b"uid=alice,dc=example";
        assert_eq!(
            entry_dn(&entry(4, PL::C(vec![octets(dn)]))).as_deref(),
            Some("uid=alice,dc=example")
        );
        assert_eq!(entry_dn(&entry(5, PL::C(vec![octets(dn)]))), None);
        assert_eq!(entry_dn(&entry(4, PL::C(vec![]))), None);
        assert_eq!(entry_dn(&entry(4, PL::P(dn.to_vec()))), None);
        assert_eq!(entry_dn(&entry(4, PL::C(vec![octets(b"\xff")]))), None);
    }
}
