//! Pruning of the audit trail (`[policy] audit_retention_days`): at start
//! and every hour, entries older than the retention are deleted in the
//! background, [`BATCH`] per statement, and after each statement the pruner
//! rests [`REST_FACTOR`] times as long as the statement took (at least
//! [`MIN_PAUSE`]). So it uses at most a fifth of the store's time, whatever
//! the store's speed, and logins never wait long for the store: a statement
//! is short (a few milliseconds), and one slowed down by logins (the store
//! serves one call at a time) makes the pruner rest longer.

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::daemon::{unix_now, Daemon, Shutdown};

/// Audit entries deleted by one statement.
pub const BATCH: u64 = 100;
/// The rest after a statement, in multiples of the time it took.
const REST_FACTOR: u32 = 4;
/// The shortest rest between two statements.
const MIN_PAUSE: Duration = Duration::from_millis(10);
/// How often the trail is pruned.
const EVERY: Duration = Duration::from_secs(3600);

/// The rest after a statement that took `took`.
fn pause_after(took: Duration) -> Duration {
    took.saturating_mul(REST_FACTOR).max(MIN_PAUSE)
}

/// Prunes the audit trail now and every hour until `shutdown`; does
/// nothing when entries are kept forever.
pub async fn prune_audit(daemon: Arc<Daemon>, shutdown: Shutdown) {
    if daemon.config.policy.audit_cutoff(0).is_none() {
        return;
    }
    let mut stop = pin!(shutdown.wait());
    loop {
        if let Some(before) = daemon.config.policy.audit_cutoff(unix_now()) {
            let started = Instant::now();
            let mut deleted = 0u64;
            loop {
                let store = Arc::clone(&daemon);
                let done = tokio::task::spawn_blocking(move || {
                    let began = Instant::now();
                    let n = store.store().prune_audit(before, BATCH);
                    (n, began.elapsed())
                })
                .await;
                let took = match done {
                    Ok((Ok(n), took)) => {
                        deleted = deleted.saturating_add(n);
                        if n < BATCH {
                            break;
                        }
                        took
                    }
                    Ok((Err(e), _)) => {
                        daemon.metrics().store_error();
                        log::warn!("audit retention: cannot delete old entries: {e}");
                        break;
                    }
                    Err(e) => {
                        log::error!("audit retention: the deletion crashed: {e}");
                        break;
                    }
                };
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(pause_after(took)) => {}
                }
            }
            if deleted > 0 {
                let seconds = started.elapsed().as_secs_f64();
                log::info!(
                    "audit retention: deleted {deleted} entries older than {} days in {seconds:.1} s",
                    daemon.config.policy.audit_retention_days
                );
            }
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rest_keeps_the_pruner_to_a_fifth_of_the_store() {
        for took in [20u64, 35, 120, 1500] {
            let took = Duration::from_millis(took);
            let share = took.as_secs_f64() / (took + pause_after(took)).as_secs_f64();
            assert!((share - 0.2).abs() < 1e-9, "{took:?}: {share}");
        }
        // A statement that took no time still leaves the store a rest.
        assert_eq!(pause_after(Duration::ZERO), MIN_PAUSE);
        assert_eq!(pause_after(Duration::from_micros(500)), MIN_PAUSE);
        assert_eq!(pause_after(Duration::MAX), Duration::MAX);
    }
}
