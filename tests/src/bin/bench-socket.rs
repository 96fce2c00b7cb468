//! Verification throughput and latency over otpd's Unix socket.
//!
//! Imports N users with active tokens straight into a fresh store, starts
//! the otpd binary beside this one (build both with --release), then at each
//! concurrency level runs that many clients for a fixed time, each on its
//! own connection with one request in flight, every request for a distinct
//! user and valid code. Prints requests/s, accepted/s, p50/p99 latency and
//! the CPU time (user and system) the otpd processes spent per request
//! during the level, from /proc: on a shared machine a steadier measure of
//! otpd's own cost than its throughput.
//! Every accepted step is committed to the store before otpd answers.
//! Last, the memory of each otpd: its peak resident set (VmHWM) and its
//! resident set at the end (VmRSS), from /proc (of the program started:
//! a wrapper's own, when `OTPD_BIN` names one).
//!
//! `--store sqlite` (the default): the store is SQLite in a temp dir, with
//! `--synchronous`. `--store postgresql`: a private PostgreSQL server (run
//! as root) with a fresh database, reached over its Unix socket, and
//! `--nodes` otpd on it (each its own socket; client k talks to node
//! k mod nodes). `--db-cpus LIST` keeps that server on those CPUs
//! (`taskset -c` syntax); run the bench itself under `taskset -c` with the
//! others, and the database has cores of its own, as on a host of its own.
//!
//! cargo build --release -p otpd -p e2e --bin bench-socket
//! target/release/bench-socket [--users N] [--seconds S] [--clients 1,16,64]
//!     [--synchronous normal|full] [--store sqlite|postgresql] [--nodes N]
//!     [--db-cpus LIST]

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use otpcore::totp::{Algorithm, TokenParams};
use otpproto::socket::{parse_answer, Answer, Request, Verify};

/// Long steps, so that a run never crosses a step boundary: every user can
/// accept the codes of the previous, current and next step, in that order.
const PERIOD: u64 = 300;

struct Options {
    nodes: e2e::NodeOptions,
    clients: Vec<usize>,
}

fn options() -> Options {
    let mut clients = vec![1, 16, 64];
    let nodes = e2e::NodeOptions::from_args("bench-socket", 120_000, |flag, value| {
        if flag != "--clients" {
            return false;
        }
        clients = value
            .split(',')
            .map(|c| e2e::bench_value(c, "--clients 1,16,64"))
            .collect();
        true
    });
    Options { nodes, clients }
}

/// The next (user, step) to try: users in order, then the next step.
struct Work {
    secrets: Vec<Vec<u8>>,
    next: AtomicUsize,
    base_step: u64,
}

impl Work {
    fn take(&self) -> Option<(usize, u64)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let pass = n / self.secrets.len();
        (pass < 3).then(|| (n % self.secrets.len(), self.base_step - 1 + pass as u64))
    }
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    accepted: usize,
    rejected: usize,
    errors: usize,
}

fn client(socket: &Path, work: &Work, params: &TokenParams, stop: &AtomicBool) -> Tally {
    let stream = UnixStream::connect(socket).expect("connect");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut tally = Tally::default();
    let mut answer = String::new();
    while !stop.load(Ordering::Relaxed) {
        let Some((user, step)) = work.take() else {
            break;
        };
        let code = params.code_for_step(&work.secrets[user], step);
        let user = format!("u{user}");
        let mut request = serde_json::to_vec(&Request::Verify(Verify {
            user: user.as_str(),
            otp: code.as_str(),
            service: Some("bench"),
            rhost: None,
            nullok: false,
        }))
        .expect("request");
        request.push(b'\n');
        let started = Instant::now();
        writer.write_all(&request).expect("send");
        answer.clear();
        reader.read_line(&mut answer).expect("answer");
        tally.latencies.push(started.elapsed());
        match parse_answer(answer.as_bytes()) {
            Ok(Answer::Accept) => tally.accepted += 1,
            Ok(Answer::Reject) => tally.rejected += 1,
            _ => tally.errors += 1,
        }
    }
    tally
}

fn main() {
    let o = options();
    let params = TokenParams {
        algorithm: Algorithm::Sha1,
        digits: 6,
        period: PERIOD,
    };
    let (bench, secrets) = e2e::BenchNodes::prepare(&o.nodes, params, |users| {
        (0..users)
            .map(|i| {
                (0..20u32)
                    .map(|b| (i as u32).wrapping_mul(2_654_435_761).rotate_left(b) as u8)
                    .collect()
            })
            .collect()
    });
    let sockets: Vec<PathBuf> = bench
        .nodes
        .iter()
        .map(|n| n.dir.join("otpd.sock"))
        .collect();
    let daemons: Vec<e2e::SocketDaemon> = bench
        .nodes
        .iter()
        .zip(&sockets)
        .map(|(node, socket)| {
            e2e::start_socket_otpd_on_store(
                &node.dir,
                &node.state,
                bench.store.table(),
                socket,
                &o.nodes.synchronous,
            )
        })
        .collect();
    // A run must not cross a step boundary.
    let budget = (o.nodes.seconds * o.clients.len() as f64) as u64 + 30;
    e2e::wait_for_room_in_step(PERIOD, budget);
    let work = Arc::new(Work {
        secrets,
        next: AtomicUsize::new(0),
        base_step: params.step_at(e2e::now_unix()),
    });

    println!(
        "otpd socket verify, store {}, synchronous={}, {} users, {} s per level",
        bench.described(),
        o.nodes.synchronous,
        o.nodes.users,
        o.nodes.seconds
    );
    println!(
        "{:>7} {:>10} {:>11} {:>9} {:>9} {:>7} {:>6} {:>11}",
        "clients", "requests/s", "accepted/s", "p50 ms", "p99 ms", "reject", "error", "cpu us/req"
    );
    let pids: Vec<u32> = daemons.iter().map(e2e::SocketDaemon::id).collect();
    for &clients in &o.clients {
        let stop = Arc::new(AtomicBool::new(false));
        let cpu_before = cpu_seconds(&pids);
        let started = Instant::now();
        let handles: Vec<_> = (0..clients)
            .map(|k| {
                let socket = sockets[k % sockets.len()].clone();
                let (work, stop) = (Arc::clone(&work), Arc::clone(&stop));
                std::thread::spawn(move || client(&socket, &work, &params, &stop))
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(o.nodes.seconds));
        stop.store(true, Ordering::Relaxed);
        let tallies: Vec<Tally> = handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect();
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(&pids) - cpu_before;
        let mut latencies: Vec<Duration> = tallies
            .iter()
            .flat_map(|t| t.latencies.iter().copied())
            .collect();
        latencies.sort();
        let accepted: usize = tallies.iter().map(|t| t.accepted).sum();
        let rejected: usize = tallies.iter().map(|t| t.rejected).sum();
        let errors: usize = tallies.iter().map(|t| t.errors).sum();
        println!(
            "{:>7} {:>10.0} {:>11.0} {:>9.3} {:>9.3} {:>7} {:>6} {:>11.1}",
            clients,
            latencies.len() as f64 / elapsed,
            accepted as f64 / elapsed,
            e2e::percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            e2e::percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            rejected,
            errors,
            cpu / latencies.len().max(1) as f64 * 1e6
        );
        if work.next.load(Ordering::Relaxed) >= 3 * work.secrets.len() {
            println!("(ran out of users: raise --users)");
        }
    }
    for (i, daemon) in daemons.iter().enumerate() {
        println!(
            "otpd node {i}: peak resident {} (VmHWM), resident now {} (VmRSS)",
            memory(daemon.id(), "VmHWM"),
            memory(daemon.id(), "VmRSS")
        );
    }
}

/// The CPU time, user and system, that the processes `pids` have used so
/// far, in seconds: fields 14 and 15 of /proc/PID/stat, in clock ticks of
/// 1/100 s (USER_HZ on Linux); NaN when one cannot be read.
fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // The fields after the command name, which ends at the
                    // last ')': the state (field 3) first.
                    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                    let ticks = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
                    Some((ticks(14)? + ticks(15)?) as f64 / 100.0)
                })
                .unwrap_or(f64::NAN)
        })
        .sum()
}

/// The line `field` of /proc/PID/status, as the kernel writes it ("52340
/// kB"); "?" when it cannot be read.
fn memory(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(field)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .map(|value| value.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "?".to_owned())
}
