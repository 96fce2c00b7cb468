//! `otpd`: the daemon. It holds the store and serves the listeners that the
//! configuration names. Each listener takes an already-bound socket and one
//! shared [`Daemon`], so tests bind port 0 and the Unix socket and RADIUS
//! listeners can stand beside HTTP.

mod accept;
mod http;
#[cfg(test)]
mod http_proptests;
mod page;
mod radius;
mod socket;
mod verifier;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use otpcore::config::{Config, Synchronous};
use otpstore::{AuditEntry, AuditResult, Channel, Store};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

const DEFAULT_CONFIG: &str = "/etc/otpd/otpd.toml";
const DEFAULTS_STATE_DIR: &str = "otpd-state";

/// One-time password daemon: verifies login codes for pam_otp.so (Unix
/// socket) and VPN gateways (RADIUS), and serves the activation page and
/// its JSON API (HTTP/HTTPS).
#[derive(Debug, Parser)]
#[command(name = "otpd", version, about)]
struct Args {
    /// Configuration file [default: /etc/otpd/otpd.toml].
    #[arg(long, value_name = "PATH", conflicts_with = "defaults")]
    config: Option<PathBuf>,
    /// Use the embedded defaults instead of a configuration file: state and
    /// socket in ./otpd-state, mail to ./otpd-state/outbox, HTTP on
    /// 127.0.0.1:8080, no RADIUS.
    #[arg(long)]
    defaults: bool,
    /// Parse and check the configuration, then exit.
    #[arg(long)]
    check_config: bool,
}

/// What every listener shares: the configuration, the store and the
/// decision log.
pub struct Daemon {
    pub config: Config,
    store: Store,
    syslog: Option<Mutex<SyslogLogger>>,
}

type SyslogLogger = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

/// One decision about a user, as written to the audit table and the logs.
/// Never holds a code, secret or password.
pub struct Decision<'a> {
    pub channel: Channel,
    pub peer: &'a str,
    pub user: &'a str,
    pub ok: bool,
    pub reason: &'a str,
    pub time: u64,
}

impl Decision<'_> {
    /// The audit trail's result: `ok` or `fail`.
    fn result(&self) -> AuditResult {
        if self.ok {
            AuditResult::Ok
        } else {
            AuditResult::Fail
        }
    }
}

impl Daemon {
    /// A daemon over `store`; `syslog` connects to the local syslog for
    /// decisions (without it, decisions go to the log facade only).
    pub fn new(config: Config, store: Store, syslog: bool) -> Daemon {
        let syslog = if syslog { connect_syslog() } else { None };
        Daemon {
            config,
            store,
            syslog: syslog.map(Mutex::new),
        }
    }

    /// The store. Its calls block: make them from blocking threads only.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Records a decision: audit table, log facade and syslog (authpriv).
    pub fn record(&self, d: &Decision<'_>) {
        self.log(d);
        let entry = AuditEntry {
            time: d.time,
            user: d.user.to_owned(),
            channel: d.channel.as_str().to_owned(),
            peer: d.peer.to_owned(),
            result: d.result(),
            reason: d.reason.to_owned(),
        };
        if let Err(e) = self.store.audit(&entry) {
            log::error!("cannot write the audit table: {e}");
        }
    }

    /// Logs a decision to the log facade and syslog (authpriv) only, for
    /// decisions the store has audited itself.
    pub fn log(&self, d: &Decision<'_>) {
        let result = d.result();
        let line = format!(
            "{} {result} user={} peer={}: {}",
            d.channel.as_str(),
            printable(d.user),
            printable(d.peer),
            d.reason
        );
        // Under systemd stderr and syslog both reach the journal: a decision
        // goes to stderr at info level only when syslog is not there.
        let Some(syslog) = &self.syslog else {
            log::info!("{line}");
            return;
        };
        log::debug!("{line}");
        let mut syslog = syslog.lock().unwrap_or_else(|e| e.into_inner());
        let sent = if d.ok {
            syslog.info(&line)
        } else {
            syslog.notice(&line)
        };
        if let Err(e) = sent {
            log::warn!("syslog: {e}; decision: {line}");
        }
    }
}

/// Seconds since the Unix epoch; the one clock the listeners read.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A text from outside as a log line may hold it: control, format and
/// separator characters escaped, so a name can neither forge a line nor
/// hide what it is; bounded. Escape once, where the line is written.
fn printable(text: &str) -> String {
    otpproto::logtext::escape(text, otpproto::logtext::MAX_CHARS)
}

fn connect_syslog() -> Option<SyslogLogger> {
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_AUTHPRIV,
        hostname: None,
        process: "otpd".to_owned(),
        pid: std::process::id(),
    };
    match syslog::unix(formatter) {
        Ok(logger) => Some(logger),
        Err(e) => {
            log::warn!("syslog is not available ({e}); decisions are logged to stderr only");
            None
        }
    }
}

/// Resolves when the daemon is told to stop; every listener holds one.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A shutdown signal and the sender that fires it.
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    /// Waits for the stop (or for the sender to go away).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// The log facade's sink: one line per record on stderr.
struct StderrLogger {
    level: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let target = record.target();
            let line = if target.starts_with("otpd") {
                format!("otpd: {}: {}\n", record.level(), record.args())
            } else {
                format!("otpd: {}: {target}: {}\n", record.level(), record.args())
            };
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Sends the log facade to stderr, at the level in `OTPD_LOG` (default
/// `info`).
fn init_logging() {
    let wanted = std::env::var("OTPD_LOG").unwrap_or_default();
    let (level, bad) = match wanted.trim() {
        "" => (log::LevelFilter::Info, false),
        text => match text.parse::<log::LevelFilter>() {
            Ok(level) => (level, false),
            Err(_) => (log::LevelFilter::Info, true),
        },
    };
    if log::set_boxed_logger(Box::new(StderrLogger { level })).is_ok() {
        log::set_max_level(level);
    }
    if bad {
        log::warn!("OTPD_LOG={wanted:?} is not a log level (off, error, warn, info, debug, trace); using info");
    }
}

fn load_config(args: &Args) -> Result<(String, Config), String> {
    if args.defaults {
        return Ok((
            "embedded defaults".to_owned(),
            Config::embedded_defaults(Path::new(DEFAULTS_STATE_DIR)),
        ));
    }
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    otpstore::load_config(&path)
        .map(|c| (path.display().to_string(), c))
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    let (source, config) = match load_config(&args) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("otpd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.check_config {
        println!("config OK: {source}");
        return ExitCode::SUCCESS;
    }
    raise_open_files_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("otpd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

/// Raises the soft limit on open files to the hard limit (systemd, for
/// one, starts services with 1,024 of up to 524,288): the HTTP listener
/// sizes its connection cap from the soft limit, keeping the other half
/// for the PAM socket, RADIUS and the database. Where the limit cannot be
/// raised, otpd runs with the soft limit it has.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                log::warn!("cannot raise the open files limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => log::warn!("cannot read the open files limit: {e}"),
    }
}

async fn run(config: Config) -> ExitCode {
    // Signal handlers first, so a stop that arrives right after the
    // "listening" line is not lost.
    let signals = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("otpd: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    if config.http.is_none() && config.socket.is_none() && config.radius.is_none() {
        eprintln!(
            "otpd: nothing to serve: the configuration has no [http], [socket] or [radius] section"
        );
        return ExitCode::FAILURE;
    }
    let power_safe = config.sqlite_synchronous == Synchronous::Full;
    let opening = config.clone();
    let opened = tokio::task::spawn_blocking(move || {
        Store::from_config(&opening).and_then(|s| s.set_power_safe(power_safe).map(|()| s))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|opened| opened.map_err(|e| e.to_string()));
    let store = match opened {
        Ok(s) => s,
        Err(e) => {
            eprintln!("otpd: cannot open the store: {e}");
            return ExitCode::FAILURE;
        }
    };

    // Bind every listener before serving any, so a bad address fails the
    // start instead of leaving a half-running daemon.
    let http = match &config.http {
        Some(h) => match http::HttpListener::bind(h).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("otpd: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let socket = match &config.socket {
        Some(s) => match socket::SocketListener::bind(s) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("otpd: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let radius = match &config.radius {
        Some(r) => match radius::RadiusListener::bind(r) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("otpd: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };

    let daemon = Arc::new(Daemon::new(config, store, true));
    let (stop, shutdown) = Shutdown::new();
    let mut listeners = JoinSet::new();
    if let Some(listener) = http {
        println!("otpd {} listening on {}", otpcore::VERSION, listener.url());
        let _ = std::io::stdout().flush();
        listeners.spawn(listener.serve(Arc::clone(&daemon), shutdown.clone()));
    }
    // One verifier for every login channel, so they share its batches.
    let verifier = if socket.is_some() || radius.is_some() {
        match verifier::Verifier::start(Arc::clone(&daemon)) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("otpd: cannot start the verifier: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    if let (Some(listener), Some(verifier)) = (socket, verifier.clone()) {
        println!(
            "otpd {} listening on unix:{}",
            otpcore::VERSION,
            listener.path().display()
        );
        let _ = std::io::stdout().flush();
        listeners.spawn(listener.serve(Arc::clone(&daemon), verifier, shutdown.clone()));
    }
    if let (Some(listener), Some(verifier)) = (radius, verifier) {
        match listener.local_addr() {
            Ok(addr) => println!("otpd {} listening on radius:{addr}", otpcore::VERSION),
            Err(e) => log::warn!("radius: cannot read the bound address: {e}"),
        }
        match listener.accounting_addr() {
            Some(Ok(addr)) => println!(
                "otpd {} listening on radius-accounting:{addr}",
                otpcore::VERSION
            ),
            Some(Err(e)) => log::warn!("radius: cannot read the bound accounting address: {e}"),
            None => {}
        }
        let _ = std::io::stdout().flush();
        listeners.spawn(listener.serve(Arc::clone(&daemon), verifier, shutdown.clone()));
    }

    let (mut term, mut int) = signals;
    let mut code = ExitCode::SUCCESS;
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: shutting down"),
        _ = int.recv() => log::info!("SIGINT: shutting down"),
        Some(ended) = listeners.join_next() => {
            match ended {
                Ok(Ok(())) => log::error!("a listener stopped unexpectedly"),
                Ok(Err(e)) => log::error!("a listener failed: {e}"),
                Err(e) => log::error!("a listener crashed: {e}"),
            }
            code = ExitCode::FAILURE;
        }
    }
    let _ = stop.send(true);
    while let Some(ended) = listeners.join_next().await {
        if let Ok(Err(e)) | Err(e) = ended.map_err(std::io::Error::other) {
            log::error!("listener: {e}");
            code = ExitCode::FAILURE;
        }
    }
    log::info!("stopped");
    code
}

/// Fixtures the listeners' in-process tests share.
#[cfg(test)]
mod testing {
    use otpstore::ImportedToken;

    use crate::Daemon;

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
            .import_tokens(&[token], "OTPD", false, crate::unix_now())
            .expect("import a test token");
    }
}
