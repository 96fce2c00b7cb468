//! Pruning of the audit trail (`[policy] audit_retention_days`): at start
//! and every hour, entries older than the retention are deleted in the
//! background, [`BATCH`] per statement with a pause between statements, so
//! that the verification thread never waits long for the store's write
//! lock.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use crate::daemon::{unix_now, Daemon, Shutdown};

/// Audit entries deleted by one statement.
pub const BATCH: u64 = 1000;
/// The pause between two statements.
const PAUSE: Duration = Duration::from_millis(100);
/// How often the trail is pruned.
const EVERY: Duration = Duration::from_secs(3600);

/// Prunes the audit trail now and every hour until `shutdown`; does
/// nothing when entries are kept forever.
pub async fn prune_audit(daemon: Arc<Daemon>, shutdown: Shutdown) {
    if daemon.config.policy.audit_cutoff(0).is_none() {
        return;
    }
    let mut stop = pin!(shutdown.wait());
    loop {
        if let Some(before) = daemon.config.policy.audit_cutoff(unix_now()) {
            let mut deleted = 0u64;
            loop {
                let store = Arc::clone(&daemon);
                let done =
                    tokio::task::spawn_blocking(move || store.store().prune_audit(before, BATCH))
                        .await;
                match done {
                    Ok(Ok(n)) => {
                        deleted = deleted.saturating_add(n);
                        if n < BATCH {
                            break;
                        }
                    }
                    Ok(Err(e)) => {
                        daemon.metrics().store_error();
                        log::warn!("audit retention: cannot delete old entries: {e}");
                        break;
                    }
                    Err(e) => {
                        log::error!("audit retention: the deletion crashed: {e}");
                        break;
                    }
                }
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(PAUSE) => {}
                }
            }
            if deleted > 0 {
                log::info!(
                    "audit retention: deleted {deleted} entries older than {} days",
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
