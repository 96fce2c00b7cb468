//! RADIUS throughput and latency: otpd against FreeRADIUS 3.2 with
//! rlm_totp, with plain PAP, and (`--store postgresql`) with rlm_sql doing
//! PAP from the same PostgreSQL, or (`--first-factor ldap`) the directory
//! password and the code in one field against rlm_ldap + rlm_totp, on this
//! machine, in alternating rounds.
//!
//! As root, with `apt-get install -y freeradius` done (and
//! `freeradius-ldap` for `--first-factor ldap`): gives N users a
//! random TOTP secret each and imports them into a fresh otpd store
//! (300-second steps, so the run never crosses a step boundary); writes a
//! private copy of /etc/freeradius/3.0 whose `files` module holds the same
//! N secrets as `TOTP-Secret` (users tN; rlm_totp's fixed 30-second steps)
//! and N plain `Cleartext-Password`s (users pN), with a site that copies
//! User-Password to TOTP-Password for the first and runs PAP for the
//! second; starts `target/release/otpd` with a `[radius]` section and
//! `freeradius -f`, both on loopback ports, both requiring a
//! Message-Authenticator from the client.
//!
//! `--store sqlite` (the default): otpd's store is SQLite in a temp dir,
//! with `--synchronous`. `--store postgresql`: a private PostgreSQL server
//! (fsync on), a fresh database holding otpd's store, reached over the
//! server's Unix socket by `--nodes` otpd (each on its own port; socket k of
//! the load goes to node k mod nodes), and in the same database the
//! standard FreeRADIUS schema with N users sN and a `Cleartext-Password`
//! each in `radcheck`; FreeRADIUS then also serves a second site, `sql`
//! then `pap` (driver rlm_sql_postgresql, its default pool), on a port of
//! its own: the target fr-sql. `--db-cpus LIST` keeps that server on
//! those CPUs (`taskset -c` syntax); run the bench itself under `taskset
//! -c` with the others, and the database has cores of its own, as on a
//! host of its own, for otpd and for rlm_sql alike.
//!
//! The load generator is this program: `--sockets` UDP sockets, one thread
//! each, every socket with `--inflight` Access-Requests outstanding
//! (User-Name, PAP User-Password, Message-Authenticator), each for a
//! distinct user with a valid code (for otpd: users × the previous, current
//! and next step, in that order). A request unanswered after `--timeout-ms`
//! counts as a timeout and is not retransmitted (its answer, if one comes
//! later, as late). Each round runs otpd,
//! fr-totp, fr-pap (and fr-sql) for `--seconds` each; the end prints the
//! medians and the per-round ratios. "server us" is the CPU time of the
//! target's processes (all otpd nodes, or FreeRADIUS) per answered
//! request, "db us" that of the PostgreSQL server in the same window; the
//! CPU ratios compare server + db. Last, a replay check: codes accepted
//! during the run are sent again (same user, same step) to otpd, each to
//! the node after the one that accepted it, and to rlm_totp.
//!
//! `--first-factor ldap`: the password and the code in one User-Password,
//! the password checked by a bind to a private slapd (`e2e::slapd`, on
//! loopback, over ldaps://, started with no log) whose `ou=people` holds
//! the N users uN, each with a random password. The targets are then
//! otpd-ldap (otpd with `[radius] first_factor = "ldap"` and `[ldap]`),
//! fr-ldap-totp and fr-ldap, two sites of FreeRADIUS ([`FR_LDAP_SITES`])
//! on ports of their own with the module [`FR_LDAP_MODULE`] (rlm_ldap, its
//! default pool): fr-ldap-totp splits User-Password in unlang into the
//! password and the last 6 digits, takes the user's `TOTP-Secret` from the
//! `files` module (the same secrets as otpd's, for the same users uN),
//! binds as the user with the password (rlm_ldap) and checks the code
//! (rlm_totp); fr-ldap binds with the password alone (PAP to the
//! directory, no code). All three send the same users. `--ldap-bind dn`
//! (the default) finds the user's entry by a DN template
//! (`uid={user},ou=people,...`: otpd's `bind_dn`, FreeRADIUS's
//! `control:LDAP-UserDN` set in unlang, the name escaped by `ldapquote`),
//! `--ldap-bind search` by an anonymous search for `(uid=...)` in
//! `ou=people`, then a bind as the entry found (otpd's `search_base` and
//! `search_filter`, rlm_ldap's `ldap` in authorize). "ldap us" is slapd's
//! CPU time per answered request, counted in the CPU ratios.
//!
//! rlm_totp takes only the code of the step a request arrives in: each
//! run of fr-totp or fr-ldap-totp starts early enough in a 30-second step
//! to end in it (when `--seconds` leaves room for that). The bench exits
//! with status 1 when an answer was wrong (a reject, other than otpd's
//! replays of a code that repeats an earlier step's; a bad authenticator)
//! and panics when a peer does not start; timeouts are counted, not
//! judged.
//!
//! The otpd target runs `target/release/otpd`, or the binary `OTPD_BIN`
//! names: two builds are compared by alternating runs of the bench, one
//! with each.
//!
//! cargo build --release -p otpd && cargo build --release -p e2e --bin bench-radius
//! [OTPD_BIN=path] target/release/bench-radius [--users N] [--seconds S] [--rounds R]
//!     [--sockets K] [--inflight W] [--timeout-ms T] [--synchronous normal|full]
//!     [--store sqlite|postgresql] [--nodes N] [--db-cpus LIST]
//!     [--first-factor none|ldap] [--ldap-bind dn|search]

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::slapd::{Bind, PrivateSlapd, SUFFIX};
use e2e::{BenchStore, Server};
use otpcore::radius::{self, code, Packet};
use otpcore::totp::{self, Algorithm, TokenParams};

/// otpd's steps: long, so that a run never crosses a step boundary.
const OTPD_PERIOD: u64 = 300;
/// rlm_totp's steps (fixed in FreeRADIUS 3.2.1).
const FR_PERIOD: u64 = 30;
/// Shared secret of the one RADIUS client, for both servers.
const SECRET: &[u8] = b"bench-radius-shared-secret";
/// Pause after each target.
const PAUSE: Duration = Duration::from_secs(6);
/// How many accepted requests per target the replay check resends.
const REPLAYS: usize = 200;

struct Options {
    nodes: e2e::NodeOptions,
    rounds: usize,
    sockets: usize,
    inflight: usize,
    timeout: Duration,
    /// `--first-factor ldap`: how the directory finds the user's entry.
    ldap: Option<Bind>,
}

fn options() -> Options {
    let mut rounds = 3;
    // At most 63: FreeRADIUS's default max_requests (16384) is 64 sockets'
    // worth of identifiers, and it drops requests past it.
    let mut sockets = 32;
    let mut inflight = 4;
    let mut timeout = Duration::from_secs(1);
    let mut first_factor = "none".to_owned();
    let mut bind = Bind::Template;
    let nodes = e2e::NodeOptions::from_args("bench-radius", 100_000, |flag, value| {
        match flag {
            "--rounds" => rounds = e2e::bench_value(value, "--rounds R"),
            "--sockets" => sockets = e2e::bench_value(value, "--sockets K"),
            "--inflight" => inflight = e2e::bench_value(value, "--inflight W"),
            "--timeout-ms" => {
                timeout = Duration::from_millis(e2e::bench_value(value, "--timeout-ms T"))
            }
            "--first-factor" => first_factor = value.to_owned(),
            "--ldap-bind" => {
                bind = match value {
                    "dn" => Bind::Template,
                    "search" => Bind::Search,
                    _ => e2e::usage_error(&format!("--ldap-bind dn|search: cannot read {value:?}")),
                }
            }
            _ => return false,
        }
        true
    });
    if !(1..=200).contains(&inflight) {
        e2e::usage_error("--inflight must be 1 to 200 (one RADIUS identifier each)");
    }
    let ldap = match first_factor.as_str() {
        "none" => None,
        "ldap" => Some(bind),
        _ => e2e::usage_error(&format!(
            "--first-factor none|ldap: cannot read {first_factor:?}"
        )),
    };
    Options {
        nodes,
        rounds,
        sockets,
        inflight,
        timeout,
        ldap,
    }
}

/// splitmix64: request authenticators need only be distinct here.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// 20 random letters and digits.
    fn password(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..20)
            .map(|_| char::from(ALPHABET[(self.next() % ALPHABET.len() as u64) as usize]))
            .collect()
    }

    fn authenticator(&mut self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&self.next().to_le_bytes());
        a[8..].copy_from_slice(&self.next().to_le_bytes());
        a
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Otpd,
    FrTotp,
    FrPap,
    FrSql,
    OtpdLdap,
    FrLdapTotp,
    FrLdap,
}

/// How many kinds there are.
const KINDS: usize = 7;

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Otpd => "otpd",
            Kind::FrTotp => "fr-totp",
            Kind::FrPap => "fr-pap",
            Kind::FrSql => "fr-sql",
            Kind::OtpdLdap => "otpd-ldap",
            Kind::FrLdapTotp => "fr-ldap-totp",
            Kind::FrLdap => "fr-ldap",
        }
    }

    fn is_otpd(self) -> bool {
        matches!(self, Kind::Otpd | Kind::OtpdLdap)
    }

    /// Whether the target takes rlm_totp's codes, of 30-second steps.
    fn is_rlm_totp(self) -> bool {
        matches!(self, Kind::FrTotp | Kind::FrLdapTotp)
    }
}

/// The targets of a run, otpd first, rlm_totp second; fr-sql only with
/// PostgreSQL; with a first factor, only those that check it.
fn targets(postgresql: bool, ldap: bool) -> Vec<Kind> {
    if ldap {
        return vec![Kind::OtpdLdap, Kind::FrLdapTotp, Kind::FrLdap];
    }
    let mut kinds = vec![Kind::Otpd, Kind::FrTotp, Kind::FrPap];
    if postgresql {
        kinds.push(Kind::FrSql);
    }
    kinds
}

/// The users and which (user, step) each target gets next.
struct Users {
    secrets: Vec<Vec<u8>>,
    /// The directory passwords of the users uN (with a first factor).
    passwords: Vec<String>,
    otpd_base_step: u64,
    next: [AtomicUsize; KINDS],
}

fn params(period: u64) -> TokenParams {
    TokenParams {
        algorithm: Algorithm::Sha1,
        digits: 6,
        period,
    }
}

fn pap_password(user: usize) -> String {
    format!(
        "{:06}",
        (user as u64).wrapping_mul(2_654_435_761) % 1_000_000
    )
}

impl Users {
    /// The next (user, step) for `kind`; `None` when otpd's run out.
    fn take(&self, kind: Kind) -> Option<(usize, u64)> {
        let n = self.next[kind as usize].fetch_add(1, Ordering::Relaxed);
        let user = n % self.secrets.len();
        match kind {
            Kind::Otpd | Kind::OtpdLdap => {
                let pass = n / self.secrets.len();
                (pass < 3).then(|| (user, self.otpd_base_step - 1 + pass as u64))
            }
            Kind::FrTotp | Kind::FrLdapTotp => {
                Some((user, params(FR_PERIOD).step_at(e2e::now_unix())))
            }
            Kind::FrPap | Kind::FrSql | Kind::FrLdap => Some((user, 0)),
        }
    }

    fn credentials(&self, kind: Kind, user: usize, step: u64) -> (String, String) {
        match kind {
            Kind::Otpd => (
                format!("u{user}"),
                params(OTPD_PERIOD)
                    .code_for_step(&self.secrets[user], step)
                    .to_string(),
            ),
            Kind::FrTotp => (
                format!("t{user}"),
                params(FR_PERIOD)
                    .code_for_step(&self.secrets[user], step)
                    .to_string(),
            ),
            Kind::FrPap => (format!("p{user}"), pap_password(user)),
            Kind::FrSql => (format!("s{user}"), pap_password(user)),
            Kind::OtpdLdap | Kind::FrLdapTotp => {
                let period = if kind == Kind::OtpdLdap {
                    OTPD_PERIOD
                } else {
                    FR_PERIOD
                };
                let code = params(period).code_for_step(&self.secrets[user], step);
                (
                    format!("u{user}"),
                    format!("{}{}", self.passwords[user], code.as_str()),
                )
            }
            Kind::FrLdap => (format!("u{user}"), self.passwords[user].clone()),
        }
    }

    /// Whether otpd, `kind`, has had every (user, step) it can take.
    fn exhausted(&self, kind: Kind) -> bool {
        self.next[kind as usize].load(Ordering::Relaxed) >= 3 * self.secrets.len()
    }
}

struct Pending {
    authenticator: [u8; 16],
    sent: Instant,
    user: usize,
    step: u64,
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    /// Answers that arrived before the stop.
    in_window: usize,
    accepted: usize,
    rejected: usize,
    timeouts: usize,
    /// Answers to requests that had timed out already.
    late: usize,
    /// Answers that match no request, outstanding or timed out, or fail
    /// the Response Authenticator check.
    bad: usize,
    /// Some accepted (user, step), for the replay check.
    accepted_samples: Vec<(usize, u64)>,
    /// Which of the target's addresses the socket sent to.
    node: usize,
    /// Some rejected (user, step), to explain them.
    rejected_samples: Vec<(usize, u64)>,
}

struct Load {
    kind: Kind,
    target: SocketAddr,
    node: usize,
    inflight: usize,
    timeout: Duration,
    seed: u64,
}

/// One socket with `inflight` requests outstanding until `stop`; then
/// waits for the outstanding ones (at most the timeout).
fn client(load: &Load, users: &Users, stop: &AtomicBool) -> Tally {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.connect(load.target).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .expect("read timeout");
    let mut rng = Rng(load.seed);
    let mut slots: Vec<Option<Pending>> = (0..256).map(|_| None).collect();
    // The authenticator of the request that timed out last on each
    // identifier, until the identifier is used again.
    let mut expired: Vec<Option<[u8; 16]>> = vec![None; 256];
    let mut outstanding = 0usize;
    let mut next_id = (load.seed % 256) as usize;
    let mut tally = Tally {
        node: load.node,
        ..Tally::default()
    };
    let mut buffer = vec![0u8; radius::MAX_PACKET];
    let mut last_sweep = Instant::now();
    let mut stopped_at: Option<Instant> = None;
    let mut exhausted = false;
    loop {
        if stopped_at.is_none() && stop.load(Ordering::Relaxed) {
            stopped_at = Some(Instant::now());
        }
        while stopped_at.is_none() && !exhausted && outstanding < load.inflight {
            let Some((user, step)) = users.take(load.kind) else {
                exhausted = true;
                break;
            };
            while slots[next_id].is_some() {
                next_id = (next_id + 1) % 256;
            }
            let id = next_id;
            next_id = (next_id + 1) % 256;
            let authenticator = rng.authenticator();
            let (name, password) = users.credentials(load.kind, user, step);
            let packet = radius::access_request(
                id as u8,
                &authenticator,
                name.as_bytes(),
                password.as_bytes(),
                SECRET,
                true,
            )
            .expect("encode");
            expired[id] = None;
            slots[id] = Some(Pending {
                authenticator,
                sent: Instant::now(),
                user,
                step,
            });
            outstanding += 1;
            socket.send(&packet).expect("send");
        }
        if outstanding == 0 && (stopped_at.is_some() || exhausted) {
            break;
        }
        match socket.recv(&mut buffer) {
            Ok(len) => {
                let received = Instant::now();
                let Ok(answer) = Packet::decode(&buffer[..len]) else {
                    tally.bad += 1;
                    continue;
                };
                let id = usize::from(answer.identifier);
                let matches = slots[id]
                    .as_ref()
                    .is_some_and(|p| answer.is_response_to(&p.authenticator, SECRET));
                if !matches {
                    let late = expired[id]
                        .take_if(|authenticator| answer.is_response_to(authenticator, SECRET));
                    if late.is_some() {
                        tally.late += 1;
                    } else {
                        tally.bad += 1;
                    }
                    continue;
                }
                let pending = slots[id].take().expect("slot");
                outstanding -= 1;
                tally.latencies.push(received - pending.sent);
                if stopped_at.is_none() {
                    tally.in_window += 1;
                }
                match answer.code {
                    code::ACCESS_ACCEPT => {
                        tally.accepted += 1;
                        if tally.accepted_samples.len() < REPLAYS {
                            tally.accepted_samples.push((pending.user, pending.step));
                        }
                    }
                    code::ACCESS_REJECT => {
                        tally.rejected += 1;
                        if tally.rejected_samples.len() < REPLAYS {
                            tally.rejected_samples.push((pending.user, pending.step));
                        }
                    }
                    _ => tally.bad += 1,
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("receive: {e}"),
        }
        let now = Instant::now();
        if now.duration_since(last_sweep) >= Duration::from_millis(5) {
            last_sweep = now;
            for (slot, expired) in slots.iter_mut().zip(expired.iter_mut()) {
                if slot
                    .as_ref()
                    .is_some_and(|p| now.duration_since(p.sent) >= load.timeout)
                {
                    *expired = slot.take().map(|p| p.authenticator);
                    outstanding -= 1;
                    tally.timeouts += 1;
                }
            }
        }
    }
    tally
}

struct Figures {
    rate: f64,
    accepted: usize,
    rejected: usize,
    timeouts: usize,
    late: usize,
    bad: usize,
    p50: f64,
    p99: f64,
    /// CPU time the server processes spent per answered request, µs.
    server_us: f64,
    /// CPU time the PostgreSQL server spent per answered request, µs.
    db_us: f64,
    /// CPU time slapd spent per answered request, µs.
    ldap_us: f64,
    /// CPU time this load generator spent per answered request, µs.
    client_us: f64,
}

/// The fields of /proc/PID/stat after the ")" that closes the command
/// name, as numbers (the state, field 3, reads as 0): ppid is at 1, utime
/// 11, stime 12, cutime 13, cstime 14. Empty when the process is gone.
fn proc_stat(pid: &str) -> Vec<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    rest.split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect()
}

/// utime + stime of a process (all its threads), in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let fields = proc_stat(pid);
    let ticks = |i: usize| fields.get(i).copied().unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// CPU seconds of the PostgreSQL server whose cluster is in `dir`: the
/// postmaster, its live processes, and those that have exited (the
/// postmaster's cutime and cstime).
fn db_cpu_seconds(dir: &Path) -> f64 {
    let pid = fs::read_to_string(dir.join("data/postmaster.pid")).unwrap_or_default();
    let Some(pid) = pid.lines().next().map(str::to_owned) else {
        return 0.0;
    };
    let fields = proc_stat(&pid);
    let ticks = |i: usize| fields.get(i).copied().unwrap_or(0.0);
    let exited = (ticks(13) + ticks(14)) / clock_ticks();
    let parent: f64 = pid.parse().unwrap_or(-1.0);
    let children: f64 = fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
                .filter(|child| proc_stat(child).get(1) == Some(&parent))
                .map(|child| cpu_seconds(&child))
                .sum()
        })
        .unwrap_or(0.0);
    cpu_seconds(&pid) + exited + children
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// How many seconds must be left of rlm_totp's step when a run of
/// fr-totp or fr-ldap-totp starts, so that its last request arrives in that
/// step; `None` when a run is too long for one step.
fn totp_budget(o: &Options) -> Option<u64> {
    let budget = o.nodes.seconds.ceil() as u64 + 1;
    (budget < FR_PERIOD).then_some(budget)
}

/// Where a target listens and which processes serve it.
struct Target {
    addresses: Vec<SocketAddr>,
    pids: Vec<String>,
}

impl Target {
    fn cpu_seconds(&self) -> f64 {
        self.pids.iter().map(|pid| cpu_seconds(pid)).sum()
    }
}

/// The servers behind the targets, whose CPU time is counted too: the
/// PostgreSQL server of the cluster in `db`, slapd of PID `slapd`.
struct Behind {
    db: Option<PathBuf>,
    slapd: Option<String>,
}

impl Behind {
    /// CPU seconds of the database and of slapd so far.
    fn cpu_seconds(&self) -> (f64, f64) {
        (
            self.db.as_deref().map(db_cpu_seconds).unwrap_or(0.0),
            self.slapd.as_deref().map(cpu_seconds).unwrap_or(0.0),
        )
    }
}

/// An accepted (user, step) and the index of the address that accepted it.
type Sample = (usize, u64, usize);

fn run(
    kind: Kind,
    target: &Target,
    behind: &Behind,
    o: &Options,
    users: &Arc<Users>,
    samples: &Mutex<Vec<Sample>>,
    rejects: &Mutex<Vec<(usize, u64)>>,
) -> Figures {
    let server_cpu = target.cpu_seconds();
    let (db_cpu, ldap_cpu) = behind.cpu_seconds();
    let client_cpu = cpu_seconds("self");
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..o.sockets)
        .map(|i| {
            let node = i % target.addresses.len();
            let load = Load {
                kind,
                target: target.addresses[node],
                node,
                inflight: o.inflight,
                timeout: o.timeout,
                seed: (i as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ e2e::now_unix(),
            };
            let (users, stop) = (Arc::clone(users), Arc::clone(&stop));
            std::thread::spawn(move || client(&load, &users, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(o.nodes.seconds));
    stop.store(true, Ordering::Relaxed);
    let window = started.elapsed().as_secs_f64();
    let tallies: Vec<Tally> = handles
        .into_iter()
        .map(|h| h.join().expect("client"))
        .collect();
    let server_cpu = target.cpu_seconds() - server_cpu;
    let (db_now, ldap_now) = behind.cpu_seconds();
    let (db_cpu, ldap_cpu) = (db_now - db_cpu, ldap_now - ldap_cpu);
    let client_cpu = cpu_seconds("self") - client_cpu;
    let mut latencies: Vec<Duration> = tallies
        .iter()
        .flat_map(|t| t.latencies.iter().copied())
        .collect();
    latencies.sort();
    let answered = latencies.len().max(1) as f64;
    {
        let mut samples = samples.lock().unwrap();
        let mut rejects = rejects.lock().unwrap();
        for t in &tallies {
            rejects.extend(&t.rejected_samples);
        }
        for t in &tallies {
            for &(user, step) in &t.accepted_samples {
                if samples.len() < REPLAYS {
                    samples.push((user, step, t.node));
                }
            }
        }
    }
    Figures {
        rate: tallies.iter().map(|t| t.in_window).sum::<usize>() as f64 / window,
        accepted: tallies.iter().map(|t| t.accepted).sum(),
        rejected: tallies.iter().map(|t| t.rejected).sum(),
        timeouts: tallies.iter().map(|t| t.timeouts).sum(),
        late: tallies.iter().map(|t| t.late).sum(),
        bad: tallies.iter().map(|t| t.bad).sum(),
        p50: e2e::percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        p99: e2e::percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        server_us: server_cpu / answered * 1e6,
        db_us: db_cpu / answered * 1e6,
        ldap_us: ldap_cpu / answered * 1e6,
        client_us: client_cpu / answered * 1e6,
    }
}

/// One request, waiting for its answer: `Some(true)` accept,
/// `Some(false)` reject, `None` no valid answer within `timeout`.
fn exchange(
    target: SocketAddr,
    user: &[u8],
    password: &[u8],
    timeout: Duration,
    rng: &mut Rng,
) -> Option<bool> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.connect(target).expect("connect");
    socket.set_read_timeout(Some(timeout)).expect("timeout");
    let authenticator = rng.authenticator();
    let id = (rng.next() % 256) as u8;
    let packet =
        radius::access_request(id, &authenticator, user, password, SECRET, true).expect("encode");
    socket.send(&packet).ok()?;
    let mut buffer = vec![0u8; radius::MAX_PACKET];
    let len = socket.recv(&mut buffer).ok()?;
    let answer = Packet::decode(&buffer[..len]).ok()?;
    (answer.identifier == id && answer.is_response_to(&authenticator, SECRET))
        .then_some(answer.code == code::ACCESS_ACCEPT)
}

/// Waits until `target` answers an Access-Request from `user` (FreeRADIUS
/// delays rejects by its `reject_delay`, 1 s, so it gets a valid one).
fn wait_ready(server: &mut Server, target: SocketAddr, what: &str, user: &str, password: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rng = Rng(e2e::now_unix());
    loop {
        if let Some(status) = server.exited() {
            panic!("{what} exited at start-up: {status}\n{}", server.log());
        }
        if exchange(
            target,
            user.as_bytes(),
            password.as_bytes(),
            Duration::from_millis(200),
            &mut rng,
        )
        .is_some()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} does not answer on {target}:\n{}",
            server.log()
        );
    }
}

/// otpd on `state` and `store` (a `[store]` table, empty for SQLite) with
/// a `[radius]` section: one client at 127.0.0.1 with [`SECRET`],
/// Message-Authenticator required, and `client` (more keys of that
/// client, then more tables: its first factor and `[ldap]`).
fn start_otpd(
    dir: &Path,
    state: &Path,
    store: &str,
    port: u16,
    synchronous: &str,
    client: &str,
) -> Server {
    let radius = e2e::cluster::radius_toml(port, "bench", &String::from_utf8_lossy(SECRET));
    e2e::start_otpd_on(dir, state, synchronous, &format!("{radius}{client}{store}"))
}

const FR_SITE: &str = r#"server bench {
	listen {
		type = auth
		ipaddr = 127.0.0.1
		port = PORT
	}
	authorize {
		files
		if (&control:TOTP-Secret) {
			update request {
				&TOTP-Password := &User-Password
			}
			update control {
				&Auth-Type := totp
			}
		}
		else {
			pap
		}
	}
	authenticate {
		Auth-Type PAP {
			pap
		}
		totp
	}
}
"#;

/// The site of fr-sql: the user's `Cleartext-Password` from PostgreSQL,
/// then PAP.
const FR_SQL_SITE: &str = r#"server bench-sql {
	listen {
		type = auth
		ipaddr = 127.0.0.1
		port = PORT
	}
	authorize {
		sql
		pap
	}
	authenticate {
		Auth-Type PAP {
			pap
		}
	}
}
"#;

/// rlm_ldap for fr-ldap-totp and fr-ldap: slapd at URL over ldaps://,
/// trusting its CA, searching anonymously (no `identity`) in
/// `ou=people` for the search-then-bind sites, with Debian's default pool
/// (up to `max_servers` connections, as many as FreeRADIUS has threads).
const FR_LDAP_MODULE: &str = r#"ldap {
	server = 'URL'
	base_dn = 'ou=people,SUFFIX'
	user_dn = "LDAP-UserDn"
	user {
		base_dn = "${..base_dn}"
		filter = "(uid=%{User-Name})"
		scope = 'sub'
	}
	options {
		chase_referrals = no
		rebind = no
		res_timeout = 3
		srv_timelimit = 3
		net_timeout = 1
		idle = 60
		probes = 3
		interval = 3
		ldap_debug = 0
	}
	tls {
		ca_file = 'CA'
		require_cert = 'demand'
	}
	pool {
		start = ${thread[pool].start_servers}
		min = ${thread[pool].min_spare_servers}
		max = ${thread[pool].max_servers}
		spare = ${thread[pool].max_spare_servers}
		uses = 0
		retry_delay = 30
		lifetime = 0
		idle_timeout = 60
	}
}
"#;

/// The sites of fr-ldap-totp (port TOTP_PORT) and fr-ldap (port
/// PAP_PORT). The first splits User-Password into the directory password
/// and the last 6 digits, refuses users without a `TOTP-Secret` (from
/// `files`), then binds as the user with the password (rlm_ldap, Auth-Type
/// LDAP) and checks the code (rlm_totp); the second binds with the whole
/// User-Password. FIND_USER is [`FR_FIND_BY_DN`] or [`FR_FIND_BY_SEARCH`].
const FR_LDAP_SITES: &str = r#"server bench-ldap-totp {
	listen {
		type = auth
		ipaddr = 127.0.0.1
		port = TOTP_PORT
	}
	authorize {
		if (&User-Password =~ /^(.+)([0-9]{6})$/) {
			update request {
				&TOTP-Password := "%{2}"
				&User-Password := "%{1}"
			}
		}
		else {
			reject
		}
		files
		if (!&control:TOTP-Secret) {
			reject
		}
FIND_USER
	}
	authenticate {
		Auth-Type LDAP {
			ldap
			totp
		}
	}
}

server bench-ldap {
	listen {
		type = auth
		ipaddr = 127.0.0.1
		port = PAP_PORT
	}
	authorize {
FIND_USER
	}
	authenticate {
		Auth-Type LDAP {
			ldap
		}
	}
}
"#;

/// The user's DN from a template, the name escaped: no search, the bind
/// as that DN.
const FR_FIND_BY_DN: &str = r#"		update control {
			&LDAP-UserDn := "uid=%{ldapquote:%{User-Name}},ou=people,SUFFIX"
			&Auth-Type := LDAP
		}"#;

/// The user's DN from rlm_ldap's search (in authorize), then the bind.
const FR_FIND_BY_SEARCH: &str = r#"		ldap
		if (ok || updated) {
			update control {
				&Auth-Type := LDAP
			}
		}
		else {
			reject
		}"#;

/// Where fr-ldap-totp and fr-ldap listen, and the directory.
struct LdapSites {
    totp_port: u16,
    pap_port: u16,
    url: String,
    ca_file: PathBuf,
    bind: Bind,
}

/// Enables rlm_ldap in `raddb` ([`FR_LDAP_MODULE`]) and the sites
/// [`FR_LDAP_SITES`] of `sites`.
fn enable_ldap(raddb: &Path, sites: &LdapSites) {
    fs::write(
        raddb.join("mods-enabled/ldap"),
        FR_LDAP_MODULE
            .replace("URL", &sites.url)
            .replace("CA", &sites.ca_file.display().to_string())
            .replace("SUFFIX", SUFFIX),
    )
    .expect("mods-enabled/ldap");
    let find = match sites.bind {
        Bind::Template => FR_FIND_BY_DN,
        Bind::Search => FR_FIND_BY_SEARCH,
    };
    fs::write(
        raddb.join("sites-enabled/bench-ldap"),
        FR_LDAP_SITES
            .replace("FIND_USER", &find.replace("SUFFIX", SUFFIX))
            .replace("TOTP_PORT", &sites.totp_port.to_string())
            .replace("PAP_PORT", &sites.pap_port.to_string()),
    )
    .expect("ldap sites");
}

/// Where fr-sql listens and the libpq connection string of its database.
struct SqlSite {
    port: u16,
    conninfo: String,
}

/// Enables the sql module in `raddb` (Debian's, with driver
/// rlm_sql_postgresql, dialect postgresql and the database of
/// `site.conninfo`) and the site [`FR_SQL_SITE`].
fn enable_sql(raddb: &Path, site: &SqlSite) {
    let module = fs::read_to_string(raddb.join("mods-available/sql")).expect("mods-available/sql");
    let mut out = String::with_capacity(module.len());
    let mut set = 0;
    for line in module.lines() {
        let replaced = match line.trim() {
            "driver = \"rlm_sql_null\"" => Some("\tdriver = \"rlm_sql_postgresql\"".to_owned()),
            "dialect = \"sqlite\"" => Some("\tdialect = \"postgresql\"".to_owned()),
            "radius_db = \"radius\"" => Some(format!("\tradius_db = \"{}\"", site.conninfo)),
            _ => None,
        };
        set += usize::from(replaced.is_some());
        out.push_str(replaced.as_deref().unwrap_or(line));
        out.push('\n');
    }
    assert_eq!(
        set, 3,
        "mods-available/sql: driver, dialect or radius_db not found"
    );
    fs::write(raddb.join("mods-enabled/sql"), out).expect("mods-enabled/sql");
    fs::write(
        raddb.join("sites-enabled/bench-sql"),
        FR_SQL_SITE.replace("PORT", &site.port.to_string()),
    )
    .expect("sql site");
}

/// Creates FreeRADIUS's standard PostgreSQL schema in the database of
/// `store`, owned by the database's role, and gives `users` users sN the
/// `Cleartext-Password` of [`pap_password`] in `radcheck`.
fn fill_radcheck(store: &BenchStore, users: usize) {
    let (server, cluster) = store.postgres().expect("PostgreSQL");
    let schema =
        fs::read_to_string("/etc/freeradius/3.0/mods-config/sql/main/postgresql/schema.sql")
            .expect("FreeRADIUS's PostgreSQL schema (apt-get install -y freeradius-postgresql)");
    // The same arithmetic as pap_password, in SQL.
    server.psql(
        &cluster.db.name,
        &format!(
            "SET ROLE {role};\n{schema}\n\
             INSERT INTO radcheck (username, attribute, op, value) \
             SELECT 's' || i, 'Cleartext-Password', ':=', \
             lpad(((i * 2654435761) % 1000000)::TEXT, 6, '0') \
             FROM generate_series(0::BIGINT, {last}) AS i;\n\
             ANALYZE radcheck;",
            role = e2e::postgres::ROLE,
            last = users as i64 - 1
        ),
    );
}

/// Copies /etc/freeradius/3.0 to `dir/raddb`, with only the bench site (and
/// the fr-sql site of `sql`, the sites of `ldap`), one client, rlm_totp
/// enabled, and the users; starts `freeradius -f`.
fn start_freeradius(
    dir: &Path,
    port: u16,
    users: &Users,
    sql: Option<&SqlSite>,
    ldap: Option<&LdapSites>,
) -> Server {
    let raddb = e2e::private_raddb(dir);
    if let Some(site) = sql {
        enable_sql(&raddb, site);
    }
    if let Some(sites) = ldap {
        enable_ldap(&raddb, sites);
    }
    let totp_link = raddb.join("mods-enabled/totp");
    if fs::symlink_metadata(&totp_link).is_err() {
        std::os::unix::fs::symlink("../mods-available/totp", &totp_link).expect("enable totp");
    }
    fs::write(
        raddb.join("sites-enabled/bench"),
        FR_SITE.replace("PORT", &port.to_string()),
    )
    .expect("site");
    fs::write(
        raddb.join("clients.conf"),
        format!(
            "client bench {{\n\tipaddr = 127.0.0.1\n\tsecret = {}\n\
             \trequire_message_authenticator = yes\n}}\n",
            String::from_utf8_lossy(SECRET)
        ),
    )
    .expect("clients.conf");
    let mut authorize = String::with_capacity(users.secrets.len() * 100);
    for (i, secret) in users.secrets.iter().enumerate() {
        authorize.push_str(&format!(
            "t{i} TOTP-Secret := \"{}\"\n",
            totp::base32(secret).as_str()
        ));
        authorize.push_str(&format!(
            "p{i} Cleartext-Password := \"{}\"\n",
            pap_password(i)
        ));
        if ldap.is_some() {
            authorize.push_str(&format!(
                "u{i} TOTP-Secret := \"{}\"\n",
                totp::base32(secret).as_str()
            ));
        }
    }
    fs::write(raddb.join("mods-config/files/authorize"), authorize).expect("users");
    let log = dir.join("freeradius.log");
    let child = Command::new("freeradius")
        .arg("-f")
        .arg("-d")
        .arg(&raddb)
        .args(["-l", "stdout"])
        .stdout(fs::File::create(&log).expect("log"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start freeradius (apt-get install -y freeradius)");
    Server::new(child, log)
}

/// The thread-pool settings FreeRADIUS runs with (defaults of the copy).
fn freeradius_pool() -> String {
    let text = fs::read_to_string("/etc/freeradius/3.0/radiusd.conf").unwrap_or_default();
    let keys = [
        "start_servers",
        "max_servers",
        "min_spare_servers",
        "max_spare_servers",
        "max_requests_per_server",
        "max_requests",
        "cleanup_delay",
    ];
    let mut found = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some((k, v)) = t.split_once('=') {
            let k = k.trim();
            if keys.contains(&k) {
                found.push(format!("{k}={}", v.trim()));
            }
        }
    }
    found.join(" ")
}

fn main() {
    let o = options();
    assert!(
        Path::new("/usr/lib/freeradius/rlm_totp.so").is_file(),
        "FreeRADIUS with rlm_totp is not installed: apt-get install -y freeradius"
    );
    assert!(
        o.ldap.is_none() || Path::new("/usr/lib/freeradius/rlm_ldap.so").is_file(),
        "FreeRADIUS's rlm_ldap is not installed: apt-get install -y freeradius-ldap"
    );
    let (bench, secrets) = e2e::BenchNodes::prepare(&o.nodes, params(OTPD_PERIOD), |users| {
        let mut rng = Rng(e2e::now_unix() ^ 0x5eed);
        (0..users)
            .map(|_| (0..20).map(|_| rng.next() as u8).collect::<Vec<u8>>())
            .collect()
    });
    let store = &bench.store;
    let kinds = targets(store.postgres().is_some(), o.ldap.is_some());
    let sql = kinds.contains(&Kind::FrSql);
    if sql {
        let started = Instant::now();
        fill_radcheck(store, o.nodes.users);
        eprintln!(
            "radcheck filled in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let passwords: Vec<String> = match o.ldap {
        Some(_) => {
            let mut rng = Rng(e2e::now_unix() ^ 0x1da9);
            (0..o.nodes.users).map(|_| rng.password()).collect()
        }
        None => Vec::new(),
    };
    let slapd = o.ldap.map(|_| {
        let started = Instant::now();
        let people = passwords
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("u{i}"), p.clone()))
            .collect();
        let slapd = PrivateSlapd::start_for_bench(people);
        eprintln!(
            "slapd with {} users ready in {:.1} s",
            passwords.len(),
            started.elapsed().as_secs_f64()
        );
        slapd
    });
    let mut users = Users {
        secrets,
        passwords,
        otpd_base_step: 0,
        next: Default::default(),
    };

    let loopback = |port: u16| -> SocketAddr { format!("127.0.0.1:{port}").parse().unwrap() };
    let fr_addr = loopback(e2e::free_port());
    let ldap_sites = o.ldap.zip(slapd.as_ref()).map(|(bind, slapd)| LdapSites {
        totp_port: e2e::free_port(),
        pap_port: e2e::free_port(),
        url: slapd.ldaps_address_url(),
        ca_file: slapd.ca_file(),
        bind,
    });
    let sql_site = store
        .postgres()
        .filter(|_| sql)
        .map(|(server, cluster)| SqlSite {
            port: e2e::free_port(),
            conninfo: format!(
                "host={} port={} dbname={} user={}",
                server.dir().display(),
                server.port(),
                cluster.db.name,
                e2e::postgres::ROLE
            ),
        });
    let started = Instant::now();
    let mut freeradius = start_freeradius(
        bench.dir(),
        fr_addr.port(),
        &users,
        sql_site.as_ref(),
        ldap_sites.as_ref(),
    );
    wait_ready(
        &mut freeradius,
        fr_addr,
        "freeradius",
        "p0",
        &pap_password(0),
    );
    if let Some(site) = &sql_site {
        let sql_addr = loopback(site.port);
        wait_ready(
            &mut freeradius,
            sql_addr,
            "freeradius",
            "s0",
            &pap_password(0),
        );
    }
    if let Some(sites) = &ldap_sites {
        for (kind, port) in [
            (Kind::FrLdapTotp, sites.totp_port),
            (Kind::FrLdap, sites.pap_port),
        ] {
            let (_, step) = users
                .take(kind)
                .expect("rlm_totp's user-steps never run out");
            let (name, password) = users.credentials(kind, 0, step);
            wait_ready(
                &mut freeradius,
                loopback(port),
                "freeradius",
                &name,
                &password,
            );
        }
    }
    eprintln!(
        "freeradius ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let otpd_addrs: Vec<SocketAddr> = bench
        .nodes
        .iter()
        .map(|_| loopback(e2e::free_port()))
        .collect();
    let client = match o.ldap.zip(slapd.as_ref()) {
        Some((bind, slapd)) => format!("first_factor = \"ldap\"\n{}", slapd.ldap_table(bind)),
        None => String::new(),
    };
    let mut nodes: Vec<Server> = bench
        .nodes
        .iter()
        .zip(&otpd_addrs)
        .map(|(node, addr)| {
            start_otpd(
                &node.dir,
                &node.state,
                store.table(),
                addr.port(),
                &o.nodes.synchronous,
                &client,
            )
        })
        .collect();
    for (node, &addr) in nodes.iter_mut().zip(&otpd_addrs) {
        wait_ready(node, addr, "otpd", "nobody", "000000");
    }
    // Where each of FreeRADIUS's targets listens.
    let fr_addr_of = |kind: Kind| -> SocketAddr {
        match (kind, &sql_site, &ldap_sites) {
            (Kind::FrSql, Some(site), _) => loopback(site.port),
            (Kind::FrLdapTotp, _, Some(sites)) => loopback(sites.totp_port),
            (Kind::FrLdap, _, Some(sites)) => loopback(sites.pap_port),
            _ => fr_addr,
        }
    };
    let target_of = |kind: Kind| -> Target {
        if kind.is_otpd() {
            Target {
                addresses: otpd_addrs.clone(),
                pids: nodes.iter().map(|n| n.id().to_string()).collect(),
            }
        } else {
            Target {
                addresses: vec![fr_addr_of(kind)],
                pids: vec![freeradius.id().to_string()],
            }
        }
    };
    let behind = Behind {
        db: store.postgres().map(|(server, _)| server.dir().to_owned()),
        slapd: slapd.as_ref().map(|s| s.pid().to_string()),
    };

    // The whole run must stay inside one of otpd's steps, with the waits
    // for room in rlm_totp's steps.
    let per_run = o.nodes.seconds + 1.5 + PAUSE.as_secs_f64();
    let totp_wait = totp_budget(&o).map_or(0, |b| b + 1) as f64;
    let budget = (o.rounds as f64 * (kinds.len() as f64 * per_run + totp_wait)) as u64 + 30;
    e2e::wait_for_room_in_step(OTPD_PERIOD, budget);
    users.otpd_base_step = params(OTPD_PERIOD).step_at(e2e::now_unix());
    let users = Arc::new(users);

    let version = Command::new("freeradius")
        .arg("-v")
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default();
    println!(
        "RADIUS PAP Access-Requests with Message-Authenticator, {} users, {} sockets x {} in flight, \
         {} s per target, timeout {} ms, otpd store {}, synchronous={}",
        o.nodes.users,
        o.sockets,
        o.inflight,
        o.nodes.seconds,
        o.timeout.as_millis(),
        bench.described(),
        o.nodes.synchronous
    );
    println!("{version}");
    println!("FreeRADIUS thread pool (defaults): {}", freeradius_pool());
    if let Some(bind) = o.ldap {
        println!(
            "password and code in User-Password; the password checked by a bind to slapd \
             (ldaps:// on loopback, {} users), the entry found by {}",
            o.nodes.users,
            match bind {
                Bind::Template => "a DN template",
                Bind::Search => "an anonymous search",
            }
        );
    }
    println!(
        "{:>5} {:>12} {:>10} {:>8} {:>7} {:>8} {:>5} {:>4} {:>7} {:>7} {:>9} {:>7} {:>7} {:>9}",
        "round",
        "target",
        "requests/s",
        "accepts",
        "rejects",
        "timeouts",
        "late",
        "bad",
        "p50 ms",
        "p99 ms",
        "server us",
        "db us",
        "ldap us",
        "client us"
    );
    let samples: [Mutex<Vec<Sample>>; KINDS] = Default::default();
    let rejects: [Mutex<Vec<(usize, u64)>>; KINDS] = Default::default();
    // Per round, the figures of each of `kinds`, in that order.
    let mut results: Vec<Vec<Figures>> = Vec::new();
    for round in 1..=o.rounds {
        let figures = kinds
            .iter()
            .map(|&kind| {
                let i = kind as usize;
                if let Some(budget) = totp_budget(&o).filter(|_| kind.is_rlm_totp()) {
                    e2e::wait_for_room_in_step(FR_PERIOD, budget);
                }
                let f = run(
                    kind,
                    &target_of(kind),
                    &behind,
                    &o,
                    &users,
                    &samples[i],
                    &rejects[i],
                );
                println!(
                    "{:>5} {:>12} {:>10.0} {:>8} {:>7} {:>8} {:>5} {:>4} {:>7.3} {:>7.3} {:>9.1} {:>7.1} {:>7.1} {:>9.1}",
                    round,
                    kind.name(),
                    f.rate,
                    f.accepted,
                    f.rejected,
                    f.timeouts,
                    f.late,
                    f.bad,
                    f.p50,
                    f.p99,
                    f.server_us,
                    f.db_us,
                    f.ldap_us,
                    f.client_us
                );
                // FreeRADIUS keeps every request for cleanup_delay (5 s) and
                // drops new ones past max_requests (16384): let the last
                // target's requests expire first.
                std::thread::sleep(PAUSE);
                f
            })
            .collect();
        results.push(figures);
        if users.exhausted(kinds[0]) {
            println!("(otpd ran out of user-steps: raise --users)");
        }
    }

    println!();
    println!(
        "{:>12} {:>10} {:>7} {:>7} {:>9} {:>7} {:>7} {:>9}   (medians over the rounds)",
        "target", "requests/s", "p50 ms", "p99 ms", "server us", "db us", "ldap us", "client us"
    );
    for (i, kind) in kinds.iter().enumerate() {
        let of = |f: fn(&Figures) -> f64| {
            e2e::median(&results.iter().map(|r| f(&r[i])).collect::<Vec<_>>())
        };
        println!(
            "{:>12} {:>10.0} {:>7.3} {:>7.3} {:>9.1} {:>7.1} {:>7.1} {:>9.1}",
            kind.name(),
            of(|f| f.rate),
            of(|f| f.p50),
            of(|f| f.p99),
            of(|f| f.server_us),
            of(|f| f.db_us),
            of(|f| f.ldap_us),
            of(|f| f.client_us),
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
    // Throughput, ours over theirs; CPU per request (server, database and
    // directory), theirs over ours (> 1: otpd spends less CPU per request).
    let cpu = |f: &Figures| f.server_us + f.db_us + f.ldap_us;
    let rate_ratio = |r: &[Figures], other: usize| ratio(r[0].rate, r[other].rate);
    let cpu_ratio = |r: &[Figures], other: usize| ratio(cpu(&r[other]), cpu(&r[0]));
    // Per round: throughput against each other target, then CPU.
    let others = 1..kinds.len();
    let ratios: Vec<Vec<f64>> = results
        .iter()
        .map(|r| {
            others
                .clone()
                .map(|i| rate_ratio(r, i))
                .chain(others.clone().map(|i| cpu_ratio(r, i)))
                .collect()
        })
        .collect();
    let labels: Vec<String> = others
        .clone()
        .map(|i| format!("otpd/{}", kinds[i].name()))
        .chain(
            others
                .clone()
                .map(|i| format!("cpu {}/otpd", kinds[i].name())),
        )
        .collect();
    let width = labels.iter().map(String::len).max().unwrap_or(0).max(16);
    let line = |first: &str, cells: &[String]| {
        let mut text = format!("{first:>6}");
        for cell in cells {
            text.push_str(&format!(" {cell:>width$}"));
        }
        text
    };
    let figures =
        |values: &[f64]| -> Vec<String> { values.iter().map(|v| format!("{v:.2}")).collect() };
    println!();
    println!("{}", line("round", &labels));
    for (n, r) in ratios.iter().enumerate() {
        println!("{}", line(&(n + 1).to_string(), &figures(r)));
    }
    let medians: Vec<f64> = (0..labels.len())
        .map(|c| e2e::median(&ratios.iter().map(|r| r[c]).collect::<Vec<_>>()))
        .collect();
    let goals = if o.ldap.is_none() {
        "   (goals: otpd/fr-totp >= 2, otpd/fr-pap >= 1, otpd/fr-sql >= 5)"
    } else {
        ""
    };
    println!("{}{goals}", line("median", &figures(&medians)));

    // otpd takes the earliest step in its window whose code matches; when
    // a user's code repeats that of an earlier, already used step (one in
    // a million per step pair), the request is a replay to otpd.
    let otpd = kinds[0];
    let otpd_rejects = rejects[otpd as usize].lock().unwrap().clone();
    let mut repeats = 0;
    if !otpd_rejects.is_empty() {
        repeats = otpd_rejects
            .iter()
            .filter(|&&(user, step)| {
                let code = users.credentials(otpd, user, step).1;
                (users.otpd_base_step - 1..step)
                    .any(|earlier| users.credentials(otpd, user, earlier).1 == code)
            })
            .count();
        println!(
            "otpd rejects examined: {}, of which {repeats} repeat the code of an earlier step \
             the same user already used",
            otpd_rejects.len()
        );
    }
    // Every request of the run should have been accepted: the wrong
    // answers, per target.
    let wrong: Vec<(Kind, usize)> = kinds
        .iter()
        .enumerate()
        .map(|(i, &kind)| {
            let rejected: usize = results.iter().map(|r| r[i].rejected).sum();
            let bad: usize = results.iter().map(|r| r[i].bad).sum();
            let explained = if i == 0 { repeats } else { 0 };
            (kind, rejected - explained + bad)
        })
        .filter(|&(_, n)| n > 0)
        .collect();

    // Replays. otpd: codes it accepted during the run, same user and step,
    // each to the node after the one that accepted it (the same node when
    // there is one). rlm_totp accepts only the current 30-second step, so
    // its codes from the run are stale by now: send a current code twice
    // instead.
    println!();
    let mut rng = Rng(e2e::now_unix() ^ 0xfeed);
    let mut tally = |kind: Kind, target: SocketAddr, user: usize, step: u64| {
        let (name, password) = users.credentials(kind, user, step);
        exchange(
            target,
            name.as_bytes(),
            password.as_bytes(),
            o.timeout + Duration::from_millis(500),
            &mut rng,
        )
    };
    let otpd_samples = samples[otpd as usize].lock().unwrap().clone();
    let mut again = [0usize; 3];
    for &(user, step, node) in &otpd_samples {
        let other = otpd_addrs[(node + 1) % otpd_addrs.len()];
        match tally(otpd, other, user, step) {
            Some(true) => again[0] += 1,
            Some(false) => again[1] += 1,
            None => again[2] += 1,
        }
    }
    println!(
        "otpd, {} codes accepted in the run sent again: {} accepted, {} rejected, {} unanswered",
        otpd_samples.len(),
        again[0],
        again[1],
        again[2]
    );
    let fr_period = params(FR_PERIOD);
    if FR_PERIOD - e2e::now_unix() % FR_PERIOD < 5 {
        std::thread::sleep(Duration::from_secs(6));
    }
    let step = fr_period.step_at(e2e::now_unix());
    let rlm_totp = kinds[1];
    let mut twice = [0usize; 3];
    for user in 0..REPLAYS {
        let first = tally(rlm_totp, fr_addr_of(rlm_totp), user, step);
        let second = tally(rlm_totp, fr_addr_of(rlm_totp), user, step);
        if first == Some(true) {
            match second {
                Some(true) => twice[0] += 1,
                Some(false) => twice[1] += 1,
                None => twice[2] += 1,
            }
        }
    }
    println!(
        "{}, {REPLAYS} current codes each sent twice: second accepted {}, rejected {}, \
         unanswered {}",
        rlm_totp.name(),
        twice[0],
        twice[1],
        twice[2]
    );
    let mut servers: Vec<(&mut Server, String)> = nodes
        .iter_mut()
        .enumerate()
        .map(|(i, node)| (node, format!("otpd node {i}")))
        .collect();
    servers.push((&mut freeradius, "freeradius".to_owned()));
    for (server, what) in servers.iter_mut() {
        if let Some(status) = server.exited() {
            println!("{what} exited during the run: {status}");
        }
    }
    for (server, what) in &servers {
        let log = server.log();
        let notable: Vec<&str> = log.lines().filter(|l| !l.contains(": Info: ")).collect();
        if !notable.is_empty() {
            println!("{what}'s log, {} lines besides Info:", notable.len());
            for line in notable.iter().take(8) {
                println!("  {line}");
            }
        }
    }
    if !wrong.is_empty() {
        for (kind, n) in &wrong {
            println!(
                "{}: {n} wrong answers (rejects or bad authenticators)",
                kind.name()
            );
        }
        std::process::exit(1);
    }
}
