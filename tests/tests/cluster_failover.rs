//! otpd nodes on one PostgreSQL database when something fails:
//!
//! - A NAS behind FreeRADIUS with a fail-over pool of two nodes: the first
//!   node is killed (SIGKILL) under a radclient load with replays of
//!   accepted codes. Logins go on through the second node, no code is
//!   accepted twice, and every Access-Accept the NAS saw is exactly one
//!   `ok` row of the audit table.
//! - PostgreSQL stopped under load: nobody gets in (the socket answers
//!   `error`, PAM says PAM_AUTHINFO_UNAVAIL, RADIUS stays silent, the page
//!   says try again later), otpd keeps running and answers within the
//!   store's deadline, serves again soon after the database is back, and
//!   no code tried during the outage was spent.
//! - Bad `[store]` settings at start: an error naming the setting, a
//!   non-zero exit, and a database left as it was; a node with another key
//!   file, or none, refuses the cluster's database.
//!
//! Root only. Peers: a private PostgreSQL server, FreeRADIUS and radclient,
//! pamtester, oathtool, aiosmtpd. Loopback only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use e2e::cluster::{radius_toml, Cluster};
use e2e::postgres::PrivatePostgres;
use e2e::{
    assert_success, describe, free_port, now_unix, oathtool_code_at, otpd_bin,
    require_root_and_peers, run_with_input, said, stdout, stdout_json, write_private_file,
    FreeRadiusProxy, PamService, TestEnv, SERVICE_ID,
};
use serde_json::json;

/// Between FreeRADIUS (or radclient) and otpd.
const OTPD_SECRET: &str = "e2e-failover-otpd-secret";
/// Between radclient, the NAS, and FreeRADIUS.
const NAS_SECRET: &str = "e2e-failover-nas-secret";
/// The activation password of the enrolments issued here.
const PASSWORD: &str = "4321";
/// `timeout_ms` of [`Cluster::store_toml`].
const STORE_TIMEOUT_MS: u64 = 2000;

// pam_strerror(3) texts as pamtester prints them.
const SUCCESS: &str = "successfully authenticated";
const AUTHINFO_UNAVAIL: &str = "Authentication service cannot retrieve authentication info";

// ---------------------------------------------------------------------------
// Helpers

/// A random base32 secret of 20 bytes (160 bits).
fn random_secret() -> String {
    let mut bytes = [0u8; 20];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    otpcore::totp::base32(&bytes).to_string()
}

/// A user with an active token and the one code of it a test uses.
struct User {
    name: String,
    secret: String,
    code: String,
}

/// Imports `count` users `PREFIX000`... with random secrets (60-second
/// codes) as active tokens with `otpctl import` through `node`, and gives
/// each the code of the current step: with `window = 1` it stays valid for
/// at least a minute.
fn import_users(node: &TestEnv, prefix: &str, count: usize) -> Vec<User> {
    let now = now_unix();
    let users: Vec<User> = (0..count)
        .map(|i| {
            let secret = random_secret();
            User {
                name: format!("{prefix}{i:03}"),
                code: oathtool_code_at(&secret, 60, now),
                secret,
            }
        })
        .collect();
    let csv: String = users
        .iter()
        .map(|u| format!("{},{},60\n", u.name, u.secret))
        .collect();
    let path = node.root().join(format!("{prefix}.csv"));
    write_private_file(&path, &csv);
    let path = path.to_str().expect("utf-8 path");
    let output = node.otpctl(&["import", "--format", "csv", "--json", path], "");
    assert_success(&output, "otpctl import");
    assert_eq!(
        stdout_json(&output)["imported"],
        count,
        "{}",
        describe(&output)
    );
    users
}

/// What a RADIUS client got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Accept,
    Reject,
    /// No answer within radclient's timeout.
    Silence,
}

/// One PAP Access-Request with a Message-Authenticator from `radclient`
/// to 127.0.0.1:`port`, no retransmission, waiting `wait_s` seconds.
fn radclient(port: u16, secret: &str, user: &str, code: &str, wait_s: u32) -> Answer {
    let output = run_with_input(
        Command::new("radclient")
            .args(["-x", "-r", "1", "-t", &wait_s.to_string()])
            .arg(format!("127.0.0.1:{port}"))
            .arg("auth")
            .arg(secret),
        &format!(
            "User-Name = \"{user}\"\nUser-Password = \"{code}\"\nMessage-Authenticator = 0x00\n"
        ),
    );
    let text = stdout(&output);
    if text.contains("Received Access-Accept") {
        Answer::Accept
    } else if text.contains("Received Access-Reject") {
        Answer::Reject
    } else {
        assert!(
            said(&output).contains("No reply"),
            "radclient neither got an answer nor timed out: {}",
            describe(&output)
        );
        Answer::Silence
    }
}

/// One verify request over `node`'s socket: "accept", "reject" or "error";
/// panics when otpd does not answer at all.
fn verify(node: &TestEnv, user: &str, code: &str) -> String {
    let answer = node.socket_request(&json!({
        "op": "verify", "user": user, "otp": code, "service": "cluster-failover",
    }));
    answer["result"].as_str().unwrap_or("?").to_owned()
}

/// Whether process `pid` is alive (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// The rows of the audit table for `channel`: (username, result, peer).
fn audit_rows(pg: &PrivatePostgres, db: &str, channel: &str) -> Vec<(String, String, String)> {
    pg.psql(
        db,
        &format!(
            "SELECT username, result, peer FROM audit WHERE channel = '{channel}' ORDER BY id;"
        ),
    )
    .lines()
    .map(|line| {
        let mut fields = line.splitn(3, '|').map(str::to_owned);
        let mut next = || fields.next().unwrap_or_default();
        (next(), next(), next())
    })
    .collect()
}

// ---------------------------------------------------------------------------
// FreeRADIUS with a fail-over pool

/// A home server that gives up on a request after 2 s, is a zombie after
/// one such time-out, and is probed with Status-Server from then on.
const HOME_SERVER: &str = r#"home_server NAME {
	type = auth
	ipaddr = 127.0.0.1
	port = PORT
	secret = SECRET
	response_window = 2
	response_timeouts = 1
	zombie_period = 4
	status_check = status-server
	check_interval = 2
	check_timeout = 1
	num_answers_to_alive = 3
}
"#;

/// A proxy for the realm OTP to a fail-over pool of the otpd nodes on
/// `homes` (RADIUS ports on 127.0.0.1, in the order tried).
fn start_freeradius(homes: &[u16]) -> FreeRadiusProxy {
    FreeRadiusProxy::start(NAS_SECRET, |raddb| {
        // Rejects at once: the replays of the load are rejected, and a
        // second's delay for each would only slow the test.
        let radiusd = fs::read_to_string(raddb.join("radiusd.conf")).expect("radiusd.conf");
        assert_eq!(radiusd.matches("\treject_delay = 1\n").count(), 1);
        fs::write(
            raddb.join("radiusd.conf"),
            radiusd.replace("\treject_delay = 1\n", "\treject_delay = 0\n"),
        )
        .expect("radiusd.conf");
        let mut proxy = String::from("proxy server {\n\tdefault_fallback = no\n}\n");
        let mut pool = String::from("home_server_pool otpd_pool {\n\ttype = fail-over\n");
        for (i, home) in homes.iter().enumerate() {
            let name = format!("otpd{i}");
            proxy.push_str(
                &HOME_SERVER
                    .replace("NAME", &name)
                    .replace("PORT", &home.to_string())
                    .replace("SECRET", OTPD_SECRET),
            );
            pool.push_str(&format!("\thome_server = {name}\n"));
        }
        pool.push_str("}\n");
        proxy.push_str(&pool);
        proxy.push_str("realm OTP {\n\tauth_pool = otpd_pool\n}\n");
        fs::write(raddb.join("proxy.conf"), proxy).expect("proxy.conf");
    })
}

// ---------------------------------------------------------------------------
// Fail-over of a NAS from a killed node to the next

/// Users of the fail-over load, each logging in once.
const NAS_USERS: usize = 160;
/// radclient processes at a time.
const NAS_WORKERS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Try {
    /// The user's code, the first time.
    Fresh,
    /// The code again, after an Access-Accept for it.
    Replay,
    /// The code again, after the first try got no Access-Accept.
    Retry,
}

/// One Access-Request the NAS sent, and what came back when.
#[derive(Debug, Clone)]
struct Sent {
    user: usize,
    kind: Try,
    answer: Answer,
    start: Instant,
    end: Instant,
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_nas_fails_over_to_the_second_node_when_the_first_is_killed_under_load() {
    require_root_and_peers();
    let pg = PrivatePostgres::shared();
    let cluster = Cluster::new(pg, "failover_nas");
    let (first_port, second_port) = (free_port(), free_port());
    // The nodes name the NAS differently, so the audit trail tells which
    // node decided.
    let mut first = cluster.node(true, &radius_toml(first_port, "first", OTPD_SECRET));
    let second = cluster.node(false, &radius_toml(second_port, "second", OTPD_SECRET));
    let users = import_users(&first, "nas", NAS_USERS);
    let freeradius = start_freeradius(&[first_port, second_port]);
    let nas = |user: usize, kind: Try| -> Sent {
        let start = Instant::now();
        let u = &users[user];
        let answer = radclient(
            freeradius.port,
            NAS_SECRET,
            &format!("{}@OTP", u.name),
            &u.code,
            // FreeRADIUS's response_window and a margin.
            4,
        );
        Sent {
            user,
            kind,
            answer,
            start,
            end: Instant::now(),
        }
    };

    // Each worker logs its users in once and replays the code of the user
    // before, once it was accepted. The first node dies when a third of
    // the users are through.
    let sent = Mutex::new(Vec::new());
    let through = AtomicUsize::new(0);
    let mut killed = None;
    thread::scope(|s| {
        for worker in 0..NAS_WORKERS {
            let (sent, through, nas) = (&sent, &through, &nas);
            s.spawn(move || {
                let mut accepted = None;
                for user in (worker..NAS_USERS).step_by(NAS_WORKERS) {
                    let fresh = nas(user, Try::Fresh);
                    through.fetch_add(1, Ordering::SeqCst);
                    let mut mine = vec![fresh.clone()];
                    if let Some(before) = accepted.take() {
                        mine.push(nas(before, Try::Replay));
                    }
                    if fresh.answer == Answer::Accept {
                        accepted = Some(user);
                    }
                    sent.lock().unwrap().extend(mine);
                }
                if let Some(before) = accepted {
                    let replay = nas(before, Try::Replay);
                    sent.lock().unwrap().push(replay);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while through.load(Ordering::SeqCst) < NAS_USERS / 3 {
            assert!(Instant::now() < deadline, "the load does not get through");
            thread::sleep(Duration::from_millis(5));
        }
        let at = Instant::now();
        first.kill_otpd_9();
        killed = Some(at);
    });
    let killed = killed.expect("the first node was killed");
    let mut sent = sent.into_inner().unwrap();

    // A user whose login failed tries the same code again.
    let failed: Vec<usize> = sent
        .iter()
        .filter(|s| s.kind == Try::Fresh && s.answer != Answer::Accept)
        .map(|s| s.user)
        .collect();
    for &user in &failed {
        sent.push(nas(user, Try::Retry));
    }
    let logs = || {
        format!(
            "--- freeradius ---\n{}\n--- second node ---\n{}",
            freeradius.log(),
            second.otpd_log()
        )
    };

    // What the NAS saw: no code accepted twice, no replay accepted, and
    // only logins around the kill failed.
    let mut accepts = vec![0usize; NAS_USERS];
    for s in sent.iter().filter(|s| s.answer == Answer::Accept) {
        accepts[s.user] += 1;
    }
    let twice: Vec<&str> = (0..NAS_USERS)
        .filter(|&u| accepts[u] > 1)
        .map(|u| users[u].name.as_str())
        .collect();
    assert!(twice.is_empty(), "codes accepted twice: {twice:?}");
    let replays: Vec<&Sent> = sent.iter().filter(|s| s.kind == Try::Replay).collect();
    assert!(
        replays.iter().all(|s| s.answer == Answer::Reject),
        "a replay was accepted or not answered: {:?}\n{}",
        replays
            .iter()
            .filter(|s| s.answer != Answer::Reject)
            .collect::<Vec<_>>(),
        logs()
    );
    let early_failures: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.kind == Try::Fresh && s.answer != Answer::Accept && s.end < killed)
        .collect();
    assert!(
        early_failures.is_empty(),
        "logins failed before the kill: {early_failures:?}\n{}",
        logs()
    );
    let after_kill = sent
        .iter()
        .filter(|s| s.answer == Answer::Accept && s.start > killed)
        .count();
    assert!(
        after_kill >= NAS_USERS / 2,
        "only {after_kill} logins were accepted after the kill\n{}",
        logs()
    );

    // What the database saw: at most one `ok` row per user (one code
    // each); one for every Access-Accept; and the only others are logins
    // the first node committed just before it died, whose answer was lost.
    let rows = audit_rows(pg, &cluster.db.name, "radius");
    let index: HashMap<&str, usize> = users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.name.as_str(), i))
        .collect();
    let mut ok = vec![Vec::new(); NAS_USERS];
    for (user, result, peer) in &rows {
        let i = *index
            .get(user.as_str())
            .unwrap_or_else(|| panic!("an audit row for an unknown user {user:?}"));
        if result == "ok" {
            ok[i].push(peer.clone());
        }
    }
    let mut lost = Vec::new();
    for (i, peers) in ok.iter().enumerate() {
        let name = &users[i].name;
        assert!(peers.len() <= 1, "{name} has {} ok rows", peers.len());
        match (accepts[i], peers.first()) {
            (1, Some(_)) => {}
            (1, None) => panic!("{name} got an Access-Accept without an ok row\n{}", logs()),
            (_, Some(peer)) => {
                assert!(
                    peer.starts_with("nas=first "),
                    "{name}: accepted by {peer}, but the NAS never heard"
                );
                let in_flight = sent.iter().any(|s| {
                    s.user == i && s.kind == Try::Fresh && s.start <= killed && s.end >= killed
                });
                assert!(
                    in_flight,
                    "{name}: an ok row without an Access-Accept, not at the kill\n{}",
                    logs()
                );
                lost.push(name.as_str());
            }
            (_, None) => {}
        }
    }
    let accepted: usize = accepts.iter().sum();
    let ok_rows: usize = ok.iter().map(Vec::len).sum();
    assert_eq!(ok_rows, accepted + lost.len());
    assert!(lost.len() <= NAS_WORKERS, "lost answers: {lost:?}");
    let by = |node: &str| {
        ok.iter()
            .flatten()
            .filter(|p| p.starts_with(&format!("nas={node} ")))
            .count()
    };
    let (by_first, by_second) = (by("first"), by("second"));
    assert!(
        by_first > 0,
        "the first node decided nothing before its kill"
    );
    assert!(
        by_second >= after_kill,
        "{by_second} ok rows by the second node, {after_kill} accepts after the kill"
    );
    assert!(second.otpd_pid().is_some_and(alive), "{}", logs());
    let first_sent = sent.iter().map(|s| s.start).min().expect("requests");
    let last_answer = sent.iter().map(|s| s.end).max().expect("requests");
    let retried_ok = sent
        .iter()
        .filter(|s| s.kind == Try::Retry && s.answer == Answer::Accept)
        .count();
    eprintln!(
        "fail-over: {NAS_USERS} users, {} requests in {:?} ({} replays, all refused); \
         {accepted} Access-Accepts = {ok_rows} ok rows - {} answers lost at the kill; \
         {} logins failed at the kill, {retried_ok} of them accepted when tried again; \
         {after_kill} accepts after the kill; ok rows by node: first {by_first}, second {by_second}",
        sent.len(),
        last_answer - first_sent,
        replays.len(),
        lost.len(),
        failed.len()
    );
}

// ---------------------------------------------------------------------------
// PostgreSQL stopped under load

/// How long an answer may take while the database is down: the store's
/// deadline for a batch that was waiting, the deadline for its own, and a
/// margin for a loaded machine.
const ANSWER_BOUND: Duration = Duration::from_millis(2 * STORE_TIMEOUT_MS + 2000);

/// One request of the load: which channel, whether with a valid code,
/// for whom, what came back, and when.
#[derive(Debug, Clone)]
struct Load {
    radius: bool,
    valid: bool,
    user: usize,
    /// "accept", "reject", "error" (socket) or "silence" (RADIUS).
    result: String,
    start: Instant,
    end: Instant,
}

/// Sets its flag when dropped.
struct Stopper<'a>(&'a AtomicBool);

impl Drop for Stopper<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn nobody_gets_in_while_postgresql_is_down_and_otpd_serves_again_when_it_is_back() {
    require_root_and_peers();
    let pg = PrivatePostgres::start();
    let cluster = Cluster::new(&pg, "outage");
    let radius_port = free_port();
    let node = cluster.node(true, &radius_toml(radius_port, "gw", OTPD_SECRET));
    let pid = node.otpd_pid().expect("otpd runs");
    // The load's users, then three kept for the checks by hand.
    let load_users = 90;
    let users = import_users(&node, "out", load_users + 3);
    let (by_socket, by_pam, by_radius) = (load_users, load_users + 1, load_users + 2);
    // Wrong codes go to users of their own, so the load's users are never
    // locked.
    let wrongs = import_users(&node, "wrong", 3);
    let issued = node.issue("carol", "carol@example.jp", PASSWORD);
    let service = PamService::new(&format!("socket={}", node.socket_path().display()), &[]);
    let logs = || {
        format!(
            "--- otpd ---\n{}\n--- postgres ---\n{}",
            node.otpd_log(),
            pg.log()
        )
    };

    // Three workers, every 100 ms: a valid code (each user's once) or a
    // wrong one, by turns over the socket and over RADIUS.
    let next_user = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let load = Mutex::new(Vec::new());
    let one = |n: usize| -> Load {
        let radius = n % 2 == 1;
        let valid = n % 3 != 2;
        let user = if valid {
            next_user.fetch_add(1, Ordering::SeqCst)
        } else {
            n % wrongs.len()
        };
        let (name, code) = if valid && user < load_users {
            (&users[user].name, users[user].code.clone())
        } else {
            let u = &wrongs[user % wrongs.len()];
            (&u.name, e2e::wrong_code(&u.secret))
        };
        let valid = valid && user < load_users;
        let start = Instant::now();
        let result = if radius {
            match radclient(radius_port, OTPD_SECRET, name, &code, 2) {
                Answer::Accept => "accept",
                Answer::Reject => "reject",
                Answer::Silence => "silence",
            }
            .to_owned()
        } else {
            verify(&node, name, &code)
        };
        Load {
            radius,
            valid,
            user,
            result,
            start,
            end: Instant::now(),
        }
    };

    let mut times = HashMap::new();
    thread::scope(|s| {
        for worker in 0..3 {
            let (stop, load, one) = (&stop, &load, &one);
            s.spawn(move || {
                let mut n = worker;
                while !stop.load(Ordering::SeqCst) {
                    let done = one(n);
                    load.lock().unwrap().push(done);
                    n += 3;
                    thread::sleep(Duration::from_millis(100));
                }
            });
        }
        // The workers stop when this closure ends, also by a panic.
        let _workers = Stopper(&stop);
        thread::sleep(Duration::from_millis(1500));
        times.insert("stop", Instant::now());
        pg.stop();
        times.insert("stopped", Instant::now());

        // Down: the socket answers an error in time, PAM says the
        // information is unavailable, RADIUS says nothing at all (also to
        // a wrong code), the page says try again later.
        let user = &users[by_socket];
        let asked = Instant::now();
        let answer = verify(&node, &user.name, &user.code);
        let took = asked.elapsed();
        assert_eq!(
            answer,
            "error",
            "socket while the database is down\n{}",
            logs()
        );
        assert!(took < ANSWER_BOUND, "the socket answered after {took:?}");
        let user = &users[by_pam];
        let output = service.authenticate(&user.name, &format!("{}\n", user.code));
        assert!(
            output.status.code() == Some(1) && said(&output).contains(AUTHINFO_UNAVAIL),
            "pamtester while the database is down: {}\n{}",
            describe(&output),
            logs()
        );
        let user = &users[by_radius];
        for code in [user.code.clone(), e2e::wrong_code(&user.secret)] {
            let answer = radclient(radius_port, OTPD_SECRET, &user.name, &code, 3);
            assert_eq!(answer, Answer::Silence, "RADIUS while the database is down");
        }
        let asked = Instant::now();
        let (status, body) = node.activate(&issued.user_id, PASSWORD);
        assert!(
            (500..600).contains(&status)
                && body["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("try again later")),
            "POST /api/v1/activate while the database is down: {status} {body}"
        );
        let form = format!(
            "service_id={SERVICE_ID}&user_id={}&activation_password={PASSWORD}&lang=en",
            issued.user_id
        );
        let (status, page) = node.http_post_raw(
            "/setup",
            "application/x-www-form-urlencoded",
            form.as_bytes(),
        );
        let took = asked.elapsed();
        assert!(
            (500..600).contains(&status) && page.contains("try again later"),
            "the activation page while the database is down: {status}\n{page}"
        );
        assert!(took < 2 * ANSWER_BOUND, "the page answered after {took:?}");
        assert!(
            alive(pid) && node.otpd_pid() == Some(pid),
            "otpd died while the database was down\n{}",
            logs()
        );

        times.insert("restart", Instant::now());
        pg.start_again();
        let restarted = Instant::now();
        times.insert("restarted", restarted);
        // Answers resume: the code tried while the database was down was
        // not spent.
        let user = &users[by_socket];
        loop {
            let answer = verify(&node, &user.name, &user.code);
            if answer == "accept" {
                break;
            }
            assert_eq!(answer, "error", "{}", logs());
            assert!(
                restarted.elapsed() < Duration::from_secs(10),
                "no accept within 10 s of the restart\n{}",
                logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
        times.insert("resumed", Instant::now());
        thread::sleep(Duration::from_millis(1000));
    });
    let load = load.into_inner().unwrap();
    let at = |name: &str| times[name];
    let resume = at("resumed") - at("restarted");

    // After: PAM, RADIUS and the page work again with what failed before.
    let user = &users[by_pam];
    let output = service.authenticate(&user.name, &format!("{}\n", user.code));
    assert!(
        output.status.success() && said(&output).contains(SUCCESS),
        "pamtester after the restart: {}",
        describe(&output)
    );
    let user = &users[by_radius];
    let answer = radclient(radius_port, OTPD_SECRET, &user.name, &user.code, 3);
    assert_eq!(answer, Answer::Accept, "RADIUS after the restart");
    let token = node.activate_ok(&issued.user_id, PASSWORD);
    assert!(!token.secret.is_empty());
    assert!(alive(pid) && node.otpd_pid() == Some(pid), "{}", logs());

    // The load: while the database was down, only errors and silence;
    // never an answer past the bound; and the valid codes that did not get
    // in were not spent.
    let down: Vec<&Load> = load
        .iter()
        .filter(|l| l.start > at("stopped") && l.end < at("restart"))
        .collect();
    assert!(
        !down.is_empty(),
        "no request of the load fell into the outage"
    );
    let wrong_answers: Vec<&&Load> = down
        .iter()
        .filter(|l| l.result != if l.radius { "silence" } else { "error" })
        .collect();
    assert!(
        wrong_answers.is_empty(),
        "answers while the database was down: {wrong_answers:?}"
    );
    let slowest = load
        .iter()
        .filter(|l| !l.radius)
        .map(|l| l.end - l.start)
        .max()
        .unwrap_or_default();
    assert!(
        slowest < ANSWER_BOUND,
        "a socket answer took {slowest:?}\n{}",
        logs()
    );
    let unspent: Vec<usize> = load
        .iter()
        .filter(|l| l.valid && l.result != "accept")
        .map(|l| l.user)
        .collect();
    for &u in &unspent {
        let answer = verify(&node, &users[u].name, &users[u].code);
        assert_eq!(
            answer, "accept",
            "{}'s code after the restart",
            users[u].name
        );
    }
    let before = load
        .iter()
        .filter(|l| l.end < at("stop") && l.result == "accept")
        .count();
    assert!(before > 0, "no login got through before the stop: {load:?}");

    // The audit trail: an ok row for each accept the clients saw, no more.
    let accepted = load.iter().filter(|l| l.result == "accept").count() + unspent.len() + 3;
    let ok_rows = ["pam", "radius"]
        .iter()
        .flat_map(|channel| audit_rows(&pg, &cluster.db.name, channel))
        .filter(|(_, result, _)| result == "ok")
        .count();
    assert_eq!(ok_rows, accepted, "ok rows against accepts seen");
    eprintln!(
        "outage: {} load requests, {} while down (all refused without a decision), \
         slowest socket answer {slowest:?}; accepts again {resume:?} after the restart \
         ({:?} after the start was asked for); {} codes tried while down were still valid after",
        load.len(),
        down.len(),
        at("resumed") - at("restart"),
        unspent.len()
    );
}

// ---------------------------------------------------------------------------
// Bad settings at start

/// How otpd's start ended.
struct Start {
    code: Option<i32>,
    stderr: String,
    took: Duration,
}

impl Start {
    /// Asserts that otpd refused to start, without crashing, with an error
    /// that names `named`; its error text.
    #[track_caller]
    fn refused_naming(&self, what: &str, named: &str) -> &str {
        let text = &self.stderr;
        assert!(
            self.code.is_some_and(|c| c != 0),
            "{what}: otpd should refuse to start: {:?}\n{text}",
            self.code
        );
        assert!(
            text.contains(named),
            "{what}: the error should name {named}:\n{text}"
        );
        assert!(!text.contains("panicked"), "{what}: otpd crashed:\n{text}");
        text
    }
}

/// Starts otpd on a config of its own in `dir` (a socket listener and
/// `store`, the `[store]` table) and waits until it exits; panics when it
/// is still running after 30 s.
fn start_otpd(dir: &Path, store: &str) -> Start {
    let config = dir.join("otpd.toml");
    let _ = fs::remove_file(&config);
    write_private_file(
        &config,
        &format!(
            "service_id = \"{SERVICE_ID}\"\nissuer = \"otpd e2e\"\nstate_dir = \"{}\"\n\n\
             [socket]\npath = \"{}\"\n{store}",
            dir.join("state").display(),
            dir.join("otpd.sock").display()
        ),
    );
    let log = dir.join("otpd.log");
    let started = Instant::now();
    let mut child = Command::new(otpd_bin())
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start otpd");
    let deadline = started + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "otpd still runs 30 s after its start on:\n{store}\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Start {
        code: status.code(),
        stderr: fs::read_to_string(&log).unwrap_or_default(),
        took: started.elapsed(),
    }
}

/// The `[store]` table for `url` with `more` lines (a password file, a
/// key file, a deadline).
fn store_table(url: &str, more: &str) -> String {
    format!("\n[store]\nbackend = \"postgresql\"\nurl = \"{url}\"\n{more}")
}

/// The tables of the public schema of `db`, one a line.
fn tables(pg: &PrivatePostgres, db: &str) -> String {
    pg.psql(
        db,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1;",
    )
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn bad_store_settings_stop_the_start_naming_the_setting_and_write_nothing() {
    require_root_and_peers();
    let pg = PrivatePostgres::shared();
    let db = pg.create_database("bad_start");
    let dir = tempfile::Builder::new()
        .prefix("otpd-e2e-badstore-")
        .tempdir()
        .expect("temp dir");
    let key_file = dir.path().join("otpd.key");
    let key = format!("key_file = \"{}\"\n", key_file.display());
    let password = fs::read_to_string(&db.password_file).expect("the password");
    let password = password.trim_end();
    let wrong_password_file = dir.path().join("wrong.password");
    write_private_file(&wrong_password_file, "not-the-password\n");
    let ca = db.ca_file.display();
    let port = pg.port();
    let closed = free_port();
    // Takes connections and never says a word: the server hangs.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let deadline = "timeout_ms = 1000\n";
    let url_password = "Url-Pass-8d1f0c";

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "sslmode=require",
            store_table(
                &format!("postgresql://otpd@localhost:{port}/{}?sslmode=require", db.name),
                &key,
            ),
            "store.url",
        ),
        (
            "a URL without a database",
            store_table(
                &format!("postgresql://otpd@localhost:{port}?sslmode=verify-full&sslrootcert={ca}"),
                &key,
            ),
            "store.url",
        ),
        (
            "a wrong password",
            store_table(
                &db.tls_url,
                &format!(
                    "{key}password_file = \"{}\"\n",
                    wrong_password_file.display()
                ),
            ),
            "store.password_file",
        ),
        (
            "a wrong password in the URL",
            store_table(
                &format!(
                    "postgresql://otpd:{url_password}@localhost:{port}/{}?sslmode=verify-full&sslrootcert={ca}",
                    db.name
                ),
                &key,
            ),
            "store.url",
        ),
        (
            "a closed port",
            store_table(
                &format!("postgresql://otpd@127.0.0.1:{closed}/{}?sslmode=disable", db.name),
                &format!("{key}{deadline}"),
            ),
            "store.url",
        ),
        (
            "a server that never answers",
            store_table(
                &format!(
                    "postgresql://otpd@127.0.0.1:{silent_port}/{}?sslmode=disable",
                    db.name
                ),
                &format!("{key}{deadline}"),
            ),
            "store.url",
        ),
    ];
    for (what, store, setting) in &cases {
        let start = start_otpd(dir.path(), store);
        let text = start.refused_naming(what, setting);
        assert!(
            !text.contains(password) && !text.contains(url_password),
            "{what}: a password in otpd's error:\n{text}"
        );
        assert!(!key_file.exists(), "{what}: a key file was written");
        // Within the deadline (at most 2000 ms) and a margin for a loaded
        // machine.
        assert!(
            start.took < Duration::from_secs(5),
            "{what}: otpd took {:?} to give up",
            start.took
        );
        eprintln!(
            "{what}: exit {:?} after {:?}: {}",
            start.code,
            start.took,
            text.trim()
        );
    }
    drop(silent);
    assert_eq!(tables(pg, &db.name), "", "a refused start created tables");

    // The right password in the URL: otpd starts, and its log never shows
    // the password.
    let good = pg.create_database("url_password");
    let url = good
        .tls_url
        .replacen("otpd@", &format!("otpd:{password}@"), 1);
    let node = TestEnv::start_with(e2e::EnvOptions {
        extra_toml: store_table(&url, ""),
        ..e2e::EnvOptions::default()
    });
    node.wait_for_socket();
    let status = node.socket_request(&json!({"op": "status"}));
    assert_eq!(status["result"], "ok", "{status}");
    drop(node.otpctl(&["list", "--json"], ""));
    let log = node.otpd_log();
    assert!(
        !log.contains(password),
        "otpd logged the URL's password:\n{log}"
    );
    assert!(tables(pg, &good.name).contains("enrolments"));
}

/// The key check, the enrolments and the audit trail of `db`, as text.
fn snapshot(pg: &PrivatePostgres, db: &str) -> String {
    pg.psql(
        db,
        "SELECT key, md5(value) FROM meta ORDER BY key;\n\
         SELECT id, username, state, last_step, failures FROM enrolments ORDER BY id;\n\
         SELECT count(*), max(id) FROM audit;",
    )
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_node_with_another_key_or_none_refuses_the_clusters_database() {
    require_root_and_peers();
    let pg = PrivatePostgres::shared();
    let cluster = Cluster::new(pg, "key_check");
    let node = cluster.node(false, "");
    let users = import_users(&node, "key", 2);
    assert_eq!(
        verify(&node, &users[0].name, &users[0].code),
        "accept",
        "{}",
        node.otpd_log()
    );
    let before = snapshot(pg, &cluster.db.name);
    assert!(before.contains("key"), "no key check in meta: {before}");

    let dir = tempfile::Builder::new()
        .prefix("otpd-e2e-keycheck-")
        .tempdir()
        .expect("temp dir");
    let other_key = dir.path().join("other.key");
    let mut key = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .expect("read /dev/urandom");
    fs::write(&other_key, key).expect("write the other key");
    fs::set_permissions(
        &other_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let missing_key = dir.path().join("missing.key");
    let store = cluster.store_toml(false);
    let cluster_key = format!("key_file = \"{}\"\n", cluster.key_file.display());
    assert!(store.contains(&cluster_key), "{store}");
    let default_key = dir.path().join("state/otpd.key");

    for (what, key_line, path) in [
        (
            "another key file",
            format!("key_file = \"{}\"\n", other_key.display()),
            &other_key,
        ),
        (
            "a missing key file",
            format!("key_file = \"{}\"\n", missing_key.display()),
            &missing_key,
        ),
        (
            "no key_file (state_dir/otpd.key)",
            String::new(),
            &default_key,
        ),
    ] {
        let start = start_otpd(dir.path(), &store.replace(&cluster_key, &key_line));
        let text = start.refused_naming(what, &path.display().to_string());
        if path != &other_key {
            assert!(!path.exists(), "{what}: otpd wrote a key file");
        }
        assert_eq!(
            snapshot(pg, &cluster.db.name),
            before,
            "{what}: the database changed"
        );
        eprintln!("{what}: exit {:?}: {}", start.code, text.trim());
    }
    // The cluster's node still serves.
    assert_eq!(verify(&node, &users[1].name, &users[1].code), "accept");
}
