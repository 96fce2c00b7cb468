//! The background pruning of the audit trail.

use std::sync::Arc;
use std::time::Duration;

use otpd::daemon::{unix_now, Shutdown};
use otpd::retention::{prune_audit, BATCH};
use otpstore::{AuditEntry, AuditResult, Channel};

use crate::common::daemon_with;

fn entry(time: u64, user: &str) -> AuditEntry {
    AuditEntry {
        time,
        user: user.to_owned(),
        channel: Channel::Pam.as_str().to_owned(),
        peer: "uid=0".to_owned(),
        result: AuditResult::Fail,
        reason: "wrong code".to_owned(),
    }
}

#[tokio::test]
async fn entries_older_than_the_retention_are_pruned_in_the_background() {
    let (_dir, daemon) = daemon_with(|c| c.policy.audit_retention_days = 2);
    let now = unix_now();
    let old = BATCH + 200;
    for i in 0..old {
        daemon
            .store()
            .audit(&entry(now - 3 * 86_400 - i, "old"))
            .expect("audit");
    }
    daemon
        .store()
        .audit(&entry(now - 86_400, "recent"))
        .expect("audit");
    let (stop, shutdown) = Shutdown::new();
    let pruning = tokio::spawn(prune_audit(Arc::clone(&daemon), shutdown));
    let mut left = Vec::new();
    for _ in 0..100 {
        left = daemon.store().audit_entries(None, 0).expect("audit");
        if left.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left.len(), 1, "{} entries left", left.len());
    assert_eq!(left[0].user, "recent");
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(5), pruning)
        .await
        .expect("stops")
        .expect("joins");
}

#[tokio::test]
async fn a_retention_of_zero_keeps_everything() {
    let (_dir, daemon) = daemon_with(|c| c.policy.audit_retention_days = 0);
    daemon.store().audit(&entry(1, "ancient")).expect("audit");
    let (_stop, shutdown) = Shutdown::new();
    // Returns at once: nothing to do, ever.
    tokio::time::timeout(
        Duration::from_secs(5),
        prune_audit(Arc::clone(&daemon), shutdown),
    )
    .await
    .expect("returns");
    assert_eq!(
        daemon.store().audit_entries(None, 0).expect("audit").len(),
        1
    );
}
