//! Every otpctl subcommand against a running otpd, end to end: issue,
//! confirm, resend, show, list, unlock, resync, test, revoke, backup,
//! import, audit and completions, parsing `--json` wherever a command
//! prints data. Imports of CSV files and of real google-authenticator files
//! (made by Debian's `google-authenticator` command) are followed by PAM
//! logins through the built module in pamtester, with oathtool as the
//! phone. A backup taken under a verify load is a sound database that a
//! fresh otpd serves. Run as root on a state_dir owned by another user,
//! otpctl becomes that user.
//!
//! Root only. Peers: oathtool, sqlite3, pamtester, google-authenticator
//! (libpam-google-authenticator), useradd (passwd).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::{
    assert_success, describe, enrolment_array, google_authenticator_file, now_unix, oathtool_code,
    oathtool_code_at, otpctl_bin, require_root_and_peers, said, socket_exchange, start_socket_otpd,
    stderr, stdout, stdout_json, stdout_json_lines, wait_for_fresh_step, PamService, TestEnv,
};
use serde_json::{json, Value};

const PASSWORD: &str = "4321";

// ---------------------------------------------------------------------------
// Helpers

/// Panics unless these tests can run here: root with the harness's peers,
/// and the tools this file drives.
fn require_lifecycle_peers() {
    require_root_and_peers();
    e2e::require_tools(&[
        ("pamtester", "pamtester"),
        ("google-authenticator", "libpam-google-authenticator"),
        ("useradd", "passwd"),
    ]);
}

/// A random base32 secret of 20 bytes (160 bits), unpadded.
fn random_secret() -> String {
    let mut bytes = [0u8; 20];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    data_encoding::BASE32_NOPAD.encode(&bytes)
}

/// `list --json` as the raw JSON value, for before/after comparisons.
fn list_json(env: &TestEnv) -> Value {
    let output = env.otpctl(&["list", "--json"], "");
    assert_success(&output, "otpctl list --json");
    stdout_json(&output)
}

/// The enrolment of `user` in `list --json`.
fn listed(env: &TestEnv, user: &str) -> Value {
    env.list()
        .into_iter()
        .find(|e| e["user"] == user)
        .unwrap_or_else(|| panic!("{user} is not in otpctl list --json"))
}

/// `otpctl import --format FORMAT ARGS... --json`; its JSON answer.
fn import_ok(env: &TestEnv, format: &str, args: &[&str]) -> Value {
    let mut all = vec!["import", "--format", format, "--json"];
    all.extend_from_slice(args);
    let output = env.otpctl(&all, "");
    assert_success(&output, &format!("otpctl {all:?}"));
    stdout_json(&output)
}

/// Codes of `secret` (period 60) for steps that are certainly outside any
/// window around now, each different from the codes near now.
fn wrong_codes(secret: &str, count: usize) -> Vec<String> {
    let now = now_unix();
    let near: Vec<String> = (0..5)
        .map(|k| oathtool_code_at(secret, 60, now + k * 60 - 120))
        .collect();
    let mut codes = Vec::new();
    let mut day = 1;
    while codes.len() < count {
        let code = oathtool_code_at(secret, 60, now - day * 86_400);
        if !near.contains(&code) && !codes.contains(&code) {
            codes.push(code);
        }
        day += 1;
    }
    codes
}

/// Logs `user` in with pamtester through `pam` and asserts the outcome.
fn assert_login(pam: &PamService, env: &TestEnv, user: &str, code: &str, accepted: bool) {
    let output = pam.authenticate(user, &format!("{code}\n"));
    let text = said(&output);
    let ok = if accepted {
        output.status.success() && text.contains("successfully authenticated")
    } else {
        output.status.code() == Some(1) && text.contains("Authentication failure")
    };
    assert!(
        ok,
        "pamtester login of {user} should be {}: {}\n--- otpd log ---\n{}",
        if accepted { "accepted" } else { "refused" },
        describe(&output),
        env.otpd_log()
    );
}

fn verify_request(user: &str, otp: &str) -> Value {
    json!({"op": "verify", "user": user, "otp": otp, "service": "lifecycle"})
}

fn verify(socket: &Path, user: &str, otp: &str) -> String {
    let answers = socket_exchange(socket, &[verify_request(user, otp)])
        .unwrap_or_else(|e| panic!("verify over {}: {e}", socket.display()));
    answers[0]["result"].as_str().unwrap_or("?").to_owned()
}

// ---------------------------------------------------------------------------
// Completions

#[test]
fn completions_need_no_configuration() {
    // Not root-only: completions touch neither a config nor a store.
    let dir = tempfile::tempdir().expect("temp dir");
    for shell in ["bash", "zsh", "fish"] {
        let output = Command::new(otpctl_bin())
            .args(["--config"])
            .arg(dir.path().join("no-such-otpd.toml"))
            .args(["completions", shell])
            .current_dir(dir.path())
            .output()
            .expect("run otpctl completions");
        assert_success(&output, &format!("otpctl completions {shell}"));
        let text = stdout(&output);
        assert!(
            text.contains("otpctl") && text.contains("import") && text.contains("json"),
            "completions {shell} look empty: {}",
            describe(&output)
        );
    }
    let output = Command::new(otpctl_bin())
        .args(["completions", "bash"])
        .current_dir(dir.path())
        .output()
        .expect("run otpctl completions");
    assert_success(&output, "otpctl completions bash without --config");
    assert!(!output.stdout.is_empty());
    assert!(
        fs::read_dir(dir.path()).expect("read dir").next().is_none(),
        "completions created files"
    );
    let output = Command::new(otpctl_bin())
        .args(["completions", "tcsh"])
        .output()
        .expect("run otpctl completions");
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
}

// ---------------------------------------------------------------------------
// issue, confirm, resend, show, list, test, unlock, resync, revoke, audit

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn every_subcommand_against_a_running_otpd() {
    require_lifecycle_peers();
    let env = TestEnv::start();
    let socket = env.socket_path();

    // issue --json (checked by the harness), activate, confirm --json.
    let secret = env.enrol_active("alice");
    let alice = env.show("alice");
    assert_eq!(alice["state"], "active", "{alice}");
    assert_eq!(alice["user"], "alice", "{alice}");
    assert!(alice["tokens"].is_array(), "{alice}");

    // resend: a second setup mail for a token not yet activated.
    let bob = env.issue("bob", "bob@example.jp", PASSWORD);
    env.wait_for_mails(2);
    let output = env.otpctl(&["resend", "bob"], "");
    assert_success(&output, "otpctl resend bob");
    let mails = env.wait_for_mails(3);
    let for_bob = mails
        .iter()
        .filter(|m| m.everything().contains(&bob.user_id))
        .count();
    assert_eq!(for_bob, 2, "resend sent no second mail for bob");
    let output = env.otpctl(&["resend", "alice"], "");
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));

    // list --json holds both.
    let list = env.list();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(listed(&env, "bob")["state"], "issued");
    let output = env.otpctl(&["show", "bob", "--json"], "");
    assert_success(&output, "otpctl show bob --json");
    assert_eq!(stdout_json(&output)["user_id"], bob.user_id.as_str());

    // test: the current code is accepted once.
    wait_for_fresh_step(60);
    let step = now_unix() / 60 * 60;
    let code = oathtool_code_at(&secret, 60, step);
    assert!(env.otpctl_test("alice", &code), "the current code");
    assert!(!env.otpctl_test("alice", &code), "a replayed code");

    // Five wrong codes lock the token: the next step's code is refused
    // until `unlock`.
    for wrong in wrong_codes(&secret, 5) {
        assert!(!env.otpctl_test("alice", &wrong), "wrong code {wrong}");
    }
    let next = oathtool_code_at(&secret, 60, step + 60);
    assert_eq!(verify(&socket, "alice", &next), "reject", "locked");
    let output = env.otpctl(&["unlock", "alice"], "");
    assert_success(&output, "otpctl unlock alice");
    assert_eq!(verify(&socket, "alice", &next), "accept", "unlocked");
    let output = env.otpctl(&["unlock", "nobody"], "");
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));

    // resync: a phone 10 minutes ahead; afterwards its next code works.
    wait_for_fresh_step(60);
    let here = now_unix() / 60 * 60;
    let ahead1 = oathtool_code_at(&secret, 60, here + 600);
    let ahead2 = oathtool_code_at(&secret, 60, here + 660);
    let output = env.otpctl(&["resync", "alice", &ahead1, &ahead2], "");
    assert_success(&output, "otpctl resync alice");
    let ahead3 = oathtool_code_at(&secret, 60, here + 720);
    assert_eq!(verify(&socket, "alice", &ahead3), "accept", "after resync");
    let output = env.otpctl(&["resync", "alice", &ahead2, &ahead1], "");
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));

    // revoke: alice's codes are refused from now on.
    let output = env.otpctl(&["revoke", "alice"], "");
    assert_success(&output, "otpctl revoke alice");
    let ahead4 = oathtool_code_at(&secret, 60, here + 780);
    assert_eq!(verify(&socket, "alice", &ahead4), "reject", "revoked");
    assert_eq!(env.show("alice")["state"], "revoked");
    let output = env.otpctl(&["revoke", "alice"], "");
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));

    // audit --json: the decisions above, filtered by user and time.
    let output = env.otpctl(&["audit", "--json"], "");
    assert_success(&output, "otpctl audit --json");
    let all = stdout_json_lines(&output);
    assert!(all.iter().any(|e| e["user"] == "bob"), "{all:?}");
    let today = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .expect("date");
    let today = stdout(&today).trim().to_owned();
    let output = env.otpctl(
        &["audit", "--user", "alice", "--since", &today, "--json"],
        "",
    );
    assert_success(&output, "otpctl audit --user alice --since today --json");
    let entries = stdout_json_lines(&output);
    assert!(entries.iter().all(|e| e["user"] == "alice"), "{entries:?}");
    for (channel, reason) in [
        ("cli", "revoked"),
        ("cli", "unlocked"),
        ("cli", "resynchronised"),
    ] {
        assert!(
            entries
                .iter()
                .any(|e| e["channel"] == channel
                    && e["reason"].as_str().unwrap_or("").contains(reason)),
            "no {channel} entry {reason:?}: {entries:?}"
        );
    }
    assert!(
        entries
            .iter()
            .any(|e| e["channel"] == "pam" && e["result"] == "ok"),
        "no accepted socket verification: {entries:?}"
    );
    let output = env.otpctl(&["audit", "--since", "2999-01-01", "--json"], "");
    assert_success(&output, "otpctl audit --since 2999-01-01");
    assert_eq!(stdout(&output), "");
}

// ---------------------------------------------------------------------------
// import, then PAM logins

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn imported_tokens_log_in_through_pam() {
    require_lifecycle_peers();
    let env = TestEnv::start();
    let pam = PamService::new(&format!("socket={}", env.socket_path().display()), &[]);
    let work = env.root().join("import");
    fs::create_dir(&work).expect("import dir");

    // CSV: one 30-second token with defaults, one 60-second token in full.
    let csv30 = random_secret();
    let csv60 = random_secret();
    let csv = work.join("tokens.csv");
    fs::write(
        &csv,
        format!(
            "# user,secret[,period,digits,algorithm]\ncsv30,{csv30}\n\ncsv60,{csv60},60,6,SHA1\n"
        ),
    )
    .expect("write csv");
    let answer = import_ok(&env, "csv", &[csv.to_str().expect("utf-8")]);
    assert_eq!(answer["imported"], 2, "{answer}");
    assert_eq!(answer["users"], json!(["csv30", "csv60"]), "{answer}");
    assert_eq!(listed(&env, "csv30")["state"], "active");
    assert_eq!(listed(&env, "csv30")["period"], 30);
    assert_eq!(listed(&env, "csv60")["period"], 60);

    // google-authenticator files: a directory in the `secret=/dir/${USER}`
    // layout, and one `.google_authenticator` with --user.
    let ga_dir = work.join("ga");
    fs::create_dir(&ga_dir).expect("ga dir");
    let ga1 = google_authenticator_file(&ga_dir.join("gauser1"));
    let ga2 = google_authenticator_file(&ga_dir.join("gauser2"));
    let home = work.join("home");
    fs::create_dir(&home).expect("home");
    let dotfile = home.join(".google_authenticator");
    let ga3 = google_authenticator_file(&dotfile);
    let answer = import_ok(
        &env,
        "google-authenticator",
        &[ga_dir.to_str().expect("utf-8")],
    );
    assert_eq!(answer["imported"], 2, "{answer}");
    assert_eq!(answer["users"], json!(["gauser1", "gauser2"]), "{answer}");
    let answer = import_ok(
        &env,
        "google-authenticator",
        &["--user", "gauser3", dotfile.to_str().expect("utf-8")],
    );
    assert_eq!(answer["users"], json!(["gauser3"]), "{answer}");
    for user in ["gauser1", "gauser2", "gauser3"] {
        let e = listed(&env, user);
        assert_eq!(e["state"], "active", "{e}");
        assert_eq!(e["period"], 30, "{e}");
    }

    // Importing a user again without --replace changes nothing.
    let before = list_json(&env);
    let output = env.otpctl(
        &["import", "--format", "csv", csv.to_str().expect("utf-8")],
        "",
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(list_json(&env), before);

    // Logins through pamtester with oathtool's codes.
    wait_for_fresh_step(30);
    for (user, secret) in [
        ("csv30", &csv30),
        ("gauser1", &ga1),
        ("gauser2", &ga2),
        ("gauser3", &ga3),
    ] {
        let wrong = oathtool_code_at(secret, 30, now_unix() - 86_400);
        assert_login(&pam, &env, user, &wrong, false);
        let code = oathtool_code(secret, 30);
        assert_login(&pam, &env, user, &code, true);
        assert_login(&pam, &env, user, &code, false);
    }
    wait_for_fresh_step(60);
    assert_login(&pam, &env, "csv60", &oathtool_code(&csv60, 60), true);
    assert_login(&pam, &env, "nosuchuser", "123456", false);

    // --replace gives csv30 a new secret: the old one no longer works.
    let fresh = random_secret();
    let replacement = work.join("replace.csv");
    fs::write(&replacement, format!("csv30,{fresh},30\n")).expect("write");
    let answer = import_ok(
        &env,
        "csv",
        &["--replace", replacement.to_str().expect("utf-8")],
    );
    assert_eq!(answer["imported"], 1, "{answer}");
    wait_for_fresh_step(30);
    let step = now_unix() / 30 * 30;
    assert_login(
        &pam,
        &env,
        "csv30",
        &oathtool_code_at(&csv30, 30, step + 30),
        false,
    );
    assert_login(
        &pam,
        &env,
        "csv30",
        &oathtool_code_at(&fresh, 30, step),
        true,
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_malformed_import_changes_nothing() {
    require_lifecycle_peers();
    let env = TestEnv::start();
    let work = env.root().join("bad");
    fs::create_dir(&work).expect("dir");
    let good = work.join("good.csv");
    fs::write(&good, format!("first,{}\n", random_secret())).expect("write");
    import_ok(&env, "csv", &[good.to_str().expect("utf-8")]);
    let before = list_json(&env);

    // A CSV with good lines and one bad line.
    let bad_csv = work.join("bad.csv");
    fs::write(
        &bad_csv,
        format!(
            "second,{}\nthird,not-base32!\nfourth,{},30\n",
            random_secret(),
            random_secret()
        ),
    )
    .expect("write");
    // A good CSV followed by a file with a bad period: both refused.
    let bad_period = work.join("period.csv");
    fs::write(&bad_period, format!("fifth,{},5\n", random_secret())).expect("write");
    // A google-authenticator directory with one counter-based (HOTP) file
    // beside a good one, and a file that is not one at all.
    let ga = work.join("ga");
    fs::create_dir(&ga).expect("dir");
    google_authenticator_file(&ga.join("sixth"));
    fs::write(
        ga.join("seventh"),
        format!("{}\n\" HOTP_COUNTER 1\n", random_secret()),
    )
    .expect("write");
    let garbage = work.join("garbage");
    fs::write(&garbage, "this is not a token file\n").expect("write");
    // The same user twice.
    let twice = work.join("twice.csv");
    fs::write(
        &twice,
        format!("eighth,{}\neighth,{}\n", random_secret(), random_secret()),
    )
    .expect("write");

    let path = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let attempts: Vec<Vec<String>> = vec![
        vec!["csv".into(), path(&bad_csv)],
        vec!["csv".into(), path(&good), path(&bad_period)],
        vec!["google-authenticator".into(), path(&ga)],
        vec![
            "google-authenticator".into(),
            "--user".into(),
            "ninth".into(),
            path(&garbage),
        ],
        vec!["csv".into(), path(&twice)],
        vec!["csv".into(), path(&work.join("missing.csv"))],
    ];
    for attempt in attempts {
        let mut args = vec!["import", "--json", "--format"];
        args.extend(attempt.iter().map(String::as_str));
        let output = env.otpctl(&args, "");
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            describe(&output)
        );
        assert!(
            stderr(&output).contains("nothing imported"),
            "{args:?}: {}",
            describe(&output)
        );
        assert_eq!(list_json(&env), before, "{args:?} changed the store");
    }
}

// ---------------------------------------------------------------------------
// backup under load, restored into a fresh otpd

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_backup_under_load_is_served_by_a_fresh_otpd() {
    require_lifecycle_peers();
    let env = TestEnv::start();
    let keep = random_secret();
    let mut csv = format!("keeper,{keep},60\n");
    for n in 0..20 {
        csv.push_str(&format!("load{n},{},60\n", random_secret()));
    }
    let file = env.root().join("users.csv");
    fs::write(&file, csv).expect("write csv");
    let answer = import_ok(&env, "csv", &[file.to_str().expect("utf-8")]);
    assert_eq!(answer["imported"], 21, "{answer}");

    // Threads send verify requests (wrong codes and unknown users: each is
    // a write to the store) while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for t in 0..4 {
        let stop = Arc::clone(&stop);
        let answered = Arc::clone(&answered);
        let socket = env.socket_path();
        threads.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let requests: Vec<Value> = (0..10)
                    .map(|i| {
                        n += 1;
                        let user = if i % 3 == 0 {
                            format!("ghost{t}")
                        } else {
                            format!("load{}", (n + t) % 20)
                        };
                        verify_request(&user, &format!("{:06}", (n * 7919 + t) % 1_000_000))
                    })
                    .collect();
                let answers = socket_exchange(&socket, &requests).expect("load request");
                for a in &answers {
                    assert!(
                        a["result"] == "reject" || a["result"] == "accept",
                        "load answer {a}"
                    );
                }
                answered.fetch_add(answers.len(), Ordering::Relaxed);
            }
        }));
    }
    while answered.load(Ordering::Relaxed) < 200 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let copy = env.root().join("backup.db");
    let output = env.otpctl(&["backup", copy.to_str().expect("utf-8")], "");
    let during = answered.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    let after = answered.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("load thread");
    }
    assert_success(&output, "otpctl backup under load");
    assert!(after > during, "the load stopped during the backup");
    assert_eq!(
        fs::metadata(&copy).expect("copy").permissions().mode() & 0o777,
        0o600
    );
    // An existing file is not overwritten.
    let output = env.otpctl(&["backup", copy.to_str().expect("utf-8")], "");
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));

    let check = Command::new("sqlite3")
        .arg(&copy)
        .arg("PRAGMA integrity_check")
        .output()
        .expect("run sqlite3");
    assert_success(&check, "sqlite3 PRAGMA integrity_check");
    assert_eq!(stdout(&check).trim(), "ok");

    // A fresh otpd on the copy and the original key file.
    let restored = env.root().join("restored");
    let state = restored.join("state");
    fs::create_dir_all(&state).expect("state dir");
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::copy(&copy, state.join(otpstore::DB_FILE)).expect("copy db");
    let key = state.join(otpstore::KEY_FILE);
    fs::copy(env.state_dir.join(otpstore::KEY_FILE), &key).expect("copy key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod key");
    let socket = restored.join("otpd.sock");
    let daemon = start_socket_otpd(&restored, &state, &socket, "normal");

    wait_for_fresh_step(60);
    let step = now_unix() / 60 * 60;
    assert_eq!(
        verify(&socket, "keeper", &oathtool_code_at(&keep, 60, step)),
        "accept",
        "the restored otpd verifies an imported user's code"
    );
    // revoke on the restored store: keeper's next code is refused there.
    let restored_ctl = |args: &[&str]| {
        Command::new(otpctl_bin())
            .arg("--config")
            .arg(restored.join("otpd.toml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run otpctl")
    };
    let listed_there = restored_ctl(&["list", "--json"]);
    assert_success(&listed_there, "otpctl list on the restored store");
    assert_eq!(enrolment_array(&stdout_json(&listed_there)).len(), 21);
    assert_success(&restored_ctl(&["revoke", "keeper"]), "otpctl revoke keeper");
    assert_eq!(
        verify(&socket, "keeper", &oathtool_code_at(&keep, 60, step + 60)),
        "reject",
        "a revoked user's code"
    );
    drop(daemon);

    // The original otpd still accepts keeper, until revoked there too.
    assert_eq!(
        verify(
            &env.socket_path(),
            "keeper",
            &oathtool_code_at(&keep, 60, step)
        ),
        "accept"
    );
    let output = env.otpctl(&["revoke", "keeper"], "");
    assert_success(&output, "otpctl revoke keeper");
    assert!(!env.otpctl_test("keeper", &oathtool_code_at(&keep, 60, step + 60)));
}

// ---------------------------------------------------------------------------
// privilege drop

/// A system user made for the test, removed on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn create() -> TestUser {
        let name = format!("otpdlc{}", std::process::id());
        let output = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home", "--shell"])
            .arg("/usr/sbin/nologin")
            .arg(&name)
            .output()
            .expect("run useradd");
        assert_success(&output, "useradd");
        let id = |flag: &str| -> u32 {
            let output = Command::new("id")
                .arg(flag)
                .arg(&name)
                .output()
                .expect("id");
            assert_success(&output, "id");
            stdout(&output).trim().parse().expect("numeric id")
        };
        let (uid, gid) = (id("-u"), id("-g"));
        TestUser { name, uid, gid }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

fn chown_tree(path: &Path, user: &TestUser) {
    let output = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", user.uid, user.gid))
        .arg(path)
        .output()
        .expect("run chown");
    assert_success(&output, "chown -R");
}

/// Every entry of `dir` (not recursive) with its owner.
fn owners(dir: &Path) -> Vec<(String, u32, u32)> {
    fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| {
            let meta = fs::symlink_metadata(e.path()).expect("metadata");
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.uid(),
                meta.gid(),
            )
        })
        .collect()
}

/// `otpctl list --json`, as root, with a config of its own (`root/NAME.toml`,
/// mode 0600) whose `state_dir` is `state`.
fn list_on_state_dir(root: &Path, name: &str, state: &Path) -> Output {
    let config = root.join(format!("{name}.toml"));
    e2e::write_private_file(
        &config,
        &format!(
            "service_id = \"{}\"\nissuer = \"{name}\"\nstate_dir = \"{}\"\n",
            name.to_uppercase(),
            state.display()
        ),
    );
    Command::new(otpctl_bin())
        .arg("--config")
        .arg(&config)
        .args(["list", "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("run otpctl")
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn root_otpctl_becomes_the_owner_of_state_dir() {
    require_lifecycle_peers();
    let user = TestUser::create();
    let mut env = TestEnv::start();
    let secret = random_secret();
    let file = env.root().join("one.csv");
    fs::write(&file, format!("first,{secret},60\n")).expect("write");
    import_ok(&env, "csv", &[file.to_str().expect("utf-8")]);

    // The test user must be able to reach state_dir inside the temp dir.
    fs::set_permissions(env.root(), fs::Permissions::from_mode(0o711)).expect("chmod root");
    env.stop_otpd();
    chown_tree(&env.state_dir, &user);

    let output = env.otpctl(&["list", "--json"], "");
    assert_success(
        &output,
        "otpctl list as root on a state_dir of another user",
    );
    let list = enrolment_array(&stdout_json(&output));
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["user"], "first");
    // A writing command: the audit entry goes into the database.
    let second = env.root().join("two.csv");
    fs::write(&second, format!("second,{},60\n", random_secret())).expect("write");
    fs::set_permissions(&second, fs::Permissions::from_mode(0o644)).expect("chmod");
    import_ok(&env, "csv", &[second.to_str().expect("utf-8")]);
    let audit = env.otpctl(&["audit", "--json"], "");
    assert_success(&audit, "otpctl audit");
    let entries = stdout_json_lines(&audit);
    let peers: Vec<&str> = entries
        .iter()
        .filter(|e| e["user"] == "second")
        .filter_map(|e| e["peer"].as_str())
        .collect();
    assert_eq!(
        peers,
        [format!("uid={}", user.uid)],
        "the import ran as the owner of state_dir"
    );
    for (name, uid, gid) in owners(&env.state_dir) {
        assert_eq!((uid, gid), (user.uid, user.gid), "{name} in state_dir");
    }

    // A state_dir of that user without a store yet: the database and key
    // file otpctl creates belong to that user.
    let fresh = env.root().join("fresh-state");
    fs::create_dir(&fresh).expect("dir");
    fs::set_permissions(&fresh, fs::Permissions::from_mode(0o700)).expect("chmod");
    chown_tree(&fresh, &user);
    let output = list_on_state_dir(env.root(), "fresh", &fresh);
    assert_success(&output, "otpctl list on a fresh state_dir of another user");
    assert_eq!(stdout_json(&output), json!([]));
    let created = owners(&fresh);
    let names: Vec<&str> = created.iter().map(|(n, _, _)| n.as_str()).collect();
    assert!(names.contains(&otpstore::DB_FILE), "{names:?}");
    assert!(names.contains(&otpstore::KEY_FILE), "{names:?}");
    for (name, uid, gid) in &created {
        assert_eq!(
            (*uid, *gid),
            (user.uid, user.gid),
            "{name} in the fresh state_dir"
        );
    }

    // A uid without a passwd entry: its gid is the directory's, no groups.
    let (ghost_uid, ghost_gid) = (54_321_u32, 54_322_u32);
    let known = Command::new("getent")
        .args(["passwd", &ghost_uid.to_string()])
        .output()
        .expect("run getent");
    if !known.status.success() {
        let ghost = env.root().join("ghost-state");
        fs::create_dir(&ghost).expect("dir");
        fs::set_permissions(&ghost, fs::Permissions::from_mode(0o700)).expect("chmod");
        let output = Command::new("chown")
            .arg(format!("{ghost_uid}:{ghost_gid}"))
            .arg(&ghost)
            .output()
            .expect("chown");
        assert_success(&output, "chown ghost-state");
        let output = list_on_state_dir(env.root(), "ghost", &ghost);
        assert_success(
            &output,
            "otpctl list on a state_dir of a uid without passwd entry",
        );
        for (name, uid, gid) in owners(&ghost) {
            assert_eq!((uid, gid), (ghost_uid, ghost_gid), "{name} in ghost-state");
        }
    }

    // otpd (root here) serves the store that otpctl wrote as the user.
    env.start_otpd_again();
    wait_for_fresh_step(60);
    assert_eq!(
        verify(&env.socket_path(), "first", &oathtool_code(&secret, 60)),
        "accept"
    );
}
