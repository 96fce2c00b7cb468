//! `otpd`: the daemon as a library. It holds the store and serves the
//! listeners that the configuration names: the activation page and its
//! JSON API ([`http`]), the Unix socket of `pam_otp.so` ([`socket`]),
//! RADIUS over UDP and TLS ([`radius`]) and the self-service socket of
//! `otpctl enrol` ([`selfservice`]). Each listener takes an already-bound socket and one
//! shared [`daemon::Daemon`], so tests bind port 0 and the listeners can
//! stand side by side; the login channels verify codes through one
//! [`verifier::Verifier`]. [`run`] is the whole daemon, as the `otpd`
//! program starts it.

mod accept;
pub mod clock;
pub mod daemon;
mod enrolment;
pub mod error;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod notices;
pub mod radius;
pub mod retention;
pub mod selfservice;
pub mod socket;
#[cfg(test)]
mod testing;
pub mod verifier;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use otpcore::config::{Config, Synchronous};
use otpstore::Store;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;

use daemon::{Daemon, Shutdown};
use http::HttpListener;
use metrics::MetricsListener;
use radius::RadiusListener;
use selfservice::SelfServiceListener;
use socket::SocketListener;

/// Runs the daemon over `config` until SIGTERM or SIGINT, or until a
/// listener fails: opens the store, binds every listener, then serves.
/// Failures to start are printed to stderr; the exit code says whether
/// otpd ran and stopped cleanly.
pub fn run(config: Config) -> ExitCode {
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
    runtime.block_on(serve(config))
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

/// The listeners the configuration names, bound.
struct Listeners {
    http: Option<HttpListener>,
    socket: Option<SocketListener>,
    radius: Option<RadiusListener>,
    metrics: Option<MetricsListener>,
    self_service: Option<SelfServiceListener>,
}

impl Listeners {
    /// Binds every listener before any serves, so a bad address fails the
    /// start instead of leaving a half-running daemon.
    async fn bind(config: &Config) -> Result<Listeners, Box<dyn std::error::Error>> {
        let http = match &config.http {
            Some(h) => Some(HttpListener::bind(h).await?),
            None => None,
        };
        let socket = config
            .socket
            .as_ref()
            .map(SocketListener::bind)
            .transpose()?;
        let radius = match &config.radius {
            Some(r) => Some(RadiusListener::bind(r)?.with_directory(r, config.ldap.as_ref())?),
            None => None,
        };
        let metrics = config
            .metrics
            .as_ref()
            .map(MetricsListener::bind)
            .transpose()?;
        let self_service = config
            .self_service
            .as_ref()
            .map(SelfServiceListener::bind)
            .transpose()?;
        Ok(Listeners {
            http,
            socket,
            radius,
            metrics,
            self_service,
        })
    }
}

async fn serve(config: Config) -> ExitCode {
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
    let mut store = match opened {
        Ok(s) => s,
        Err(e) => {
            eprintln!("otpd: cannot open the store: {e}");
            return ExitCode::FAILURE;
        }
    };
    match notices::start(&config) {
        Ok(Some((events, sink))) => store.set_notices(&events, sink),
        Ok(None) => {}
        Err(e) => {
            eprintln!("otpd: cannot start the notice thread: {e}");
            return ExitCode::FAILURE;
        }
    }
    let Listeners {
        http,
        socket,
        radius,
        metrics,
        self_service,
    } = match Listeners::bind(&config).await {
        Ok(bound) => bound,
        Err(e) => {
            eprintln!("otpd: {e}");
            return ExitCode::FAILURE;
        }
    };

    let daemon = match Daemon::new(config, store, true) {
        Ok(daemon) => Arc::new(daemon),
        Err(e) => {
            eprintln!("otpd: cannot set up the metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (stop, shutdown) = Shutdown::new();
    let mut listeners = JoinSet::new();
    if let Some(listener) = http {
        println!("otpd {} listening on {}", otpcore::VERSION, listener.url());
        let _ = std::io::stdout().flush();
        listeners.spawn(listener.serve(Arc::clone(&daemon), shutdown.clone()));
    }
    // One verifier for every login channel, so they share its batches.
    let verifier = if socket.is_some() || radius.is_some() || self_service.is_some() {
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
    if let (Some(listener), Some(verifier)) = (self_service, verifier.clone()) {
        println!(
            "otpd {} listening on self-service:{}",
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
        match listener.radsec_addr() {
            Some(Ok(addr)) => println!("otpd {} listening on radsec:{addr}", otpcore::VERSION),
            Some(Err(e)) => log::warn!("radsec: cannot read the bound address: {e}"),
            None => {}
        }
        let _ = std::io::stdout().flush();
        listeners.spawn(listener.serve(Arc::clone(&daemon), verifier, shutdown.clone()));
    }

    if let Some(listener) = metrics {
        match listener.local_addr() {
            Ok(addr) => println!("otpd {} listening on metrics:{addr}", otpcore::VERSION),
            Err(e) => log::warn!("metrics: cannot read the bound address: {e}"),
        }
        let _ = std::io::stdout().flush();
        listeners.spawn(listener.serve(Arc::clone(&daemon), shutdown.clone()));
    }

    // Off the listeners' set: their end is no reason to stop.
    tokio::spawn(clock::watch(Arc::clone(&daemon), shutdown.clone()));
    tokio::spawn(retention::prune_audit(
        Arc::clone(&daemon),
        shutdown.clone(),
    ));

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
