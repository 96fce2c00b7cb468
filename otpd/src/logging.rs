//! Where otpd's own diagnostics go (one line per record on stderr, at the
//! level in `OTPD_LOG`) and the connection to the local syslog that
//! decisions are sent to.

use std::io::Write;

/// The local syslog, as decisions are written to it.
pub(crate) type SyslogLogger = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

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
pub fn init_logging() {
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

/// The local syslog (facility authpriv), or `None` with a warning when it
/// cannot be reached.
pub(crate) fn connect_syslog() -> Option<SyslogLogger> {
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
