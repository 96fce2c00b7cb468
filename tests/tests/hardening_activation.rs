//! Activation password checks are bounded, end to end (root only). Each
//! check is argon2id with 19 MiB of memory. 250 activation requests at
//! once for one enrolment run at most `activation_attempts` checks (the
//! audit trail has one line per check, the store counts them, and otpd's
//! CPU time agrees); requests over many enrolments run two checks at a
//! time. otpd's peak memory stays bounded, its resident memory comes back
//! to within twice its idle size, and pamtester logs in during the burst.
//! Requests come from distinct loopback addresses (127.x.y.z), as from
//! many clients, so the per-address rate limit does not hide the checks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use e2e::{
    describe, now_unix, oathtool_code_at, require_root_and_peers, said, PamService, TestEnv,
    SERVICE_ID,
};
use serde_json::{json, Value};

/// `[policy] activation_attempts` (the default).
const LIMIT: usize = 5;
/// Activation requests sent at once.
const BURST: usize = 250;
const PASSWORD: &str = "4321";
const WRONG: &str = "9999";
/// Working memory of one argon2id check.
const CHECK_KIB: u64 = 19 * 1024;
/// How long pam_otp.so waits for otpd by default (`timeout_ms`).
const PAM_TIMEOUT: Duration = Duration::from_secs(5);

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// User and system CPU time of `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect(")") + 2..]
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat(5); 3 is the first here.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Waits (half a minute at most) until otpd's resident memory is at most
/// `limit` KiB; the last reading.
fn settle_rss(pid: u32, limit: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rss = status_kib(pid, "VmRSS");
        if rss <= limit || Instant::now() >= deadline {
            return rss;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// otpd's resident memory around bursts, in KiB.
struct Memory {
    pid: u32,
    /// Before any burst.
    idle: u64,
}

/// otpd's memory after a burst, in KiB.
struct AfterBurst {
    /// The highest resident memory so far (`VmHWM`).
    peak: u64,
    /// The resident memory once settled.
    after: u64,
}

impl Memory {
    /// otpd of `env`, idle now.
    fn of(env: &TestEnv) -> Memory {
        let pid = env.otpd_pid().expect("otpd runs");
        Memory {
            pid,
            idle: status_kib(pid, "VmRSS"),
        }
    }

    /// The peak so far, and the resident memory once it is back within
    /// twice the idle one (or half a minute has passed).
    fn after_burst(&self) -> AfterBurst {
        AfterBurst {
            peak: status_kib(self.pid, "VmHWM"),
            after: settle_rss(self.pid, 2 * self.idle),
        }
    }

    /// `RSS idle I KiB, peak P KiB, after A KiB`, for the report.
    fn report(&self, burst: &AfterBurst) -> String {
        format!(
            "RSS idle {} KiB, peak {} KiB, after {} KiB",
            self.idle, burst.peak, burst.after
        )
    }

    /// A burst holds at most four checks' working memory at once above
    /// idle, and otpd gives it back.
    fn assert_bounded(&self, burst: &AfterBurst) {
        let (idle, peak, after) = (self.idle, burst.peak, burst.after);
        assert!(
            peak <= idle + 4 * CHECK_KIB,
            "otpd's peak memory {peak} KiB (idle {idle} KiB)"
        );
        assert!(
            after <= 2 * idle,
            "otpd's memory stayed at {after} KiB (idle {idle} KiB)"
        );
    }
}

/// POST /api/v1/activate from the loopback address `from`: status and
/// JSON answer; status 0 when no answer came within two minutes.
fn activate_from(from: [u8; 4], port: u16, user_id: &str, password: &str) -> (u16, Value) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((from, 0)).into())
        .expect("bind a loopback address");
    socket
        .connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .expect("connect");
    let mut stream = std::net::TcpStream::from(socket);
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let body = json!({
        "service_id": SERVICE_ID,
        "user_id": user_id,
        "activation_password": password,
    })
    .to_string();
    let request = format!(
        "POST /api/v1/activate HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut answer = Vec::new();
    if let Err(e) = stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.read_to_end(&mut answer))
    {
        // No answer in time: status 0, for the tally.
        return (0, json!({ "error": e.to_string() }));
    }
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {answer:?}"));
    let json = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// Sends `passwords.len()` activation requests at once, request `i` for
/// `targets[i % targets.len()]` from 127.`net`.`i / 250`.`i % 250 + 1`;
/// while they run, logs alice in with pamtester, with the code of the
/// time step `step` steps from now (each login needs an unused one). The
/// answers in order, the pamtester run and how long it took.
fn burst(
    env: &TestEnv,
    net: u8,
    targets: &[String],
    passwords: &[&'static str],
    secret: &str,
    step: u64,
) -> (Vec<(u16, Value)>, Output, Duration) {
    let port = env.http_port;
    let start = Arc::new(Barrier::new(passwords.len() + 1));
    let requests: Vec<_> = passwords
        .iter()
        .enumerate()
        .map(|(i, &password)| {
            let start = Arc::clone(&start);
            let user_id = targets[i % targets.len()].clone();
            let from = [127, net, (i / 250) as u8, (i % 250 + 1) as u8];
            std::thread::spawn(move || {
                start.wait();
                activate_from(from, port, &user_id, password)
            })
        })
        .collect();
    start.wait();
    std::thread::sleep(Duration::from_millis(300));
    let service = PamService::new(&format!("socket={}", env.socket_path().display()), &[]);
    let code = oathtool_code_at(secret, 60, now_unix() + 60 * step);
    let began = Instant::now();
    let pam = service.authenticate("alice", &format!("{code}\n"));
    let pam_took = began.elapsed();
    let answers = requests
        .into_iter()
        .map(|r| r.join().expect("request thread"))
        .collect();
    (answers, pam, pam_took)
}

/// The audit lines of `user` that report a password check: wrong, right,
/// or right too late.
fn checks(env: &TestEnv, user: &str) -> Vec<String> {
    env.audit(user)
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .filter(|r| r.contains("activation password") || r.starts_with("activated"))
        .map(str::to_owned)
        .collect()
}

fn assert_logged_in(pam: &Output, took: Duration, env: &TestEnv) {
    assert!(
        pam.status.success() && said(pam).contains("successfully authenticated"),
        "pamtester during the burst: {}\n{}",
        describe(pam),
        env.otpd_log()
    );
    assert!(took < PAM_TIMEOUT, "the login took {took:?}");
}

/// How many answers had each status.
fn tally(answers: &[(u16, Value)]) -> Vec<(u16, usize)> {
    let mut tally: Vec<(u16, usize)> = Vec::new();
    for (status, _) in answers {
        match tally.iter_mut().find(|(s, _)| s == status) {
            Some((_, n)) => *n += 1,
            None => tally.push((*status, 1)),
        }
    }
    tally.sort_unstable();
    tally
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn one_enrolment_burst_checks_the_password_at_most_the_limit() {
    require_root_and_peers();
    let env = TestEnv::start();
    let memory = Memory::of(&env);
    let secret = env.enrol_active("alice");

    // The CPU time of one check, for comparison.
    let carol = env.issue("carol", "carol@example.jp", PASSWORD);
    let before = cpu_ticks(memory.pid);
    assert_eq!(env.activate(&carol.user_id, WRONG).0, 401);
    let one_check = (cpu_ticks(memory.pid) - before).max(1);

    // 250 wrong passwords at once.
    let bob = env.issue("bob", "bob@example.jp", PASSWORD);
    let before = cpu_ticks(memory.pid);
    let (answers, pam, pam_took) = burst(
        &env,
        1,
        std::slice::from_ref(&bob.user_id),
        &[WRONG; BURST],
        &secret,
        0,
    );
    let burst_cpu = cpu_ticks(memory.pid) - before;
    let burst_memory = memory.after_burst();
    let rss = memory.report(&burst_memory);
    let bob_checks = checks(&env, "bob");
    let shown = env.show("bob");
    eprintln!(
        "one enrolment, {BURST} wrong passwords: answers {:?}; {} checks in the audit trail, \
         activation_failures {}, state {}; otpd CPU {burst_cpu} ticks = {:.1} checks of \
         {one_check} ticks; {rss}; \
         pamtester in {pam_took:?}",
        tally(&answers),
        bob_checks.len(),
        shown["activation_failures"],
        shown["state"],
        burst_cpu as f64 / one_check as f64
    );
    assert_logged_in(&pam, pam_took, &env);
    assert!(
        answers.iter().all(|(s, _)| *s != 0),
        "requests without an answer: {:?}",
        tally(&answers)
    );
    assert_eq!(bob_checks.len(), LIMIT, "{bob_checks:#?}");
    assert_eq!(shown["state"], "invalidated", "{shown}");
    assert_eq!(shown["activation_failures"], LIMIT, "{shown}");
    let counted = answers
        .iter()
        .filter(|(s, v)| *s == 401 && v["attempts_left"].is_u64())
        .count();
    assert_eq!(
        counted,
        LIMIT,
        "answers with a count: {:?}",
        tally(&answers)
    );
    assert!(
        answers.iter().all(|(_, v)| v.get("secret").is_none()),
        "a wrong password delivered the token"
    );
    assert!(
        burst_cpu <= 3 * LIMIT as u64 * one_check,
        "otpd spent {burst_cpu} ticks, {:.0} checks' worth",
        burst_cpu as f64 / one_check as f64
    );
    memory.assert_bounded(&burst_memory);

    // The right password first, then 249 wrong ones at once.
    let dave = env.issue("dave", "dave@example.jp", PASSWORD);
    let right = {
        let (port, user_id) = (env.http_port, dave.user_id.clone());
        std::thread::spawn(move || activate_from([127, 2, 1, 1], port, &user_id, PASSWORD))
    };
    std::thread::sleep(Duration::from_millis(100));
    let (answers, pam, pam_took) = burst(
        &env,
        2,
        std::slice::from_ref(&dave.user_id),
        &[WRONG; BURST - 1],
        &secret,
        1,
    );
    let right = right.join().expect("the right password's request");
    let dave_checks = checks(&env, "dave");
    let shown = env.show("dave");
    eprintln!(
        "one enrolment, the right password and {} wrong ones: the right one {}, the wrong ones \
         {:?}; {} checks in the audit trail, activation_failures {}, state {}",
        BURST - 1,
        right.0,
        tally(&answers),
        dave_checks.len(),
        shown["activation_failures"],
        shown["state"]
    );
    assert_logged_in(&pam, pam_took, &env);
    assert!(dave_checks.len() <= LIMIT, "{dave_checks:#?}");
    assert!(
        answers
            .iter()
            .all(|(s, v)| *s != 200 && v.get("secret").is_none()),
        "a wrong password delivered the token"
    );
    if shown["state"] == "activated" {
        // The right password won; the count keeps only the wrong ones.
        assert_eq!(right.0, 200, "the right password: {}", right.1);
        let wrong = dave_checks
            .iter()
            .filter(|r| r.contains("wrong activation password"))
            .count();
        assert_eq!(
            shown["activation_failures"], wrong,
            "{shown} {dave_checks:#?}"
        );
    } else {
        // Wrong tries took every try before the right one was checked.
        assert_eq!(shown["state"], "invalidated", "{shown}");
        assert_ne!(right.0, 200, "{}", right.1);
        assert_eq!(shown["activation_failures"], LIMIT, "{shown}");
        assert_eq!(dave_checks.len(), LIMIT, "{dave_checks:#?}");
    }
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn bursts_over_many_enrolments_check_two_passwords_at_a_time() {
    require_root_and_peers();
    let env = TestEnv::start();
    let memory = Memory::of(&env);
    let secret = env.enrol_active("alice");
    let users: Vec<String> = (0..10).map(|i| format!("user{i}")).collect();
    let user_ids: Vec<String> = users
        .iter()
        .map(|u| env.issue(u, &format!("{u}@example.jp"), PASSWORD).user_id)
        .collect();

    let (answers, pam, pam_took) = burst(&env, 3, &user_ids, &[WRONG; BURST], &secret, 0);
    let burst_memory = memory.after_burst();
    let rss = memory.report(&burst_memory);
    let checked: usize = users.iter().map(|u| checks(&env, u).len()).sum();
    eprintln!(
        "{} enrolments, {BURST} wrong passwords: answers {:?}; {checked} checks; {rss}; \
         pamtester in {pam_took:?}",
        users.len(),
        tally(&answers)
    );
    assert_logged_in(&pam, pam_took, &env);
    assert!(checked <= LIMIT * users.len(), "{checked} checks");
    for (status, v) in &answers {
        assert!(
            matches!(status, 401 | 410 | 503) && v["error"].is_string(),
            "{status} {v}"
        );
    }
    let busy = answers.iter().filter(|(s, _)| *s == 503).count();
    let counted = answers
        .iter()
        .filter(|(s, v)| *s == 401 && v["attempts_left"].is_u64())
        .count();
    assert_eq!(counted, checked, "{:?}", tally(&answers));
    if busy > 0 {
        // Requests that waited too long for a check were not counted.
        assert!(
            checked < LIMIT * users.len(),
            "{checked} checks and {busy} refusals"
        );
    }
    memory.assert_bounded(&burst_memory);
}
