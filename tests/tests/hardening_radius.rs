//! RADIUS under a flood of unauthenticated datagrams: what otpd spends on
//! them must not grow with the number of source addresses, its log must
//! stay short, and the configured NAS must still get its answers. The
//! flood comes from 127.1.0.0–127.1.195.255 (every 127.x.y.z address is
//! loopback on Linux), outside the one configured client 127.0.0.1/32, and
//! goes to otpd's loopback port only; it is bounded in packets and time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{
    describe, oathtool_code, require_root_and_peers, start_with_radius, stdout,
    wait_for_fresh_step, wrong_code, TestEnv,
};
use otpcore::radius;

const SECRET: &str = "e2e-hardening-radius-secret";
/// Datagrams per flood, the same for one source and for many.
const FLOOD_PACKETS: usize = 150_000;
/// Datagrams per second the sender aims at.
const FLOOD_RATE: f64 = 10_000.0;
/// Distinct source addresses of the wide flood: 127.1.0.0–127.1.195.255.
const SOURCES: usize = 196 * 256;
/// Sockets the sender holds at once (the fd limit is far below `SOURCES`).
const BLOCK: usize = 1024;
/// Most drop lines (single ones and summaries) the whole test may log.
const DROP_LINES_CAP: usize = 100;

/// The flood's source addresses, `n` of them from 127.1.0.0 on.
fn sources(n: usize) -> Vec<Ipv4Addr> {
    (0..n)
        .map(|i| Ipv4Addr::new(127, 1, (i / 256) as u8, (i % 256) as u8))
        .collect()
}

/// Sends `FLOOD_PACKETS` copies of `packet` to 127.0.0.1:`port`, paced at
/// `FLOOD_RATE`, cycling through `from`: the addresses are bound
/// `BLOCK` at a time and each sends its share before the next block is
/// bound. Returns how many went out.
fn flood(port: u16, from: &[Ipv4Addr], packet: &[u8]) -> usize {
    let to = (Ipv4Addr::LOCALHOST, port);
    let rounds = FLOOD_PACKETS.div_ceil(from.len());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    let mut sent = 0usize;
    'blocks: for block in from.chunks(BLOCK) {
        let sockets: Vec<UdpSocket> = block
            .iter()
            .map(|a| UdpSocket::bind((*a, 0)).expect("bind a loopback source"))
            .collect();
        for _ in 0..rounds {
            for socket in &sockets {
                if sent == FLOOD_PACKETS || Instant::now() > deadline {
                    break 'blocks;
                }
                // Ahead of the pace by a millisecond or more: wait.
                let due = start + Duration::from_secs_f64(sent as f64 / FLOOD_RATE);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    if wait >= Duration::from_millis(1) {
                        std::thread::sleep(wait);
                    }
                }
                if socket.send_to(packet, to).is_ok() {
                    sent += 1;
                }
            }
        }
    }
    sent
}

/// CPU time (user + system) that process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat(5); state is field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second: u64 = String::from_utf8(
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf")
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// `radclient auth` from 127.0.0.1, PAP with a Message-Authenticator, one
/// retransmission after 3 s like a NAS; the answer's code, or `None`.
fn radclient_auth(port: u16, user: &str, code: &str) -> Option<&'static str> {
    let output = e2e::run_with_input(
        Command::new("radclient")
            .args(["-x", "-r", "2", "-t", "3"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["auth", SECRET]),
        &format!(
            "User-Name = \"{user}\"\nUser-Password = \"{code}\"\nMessage-Authenticator = 0x00\n"
        ),
    );
    let text = stdout(&output);
    if text.contains("Received Access-Accept") && output.status.success() {
        Some("Access-Accept")
    } else if text.contains("Received Access-Reject") {
        Some("Access-Reject")
    } else {
        eprintln!("radclient got no answer: {}", describe(&output));
        None
    }
}

/// What one flood cost otpd, and what the NAS got meanwhile.
struct Flood {
    sent: usize,
    wall: Duration,
    cpu: Duration,
    /// (what was asked, the answer wanted, the answer got)
    answers: Vec<(String, &'static str, Option<&'static str>)>,
    /// Whether the flood was still going when the last answer came.
    overlapped: bool,
}

/// Floods otpd from `from` and, while the flood runs, has the NAS ask
/// twice with a wrong code and once with the right one for `user`.
fn flood_while_asking(
    env: &TestEnv,
    port: u16,
    from: Vec<Ipv4Addr>,
    user: &str,
    secret: &str,
) -> Flood {
    let pid = env.otpd_pid().expect("otpd runs");
    // An attacker without the secret: a well-formed Access-Request whose
    // Message-Authenticator is computed with another secret.
    let packet = radius::access_request(
        7,
        &[0x5a; 16],
        b"mallory",
        b"123456",
        b"not-the-secret",
        true,
    )
    .expect("encode");
    let cpu_before = cpu_time(pid);
    let start = Instant::now();
    let sender = std::thread::spawn(move || flood(port, &from, &packet));
    // Let the flood fill whatever otpd keeps per source first.
    std::thread::sleep(Duration::from_secs(3));
    let mut answers = Vec::new();
    for _ in 0..2 {
        let code = wrong_code(secret);
        let got = radclient_auth(port, user, &code);
        answers.push((format!("{user} wrong code"), "Access-Reject", got));
    }
    wait_for_fresh_step(60);
    let code = oathtool_code(secret, 60);
    let got = radclient_auth(port, user, &code);
    answers.push((format!("{user} right code"), "Access-Accept", got));
    let overlapped = !sender.is_finished();
    let sent = sender.join().expect("the sender");
    Flood {
        sent,
        wall: start.elapsed(),
        cpu: cpu_time(pid) - cpu_before,
        answers,
        overlapped,
    }
}

/// Lines about dropped datagrams in `log`: one per logged datagram, and
/// the summaries.
fn drop_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("radius: dropped") || l.contains("datagrams dropped"))
        .count()
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_flood_from_many_sources_costs_what_one_source_costs() {
    require_root_and_peers();
    let (mut env, port) = start_with_radius("nas", SECRET);
    let alice = env.enrol_active("alice");
    let bob = env.enrol_active("bob");

    let one = flood_while_asking(&env, port, sources(1), "alice", &alice);
    let lines_after_one = drop_lines(&env.otpd_log());
    let many = flood_while_asking(&env, port, sources(SOURCES), "bob", &bob);
    let log = env.otpd_log();
    let lines = drop_lines(&log);

    for (name, flood) in [("one source", &one), ("many sources", &many)] {
        eprintln!(
            "{name}: {} datagrams in {:.1} s, otpd CPU {:.2} s ({:.0} %), NAS answers {:?}",
            flood.sent,
            flood.wall.as_secs_f64(),
            flood.cpu.as_secs_f64(),
            100.0 * flood.cpu.as_secs_f64() / flood.wall.as_secs_f64(),
            flood.answers
        );
    }
    eprintln!(
        "drop lines: {lines_after_one} after one source, {lines} after both ({} from many sources)",
        lines - lines_after_one
    );

    for flood in [&one, &many] {
        assert_eq!(flood.sent, FLOOD_PACKETS, "the sender fell short");
        for (what, wanted, got) in &flood.answers {
            assert_eq!(got, &Some(*wanted), "{what}");
        }
        assert!(
            flood.overlapped,
            "the flood ended before the NAS's requests did; the test proves nothing"
        );
    }
    let limit = one.cpu * 2 + Duration::from_secs(1);
    assert!(
        many.cpu <= limit,
        "{SOURCES} sources cost otpd {:.2} s of CPU, one source {:.2} s (limit {:.2} s)",
        many.cpu.as_secs_f64(),
        one.cpu.as_secs_f64(),
        limit.as_secs_f64()
    );
    assert!(
        lines <= DROP_LINES_CAP,
        "{lines} lines about dropped datagrams, at most {DROP_LINES_CAP} wanted"
    );

    // A stop writes the summary of what was not logged one by one.
    env.stop_otpd();
    let log = env.otpd_log();
    let summaries: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("datagrams dropped") && l.contains("not a configured client"))
        .collect();
    eprintln!("summaries: {summaries:#?}");
    assert!(
        !summaries.is_empty(),
        "no summary of the drops:\n{}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    assert!(
        drop_lines(&log) <= DROP_LINES_CAP,
        "{} lines about dropped datagrams",
        drop_lines(&log)
    );
    assert!(!log.contains(SECRET), "the secret reached the log");
}
