//! What otpd's in-process tests share: a daemon over a store of its own in
//! a temporary directory, and the enrolments it holds.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use otpcore::config::Config;
use otpd::daemon::{unix_now, Daemon, Shutdown};
use otpd::verifier::Verifier;
use otpstore::{Enrolment, FirstCode, NewEnrolment, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

/// The activation password of every enrolment [`issue`] makes.
pub const PASSWORD: &str = "4321";

/// A daemon (without syslog) over a new store in a temporary directory
/// that lives as long as the returned handle, configured by the embedded
/// defaults as `edit` changes them.
pub fn daemon_with(edit: impl FnOnce(&mut Config)) -> (tempfile::TempDir, Arc<Daemon>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::embedded_defaults(&dir.path().join("state"));
    edit(&mut config);
    let store = Store::open(&config.state_dir).expect("store");
    (
        dir,
        Arc::new(Daemon::new(config, store, false).expect("daemon")),
    )
}

/// Issues a token for `user` with [`PASSWORD`] that expires `ttl` seconds
/// from now (negative: already expired).
pub fn issue(daemon: &Daemon, user: &str, ttl: i64) -> Enrolment {
    let now = unix_now();
    let config = &daemon.config;
    daemon
        .store()
        .issue(
            &NewEnrolment {
                user,
                email: "user@example.jp",
                service_id: &config.service_id,
                params: config.token.params(),
                language: "en",
                activation_password: PASSWORD,
                expires_at: now.saturating_add_signed(ttl),
                replace: false,
            },
            now,
        )
        .expect("issue")
}

/// `e` as stored now.
pub fn reload(daemon: &Daemon, e: &Enrolment) -> Enrolment {
    daemon
        .store()
        .by_ids(&e.service_id, &e.user_id)
        .expect("query")
        .expect("exists")
}

/// Gives `user` an active token the way a phone does: issued, activated
/// and confirmed with the code of this time step. Returns its secret; the
/// codes of later steps are the ones left to use.
pub fn active_token(daemon: &Daemon, user: &str) -> Zeroizing<Vec<u8>> {
    let store = daemon.store();
    let issued = issue(daemon, user, 3600);
    let now = unix_now();
    let secret = store
        .activate(issued.id, now)
        .expect("activate")
        .expect("the enrolment was issued");
    let activated = reload(daemon, &issued);
    let code = activated.params.code_at(&secret, now);
    let checked = store
        .confirm_token(&activated, &code, now, &daemon.config.token)
        .expect("confirm");
    assert!(
        matches!(checked.outcome, FirstCode::Active { adapted: false, .. }),
        "{checked:?}"
    );
    secret
}

/// A listener serving a daemon, with a verifier of its own, until it is
/// stopped or dropped.
pub struct Serving {
    stop: watch::Sender<bool>,
    served: JoinHandle<std::io::Result<()>>,
}

impl Serving {
    /// Spawns `serve` (a listener's `serve`, on the runtime of the caller)
    /// over `daemon` and a new verifier.
    pub fn start<F>(
        daemon: &Arc<Daemon>,
        serve: impl FnOnce(Arc<Daemon>, Verifier, Shutdown) -> F,
    ) -> Serving
    where
        F: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let verifier = Verifier::start(Arc::clone(daemon)).expect("verifier");
        let (stop, shutdown) = Shutdown::new();
        let served = tokio::spawn(serve(Arc::clone(daemon), verifier, shutdown));
        Serving { stop, served }
    }

    /// Stops the listener and waits until it has, cleanly.
    pub async fn stop(self) {
        stopped(self.stop, self.served).await;
    }
}

/// Fires `stop` and waits until the listener `served` stopped, cleanly,
/// within the grace that otpd gives its connections.
pub async fn stopped(stop: watch::Sender<bool>, served: JoinHandle<std::io::Result<()>>) {
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(15), served)
        .await
        .expect("serve stops")
        .expect("joins")
        .expect("serves cleanly");
}
