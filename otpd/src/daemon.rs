//! What every listener shares: the configuration, the store and the
//! decision log ([`Daemon`]), the stop signal ([`Shutdown`]) and the clock
//! ([`unix_now`]).

use std::sync::Mutex;

use otpcore::config::Config;
use otpstore::{AuditEntry, AuditResult, Channel, Store};
use tokio::sync::watch;

use crate::logging::{connect_syslog, SyslogLogger};
use crate::metrics::Metrics;

/// What every listener shares: the configuration, the store and the
/// decision log.
pub struct Daemon {
    pub config: Config,
    store: Store,
    syslog: Option<Mutex<SyslogLogger>>,
    metrics: Metrics,
}

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
    pub fn new(config: Config, store: Store, syslog: bool) -> prometheus::Result<Daemon> {
        let syslog = if syslog { connect_syslog() } else { None };
        Ok(Daemon {
            config,
            store,
            syslog: syslog.map(Mutex::new),
            metrics: Metrics::new()?,
        })
    }

    /// What the daemon counts, for `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The store. Its calls block: make them from blocking threads only.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Records a decision: audit table, log facade and syslog (authpriv).
    pub fn record(&self, d: &Decision<'_>) {
        self.log(d);
        self.audit(d, d.result());
    }

    /// Records a step that failed half-way (a setup mail not sent) as an
    /// `error`: audit table and logs, counted as an error.
    pub fn record_undecided(&self, d: &Decision<'_>) {
        self.log_undecided(d);
        self.audit(d, AuditResult::Error);
    }

    fn audit(&self, d: &Decision<'_>, result: AuditResult) {
        let entry = AuditEntry {
            time: d.time,
            user: d.user.to_owned(),
            channel: d.channel.as_str().to_owned(),
            peer: d.peer.to_owned(),
            result,
            reason: d.reason.to_owned(),
        };
        if let Err(e) = self.store.audit(&entry) {
            self.metrics.store_error();
            log::error!("cannot write the audit table: {e}");
        }
    }

    /// Logs a decision to the log facade and syslog (authpriv) only, for
    /// decisions the store has audited itself.
    pub fn log(&self, d: &Decision<'_>) {
        self.log_as(d, d.result());
    }

    /// Logs a refusal that was no decision (the store failed): counted as
    /// an error, logged as [`Daemon::log`] does.
    pub fn log_undecided(&self, d: &Decision<'_>) {
        self.log_as(d, AuditResult::Error);
    }

    fn log_as(&self, d: &Decision<'_>, counted: AuditResult) {
        self.metrics.decided(d.channel, counted);
        // Under systemd stderr and syslog both reach the journal: a decision
        // goes to stderr at info level only when syslog is not there.
        let Some(syslog) = &self.syslog else {
            if log::log_enabled!(log::Level::Info) {
                log::info!("{}", DecisionLine(d));
            }
            return;
        };
        let line = DecisionLine(d).to_string();
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

/// A decision as its log line shows it: `pam ok user=alice peer=uid=0
/// pid=7: code accepted`, the user and peer escaped
/// ([`otpproto::logtext`]). Written where it is formatted, so a line
/// nobody prints is never built.
struct DecisionLine<'a, 'b>(&'a Decision<'b>);

impl std::fmt::Display for DecisionLine<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        let shown = |text| otpproto::logtext::escaped(text, otpproto::logtext::MAX_CHARS);
        write!(
            f,
            "{} {} user={} peer={}: {}",
            d.channel.as_str(),
            d.result(),
            shown(d.user),
            shown(d.peer),
            d.reason
        )
    }
}

/// Seconds since the Unix epoch: the clock every program of otpd reads.
pub use otpproto::clock::unix_now;

/// A text from outside as a log line may hold it: control, format and
/// separator characters escaped, so a name can neither forge a line nor
/// hide what it is; bounded. Escape once, where the line is written.
pub(crate) fn printable(text: &str) -> String {
    otpproto::logtext::escape(text, otpproto::logtext::MAX_CHARS)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_line_escapes_what_came_from_outside() {
        let decision = Decision {
            channel: Channel::Pam,
            peer: "uid=0 pid=7 service=ss\u{202e}hd",
            user: "ali\nce\\",
            ok: false,
            reason: "wrong code",
            time: 0,
        };
        assert_eq!(
            DecisionLine(&decision).to_string(),
            "pam fail user=ali\\u{a}ce\\\\ peer=uid=0 pid=7 service=ss\\u{202e}hd: wrong code"
        );
        let long = "x".repeat(otpproto::logtext::MAX_CHARS + 1);
        let accepted = Decision {
            channel: Channel::Radius,
            peer: "client=vpn",
            user: &long,
            ok: true,
            reason: "code accepted",
            time: 0,
        };
        let line = DecisionLine(&accepted).to_string();
        assert!(line.starts_with("radius ok user=xxx"), "{line}");
        assert!(
            line.ends_with("x\\... peer=client=vpn: code accepted"),
            "{line}"
        );
    }
}
