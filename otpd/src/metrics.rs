//! What otpd counts for Prometheus, and the `[metrics]` listener that
//! serves it: `GET /metrics` in the Prometheus text format and
//! `GET /healthz` (200 when the store answers within two seconds, 503
//! otherwise).
//!
//! Counting is cheap on every path: each counter the verification thread
//! and the listeners touch is resolved once, at start, so a decision costs
//! an atomic increment and a latency one histogram observation, without a
//! lock. What comes from the store (tokens by state) is read when scraped,
//! at most every five seconds, within a deadline, and never by more than
//! one query at a time: a hung database makes `/healthz` answer 503
//! quickly, it never piles up threads.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use otpclock::ClockState;
use otpcore::config::MetricsConfig;
use otpstore::{AuditResult, Channel};
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};
use prometheus::{Opts, Registry, TextEncoder};

use crate::daemon::{Daemon, Shutdown};
use crate::error::ListenError;

/// How long `/healthz` and a scrape wait for the store.
const STORE_DEADLINE: Duration = Duration::from_secs(2);
/// How long tokens by state are served from the last query.
const TOKENS_TTL: Duration = Duration::from_secs(5);
/// Connections the metrics listener serves at once.
const MAX_CONNECTIONS: usize = 16;

/// The channels decisions are counted by, in the order of [`channel_index`].
const CHANNELS: [Channel; 5] = [
    Channel::Pam,
    Channel::Radius,
    Channel::Http,
    Channel::Cli,
    Channel::SelfService,
];
/// The results decisions are counted by, in the order of [`result_index`].
const RESULTS: [AuditResult; 5] = [
    AuditResult::Ok,
    AuditResult::Fail,
    AuditResult::Error,
    AuditResult::Recovery,
    AuditResult::Reauth,
];

fn channel_index(channel: Channel) -> usize {
    match channel {
        Channel::Pam => 0,
        Channel::Radius => 1,
        Channel::Http => 2,
        Channel::Cli => 3,
        Channel::SelfService => 4,
    }
}

fn result_index(result: AuditResult) -> usize {
    match result {
        AuditResult::Ok => 0,
        AuditResult::Fail => 1,
        AuditResult::Error => 2,
        AuditResult::Recovery => 3,
        AuditResult::Reauth => 4,
    }
}

/// Every metric of otpd, registered in one registry.
pub struct Metrics {
    registry: Registry,
    /// `otpd_decisions_total`, resolved for every channel and result.
    decisions: [[IntCounter; RESULTS.len()]; CHANNELS.len()],
    verify_seconds: Histogram,
    batch_size: Histogram,
    store_errors: IntCounter,
    radius_drops: IntCounterVec,
    tokens: IntGaugeVec,
    clock_synchronised: IntGauge,
    clock_max_error: Gauge,
    clock_estimated_error: Gauge,
}

impl Metrics {
    /// The metrics of a daemon that has done nothing yet.
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new(
                "otpd_decisions_total",
                "Decisions about users, by channel (pam, radius, http, cli, self) and result (ok, fail, error, recovery, reauth).",
            ),
            &["channel", "result"],
        )?;
        let verify_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "otpd_verify_duration_seconds",
                "Time from a code's arrival at the verifier to its decision.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )?;
        let batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "otpd_verify_batch_size",
                "Codes verified together in one store transaction.",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )?;
        let store_errors = IntCounter::new(
            "otpd_store_errors_total",
            "Store operations that failed (verification, audit, health and token queries).",
        )?;
        let radius_drops = IntCounterVec::new(
            Opts::new(
                "otpd_radius_drops_total",
                "RADIUS datagrams dropped, by reason.",
            ),
            &["reason"],
        )?;
        let tokens = IntGaugeVec::new(
            Opts::new(
                "otpd_tokens",
                "Enrolments by state, as last read from the store.",
            ),
            &["state"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("otpd_build_info", "The running otpd's version; always 1."),
            &["version"],
        )?;
        build_info
            .get_metric_with_label_values(&[otpcore::VERSION])?
            .set(1);
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(verify_seconds.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        registry.register(Box::new(radius_drops.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(build_info))?;
        let clock_synchronised = IntGauge::new(
            "otpd_clock_synchronised",
            "1 when the kernel reports the system clock synchronised by a time service, 0 when not or when it cannot be read.",
        )?;
        let clock_max_error = Gauge::new(
            "otpd_clock_max_error_seconds",
            "The kernel's maximum error of the system clock.",
        )?;
        let clock_estimated_error = Gauge::new(
            "otpd_clock_estimated_error_seconds",
            "The kernel's estimated error of the system clock.",
        )?;
        registry.register(Box::new(clock_synchronised.clone()))?;
        registry.register(Box::new(clock_max_error.clone()))?;
        registry.register(Box::new(clock_estimated_error.clone()))?;
        let decisions = std::array::from_fn(|c| {
            std::array::from_fn(|r| {
                decisions.with_label_values(&[CHANNELS[c].as_str(), RESULTS[r].as_str()])
            })
        });
        Ok(Metrics {
            registry,
            decisions,
            verify_seconds,
            batch_size,
            store_errors,
            radius_drops,
            tokens,
            clock_synchronised,
            clock_max_error,
            clock_estimated_error,
        })
    }

    /// Counts a decision.
    pub fn decided(&self, channel: Channel, result: AuditResult) {
        if let Some(counter) = self
            .decisions
            .get(channel_index(channel))
            .and_then(|row| row.get(result_index(result)))
        {
            counter.inc();
        }
    }

    /// Records how long one code waited for its decision.
    pub fn verified(&self, took: Duration) {
        self.verify_seconds.observe(took.as_secs_f64());
    }

    /// Records the size of one verification batch.
    pub fn batch(&self, size: usize) {
        self.batch_size.observe(size as f64);
    }

    /// Counts a failed store operation.
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// Counts a dropped RADIUS datagram.
    pub fn radius_dropped(&self, reason: &str) {
        self.radius_drops.with_label_values(&[reason]).inc();
    }

    /// Replaces the enrolments by state.
    fn set_tokens(&self, states: &[(String, u64)]) {
        self.tokens.reset();
        for (state, count) in states {
            let gauge: IntGauge = self.tokens.with_label_values(&[state.as_str()]);
            gauge.set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
    }

    /// Records the clock's state as last read; a clock that cannot be read
    /// counts as unsynchronised, its errors as last read.
    pub fn clock(&self, reading: &io::Result<ClockState>) {
        match reading {
            Ok(state) => {
                self.clock_synchronised
                    .set(i64::from(state.is_synchronised()));
                self.clock_max_error.set(state.max_error.as_secs_f64());
                self.clock_estimated_error
                    .set(state.estimated_error.as_secs_f64());
            }
            Err(_) => self.clock_synchronised.set(0),
        }
    }

    /// Every metric in the Prometheus text format.
    pub fn encode(&self) -> prometheus::Result<String> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

/// The `[metrics]` listener on an already-bound socket.
pub struct MetricsListener {
    listener: std::net::TcpListener,
}

impl MetricsListener {
    /// Binds `[metrics].listen`.
    pub fn bind(config: &MetricsConfig) -> Result<MetricsListener, ListenError> {
        let fail = |source| ListenError::Metrics {
            addr: config.listen,
            source,
        };
        let listener = crate::http::listen(config.listen).map_err(fail)?;
        MetricsListener::from_std(listener).map_err(fail)
    }

    /// Wraps a socket that someone else bound (tests).
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<MetricsListener> {
        listener.set_nonblocking(true)?;
        Ok(MetricsListener { listener })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, with the activation listener's limits on
    /// time and header size and at most 16 connections at once.
    pub async fn serve(self, daemon: Arc<Daemon>, shutdown: Shutdown) -> io::Result<()> {
        crate::http::serve_plain(
            "metrics",
            self.listener,
            router(daemon),
            MAX_CONNECTIONS,
            shutdown,
        )
        .await
    }
}

/// What the metrics handlers share.
struct Scrapes {
    daemon: Arc<Daemon>,
    /// When tokens by state were last read; held while they are read, so
    /// scrapes at the same time share one query.
    tokens_read: tokio::sync::Mutex<Option<Instant>>,
    /// Held by the one store call of the listener in progress.
    store_call: tokio::sync::Mutex<()>,
    /// True while a store call of the listener runs on its blocking thread,
    /// even after its deadline passed.
    store_busy: Arc<AtomicBool>,
}

/// `/metrics` and `/healthz` over `daemon`.
pub fn router(daemon: Arc<Daemon>) -> Router {
    let state = Arc::new(Scrapes {
        daemon,
        tokens_read: tokio::sync::Mutex::new(None),
        store_call: tokio::sync::Mutex::new(()),
        store_busy: Arc::new(AtomicBool::new(false)),
    });
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state)
}

impl Scrapes {
    /// Runs `call` on the store within [`STORE_DEADLINE`]; `None` when it
    /// failed, took too long, or an earlier call still hangs.
    async fn store<T, F>(&self, call: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(&Daemon) -> Result<T, otpstore::StoreError> + Send + 'static,
    {
        let deadline = tokio::time::Instant::now() + STORE_DEADLINE;
        let _one_at_a_time = tokio::time::timeout_at(deadline, self.store_call.lock())
            .await
            .ok()?;
        if self.store_busy.swap(true, Ordering::AcqRel) {
            return None;
        }
        let busy = Arc::clone(&self.store_busy);
        let daemon = Arc::clone(&self.daemon);
        let task = tokio::task::spawn_blocking(move || {
            let answer = call(&daemon);
            busy.store(false, Ordering::Release);
            answer
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(Ok(answer))) => Some(answer),
            Ok(Ok(Err(e))) => {
                self.daemon.metrics().store_error();
                log::warn!("metrics: the store failed: {e}");
                None
            }
            Ok(Err(e)) => {
                log::error!("metrics: a store call crashed: {e}");
                None
            }
            Err(_) => {
                self.daemon.metrics().store_error();
                log::warn!("metrics: the store did not answer within {STORE_DEADLINE:?}");
                None
            }
        }
    }

    /// Reads tokens by state when the last reading is older than
    /// [`TOKENS_TTL`].
    async fn refresh_tokens(&self) {
        let Ok(mut read) = tokio::time::timeout(STORE_DEADLINE, self.tokens_read.lock()).await
        else {
            return;
        };
        if read.is_some_and(|at| at.elapsed() < TOKENS_TTL) {
            return;
        }
        if let Some(states) = self.store(|d| d.store().token_states()).await {
            self.daemon.metrics().set_tokens(&states);
        }
        *read = Some(Instant::now());
    }
}

async fn metrics(State(scrapes): State<Arc<Scrapes>>) -> Response {
    scrapes.refresh_tokens().await;
    // One system call: the clock's state as it is now, not a minute ago.
    scrapes.daemon.metrics().clock(&otpclock::read());
    match scrapes.daemon.metrics().encode() {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => {
            log::error!("metrics: cannot encode: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn healthz(State(scrapes): State<Arc<Scrapes>>) -> (StatusCode, &'static str) {
    match scrapes.store(|d| d.store().ping()).await {
        Some(()) => (StatusCode::OK, "ok\n"),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the store does not answer\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_decisions_by_channel_and_result() {
        let metrics = Metrics::new().expect("metrics");
        metrics.decided(Channel::Pam, AuditResult::Ok);
        metrics.decided(Channel::Pam, AuditResult::Ok);
        metrics.decided(Channel::Radius, AuditResult::Error);
        metrics.verified(Duration::from_millis(3));
        metrics.batch(7);
        metrics.radius_dropped("malformed");
        metrics.set_tokens(&[("active".to_owned(), 3), ("issued".to_owned(), 1)]);
        metrics.clock(&Ok(ClockState::decode(0, 0, 250_000, 1_500)));
        let text = metrics.encode().expect("encode");
        for line in [
            "otpd_decisions_total{channel=\"pam\",result=\"ok\"} 2",
            "otpd_decisions_total{channel=\"radius\",result=\"error\"} 1",
            "otpd_decisions_total{channel=\"http\",result=\"fail\"} 0",
            "otpd_verify_duration_seconds_bucket{le=\"0.005\"} 1",
            "otpd_verify_batch_size_sum 7",
            "otpd_radius_drops_total{reason=\"malformed\"} 1",
            "otpd_tokens{state=\"active\"} 3",
            "otpd_store_errors_total 0",
            "otpd_clock_synchronised 1",
            "otpd_clock_max_error_seconds 0.25",
            "otpd_clock_estimated_error_seconds 0.0015",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        let build = format!("otpd_build_info{{version=\"{}\"}} 1", otpcore::VERSION);
        assert!(text.lines().any(|l| l == build), "{text}");
        // A state that is gone is no longer shown.
        metrics.set_tokens(&[("active".to_owned(), 2)]);
        let text = metrics.encode().expect("encode");
        assert!(!text.contains("state=\"issued\""), "{text}");
        // A clock that cannot be read is no synchronised clock.
        metrics.clock(&Err(io::Error::from(io::ErrorKind::PermissionDenied)));
        let text = metrics.encode().expect("encode");
        assert!(
            text.lines().any(|l| l == "otpd_clock_synchronised 0"),
            "{text}"
        );
    }
}
