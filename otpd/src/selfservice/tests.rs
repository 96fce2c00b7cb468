use super::*;
use crate::testing::exchange;
use otpcore::config::Config;
use otpstore::Store;
use serde_json::json;

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    daemon: Arc<Daemon>,
    _stop: tokio::sync::watch::Sender<bool>,
}

/// A daemon serving the self-service socket, mail into an outbox;
/// `allowed_groups` as given.
async fn serve(allowed_groups: Vec<String>) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::embedded_defaults(dir.path());
    let own = SelfServiceConfig {
        socket: dir.path().join("self.sock"),
        allowed_groups,
    };
    let listener = SelfServiceListener::bind(&own).expect("bind");
    let path = own.socket.clone();
    config.self_service = Some(own);
    let store = Store::open(dir.path()).expect("store");
    let daemon = Arc::new(Daemon::new(config, store, false).expect("daemon"));
    let verifier = Verifier::start(Arc::clone(&daemon)).expect("verifier");
    let (stop, shutdown) = Shutdown::new();
    tokio::spawn(listener.serve(Arc::clone(&daemon), verifier, shutdown));
    Fixture {
        _dir: dir,
        path,
        daemon,
        _stop: stop,
    }
}

/// The login name the tests run as.
fn me() -> String {
    User::from_uid(Uid::current())
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("a passwd entry for the test user")
}

fn enrol_line(extra: &str) -> String {
    format!(
        "{{\"op\":\"enrol\",\"email\":\"me@example.jp\",\"activation_password\":\"2468\"{extra}}}\n"
    )
}

#[test]
fn a_quota_counts_per_user_and_forgets_old_uses() {
    let quota = Quota::new(2, Duration::from_secs(60));
    let start = Instant::now();
    assert!(quota.take(1, start));
    assert!(quota.take(1, start));
    assert!(!quota.take(1, start), "a third use within the window");
    assert!(quota.take(2, start), "another user has uses of their own");
    let later = start + Duration::from_secs(61);
    assert!(quota.take(1, later), "the window has passed");
    assert_eq!(
        quota.used.lock().expect("lock").len(),
        1,
        "users whose uses aged out are forgotten"
    );
}

#[tokio::test]
async fn a_user_enrols_and_sees_the_state() {
    let f = serve(Vec::new()).await;
    let user = me();
    let answers = exchange(&f.path, b"{\"op\":\"status\"}\n", 1).await;
    assert_eq!(
        answers,
        [json!({"result": "status", "user": user, "state": "none"})]
    );
    let answers = exchange(
        &f.path,
        format!(
            "{}{{\"op\":\"status\"}}\n",
            enrol_line(",\"language\":\"ja\"")
        )
        .as_bytes(),
        2,
    )
    .await;
    assert_eq!(answers[0]["result"], "issued", "{answers:?}");
    assert_eq!(answers[0]["user"], user.as_str());
    assert_eq!(answers[0]["email"], "me@example.jp");
    let user_id = answers[0]["user_id"].as_str().expect("user_id");
    assert_eq!(
        answers[0]["setup_url"],
        format!("http://127.0.0.1:8080/setup?sid=OTPD&uid={user_id}")
    );
    assert_eq!(answers[1]["state"], "issued");
    assert!(!answers[0].to_string().contains("2468"));
    let pending = f.daemon.store().pending(&user).expect("store");
    assert_eq!(pending.map(|e| e.language), Some("ja".to_owned()));
    let audit = f
        .daemon
        .store()
        .audit_entries(Some(&user), 0)
        .expect("audit");
    assert!(
        audit
            .iter()
            .any(|a| a.channel == "self" && a.result == "ok" && a.reason.contains(user_id)),
        "{audit:?}"
    );
    // Confirming before the phone unlocked the setup.
    let answers = exchange(&f.path, b"{\"op\":\"confirm\",\"otp\":\"123456\"}\n", 1).await;
    assert_eq!(answers[0]["error"], "not_activated", "{answers:?}");
}

#[tokio::test]
async fn a_request_naming_a_user_or_breaking_a_rule_changes_nothing() {
    let f = serve(Vec::new()).await;
    let user = me();
    let lines = [
        enrol_line(",\"user\":\"someone\""),
        enrol_line(",\"uid\":0"),
        enrol_line(",\"name\":\"someone\""),
        "{\"op\":\"enrol\",\"email\":\"not-an-address\",\"activation_password\":\"2468\"}\n"
            .to_owned(),
        "{\"op\":\"enrol\",\"email\":\"me@example.jp\",\"activation_password\":\"24a8\"}\n"
            .to_owned(),
        enrol_line(",\"language\":\"fr\""),
        "not json\n".to_owned(),
        "\u{0}\u{1}\n".to_owned(),
    ];
    let answers = exchange(&f.path, lines.concat().as_bytes(), lines.len()).await;
    assert_eq!(answers.len(), lines.len());
    let codes: Vec<&str> = answers
        .iter()
        .map(|a| a["error"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        codes,
        [
            "malformed",
            "malformed",
            "malformed",
            "bad_input",
            "bad_input",
            "bad_input",
            "malformed",
            "malformed"
        ]
    );
    assert!(answers[4]["message"]
        .as_str()
        .is_some_and(|m| m.contains("digits")));
    assert!(answers.iter().all(|a| !a.to_string().contains("24a8")));
    assert!(f.daemon.store().latest(&user).expect("store").is_none());
    assert!(f.daemon.store().latest("someone").expect("store").is_none());
}

#[tokio::test]
async fn an_active_token_asks_for_a_current_code() {
    let f = serve(Vec::new()).await;
    let user = me();
    crate::testing::active_token(&f.daemon, &user);
    let answers = exchange(&f.path, enrol_line("").as_bytes(), 1).await;
    assert_eq!(answers[0]["error"], "code_required", "{answers:?}");
    let answers = exchange(&f.path, enrol_line(",\"otp\":\"000000\"").as_bytes(), 1).await;
    assert_eq!(answers[0]["error"], "wrong_code", "{answers:?}");
    let counters = f.daemon.store().counters(&user).expect("store");
    assert_eq!(
        counters.map(|c| c.failures),
        Some(1),
        "the wrong code counts toward the lockout"
    );
    let code = f
        .daemon
        .config
        .token
        .params()
        .code_at(crate::testing::SECRET, unix_now())
        .to_string();
    let answers = exchange(
        &f.path,
        enrol_line(&format!(",\"otp\":\"{code}\"")).as_bytes(),
        1,
    )
    .await;
    assert_eq!(answers[0]["result"], "issued", "{answers:?}");
    // The old token stays active until the new one is confirmed.
    assert!(f.daemon.store().active(&user).expect("store").is_some());
    // The code is spent.
    let answers = exchange(
        &f.path,
        enrol_line(&format!(",\"otp\":\"{code}\"")).as_bytes(),
        1,
    )
    .await;
    assert_eq!(answers[0]["error"], "wrong_code", "{answers:?}");
}

#[tokio::test]
async fn a_user_outside_the_allowed_groups_is_refused() {
    let f = serve(vec!["otpd-no-such-group".to_owned()]).await;
    let answers = exchange(&f.path, b"{\"op\":\"status\"}\n{\"op\":\"status\"}\n", 2).await;
    assert_eq!(answers.len(), 1, "the connection closes after the refusal");
    assert_eq!(answers[0]["error"], "permission_denied");
    assert!(f.daemon.store().latest(&me()).expect("store").is_none());
}

#[tokio::test]
async fn an_oversized_line_is_refused_and_the_socket_goes_on() {
    let f = serve(Vec::new()).await;
    let mut big = vec![b'a'; otpproto::selfservice::MAX_LINE + 10];
    big.push(b'\n');
    let answers = exchange(&f.path, &big, 2).await;
    assert_eq!(answers.len(), 1, "the connection closes after the refusal");
    assert_eq!(answers[0]["error"], "malformed");
    let answers = exchange(&f.path, b"{\"op\":\"status\"}\n", 1).await;
    assert_eq!(answers[0]["result"], "status");
}
