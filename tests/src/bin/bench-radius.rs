//! RADIUS throughput and latency: otpd against FreeRADIUS 3.2 with
//! rlm_totp and with plain PAP, on this machine, in alternating rounds.
//!
//! As root, with `apt-get install -y freeradius` done: gives N users a
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
//! The load generator is this program: `--sockets` UDP sockets, one thread
//! each, every socket with `--inflight` Access-Requests outstanding
//! (User-Name, PAP User-Password, Message-Authenticator), each for a
//! distinct user with a valid code (for otpd: users × the previous, current
//! and next step, in that order). A request unanswered after `--timeout-ms`
//! counts as a timeout and is not retransmitted. Each round runs otpd,
//! fr-totp and fr-pap for `--seconds` each; the end prints the medians and
//! the per-round ratios. Last, a replay check: codes accepted during the
//! run are sent again (same user, same step) to otpd and to rlm_totp.
//!
//! cargo build --release -p otpd && cargo build --release -p e2e --bin bench-radius
//! target/release/bench-radius [--users N] [--seconds S] [--rounds R]
//!     [--sockets K] [--inflight W] [--timeout-ms T] [--synchronous normal|full]

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use otpcore::radius::{self, code, Packet};
use otpcore::totp::{self, Algorithm, TokenParams};
use otpstore::{ImportedToken, Store};

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
    users: usize,
    seconds: f64,
    rounds: usize,
    sockets: usize,
    inflight: usize,
    timeout: Duration,
    synchronous: String,
}

fn options() -> Options {
    let mut o = Options {
        users: 100_000,
        seconds: 3.0,
        rounds: 3,
        // At most 63: FreeRADIUS's default max_requests (16384) is 64
        // sockets' worth of identifiers, and it drops requests past it.
        sockets: 32,
        inflight: 4,
        timeout: Duration::from_secs(1),
        synchronous: "normal".to_owned(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        match pair[0].as_str() {
            "--users" => o.users = value.parse().expect("--users N"),
            "--seconds" => o.seconds = value.parse().expect("--seconds S"),
            "--rounds" => o.rounds = value.parse().expect("--rounds R"),
            "--sockets" => o.sockets = value.parse().expect("--sockets K"),
            "--inflight" => o.inflight = value.parse().expect("--inflight W"),
            "--timeout-ms" => {
                o.timeout = Duration::from_millis(value.parse().expect("--timeout-ms T"))
            }
            "--synchronous" => o.synchronous = value.to_owned(),
            other => {
                panic!("unknown option {other}; see the comment at the top of bench-radius.rs")
            }
        }
    }
    assert!(
        (1..=200).contains(&o.inflight),
        "--inflight must be 1 to 200 (one RADIUS identifier each)"
    );
    o
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
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Otpd => "otpd",
            Kind::FrTotp => "fr-totp",
            Kind::FrPap => "fr-pap",
        }
    }
}

const KINDS: [Kind; 3] = [Kind::Otpd, Kind::FrTotp, Kind::FrPap];

/// The users and which (user, step) each target gets next.
struct Users {
    secrets: Vec<Vec<u8>>,
    otpd_base_step: u64,
    next: [AtomicUsize; 3],
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
            Kind::Otpd => {
                let pass = n / self.secrets.len();
                (pass < 3).then(|| (user, self.otpd_base_step - 1 + pass as u64))
            }
            Kind::FrTotp => Some((user, params(FR_PERIOD).step_at(e2e::now_unix()))),
            Kind::FrPap => Some((user, 0)),
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
        }
    }

    fn exhausted(&self) -> bool {
        self.next[Kind::Otpd as usize].load(Ordering::Relaxed) >= 3 * self.secrets.len()
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
    /// Answers that match no outstanding request or fail the
    /// Response Authenticator check.
    bad: usize,
    /// Some accepted (user, step), for the replay check.
    accepted_samples: Vec<(usize, u64)>,
    /// Some rejected (user, step), to explain them.
    rejected_samples: Vec<(usize, u64)>,
}

struct Load {
    kind: Kind,
    target: SocketAddr,
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
    let mut outstanding = 0usize;
    let mut next_id = (load.seed % 256) as usize;
    let mut tally = Tally::default();
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
                    tally.bad += 1;
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
            for slot in slots.iter_mut() {
                if slot
                    .as_ref()
                    .is_some_and(|p| now.duration_since(p.sent) >= load.timeout)
                {
                    *slot = None;
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
    bad: usize,
    p50: f64,
    p99: f64,
    /// CPU time the server process spent per answered request, µs.
    server_us: f64,
    /// CPU time this load generator spent per answered request, µs.
    client_us: f64,
}

/// utime + stime of a process (all its threads), in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that closes the command name: state is field 3,
    // utime 14 and stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> f64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0.0) };
    (ticks(11) + ticks(12)) / clock_ticks()
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

fn run(
    kind: Kind,
    target: SocketAddr,
    server_pid: u32,
    o: &Options,
    users: &Arc<Users>,
    samples: &Mutex<Vec<(usize, u64)>>,
    rejects: &Mutex<Vec<(usize, u64)>>,
) -> Figures {
    let server_pid = server_pid.to_string();
    let server_cpu = cpu_seconds(&server_pid);
    let client_cpu = cpu_seconds("self");
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..o.sockets)
        .map(|i| {
            let load = Load {
                kind,
                target,
                inflight: o.inflight,
                timeout: o.timeout,
                seed: (i as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ e2e::now_unix(),
            };
            let (users, stop) = (Arc::clone(users), Arc::clone(&stop));
            std::thread::spawn(move || client(&load, &users, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(o.seconds));
    stop.store(true, Ordering::Relaxed);
    let window = started.elapsed().as_secs_f64();
    let tallies: Vec<Tally> = handles
        .into_iter()
        .map(|h| h.join().expect("client"))
        .collect();
    let server_cpu = cpu_seconds(&server_pid) - server_cpu;
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
            for s in &t.accepted_samples {
                if samples.len() < REPLAYS {
                    samples.push(*s);
                }
            }
        }
    }
    Figures {
        rate: tallies.iter().map(|t| t.in_window).sum::<usize>() as f64 / window,
        accepted: tallies.iter().map(|t| t.accepted).sum(),
        rejected: tallies.iter().map(|t| t.rejected).sum(),
        timeouts: tallies.iter().map(|t| t.timeouts).sum(),
        bad: tallies.iter().map(|t| t.bad).sum(),
        p50: percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        p99: percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        server_us: server_cpu / answered * 1e6,
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

/// A child process killed on drop.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `target` answers an Access-Request from `user` (FreeRADIUS
/// delays rejects by its `reject_delay`, 1 s, so it gets a valid one).
fn wait_ready(server: &mut Server, target: SocketAddr, what: &str, user: &str, password: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rng = Rng(e2e::now_unix());
    loop {
        if let Some(status) = server.child.try_wait().expect("try_wait") {
            panic!(
                "{what} exited at start-up: {status}\n{}",
                fs::read_to_string(&server.log).unwrap_or_default()
            );
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
            fs::read_to_string(&server.log).unwrap_or_default()
        );
    }
}

fn start_otpd(dir: &Path, state: &Path, port: u16, synchronous: &str) -> Server {
    let config = dir.join("otpd.toml");
    fs::write(
        &config,
        format!(
            "service_id = \"BENCH\"\nissuer = \"bench\"\nstate_dir = \"{}\"\n\
             sqlite_synchronous = \"{synchronous}\"\n\
             [radius]\nlisten = \"127.0.0.1:{port}\"\nrequire_message_authenticator = true\n\
             [[radius.client]]\nname = \"bench\"\naddress = \"127.0.0.1/32\"\nsecret = \"{}\"\n",
            state.display(),
            String::from_utf8_lossy(SECRET)
        ),
    )
    .expect("config");
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).expect("chmod");
    let log = dir.join("otpd.log");
    let child = Command::new(e2e::otpd_bin())
        .arg("--config")
        .arg(&config)
        // One log line per decision would measure the terminal.
        .env("OTPD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start otpd");
    Server { child, log }
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

/// Copies /etc/freeradius/3.0 to `dir/raddb`, with only the bench site,
/// one client, rlm_totp enabled, and the users; starts `freeradius -f`.
fn start_freeradius(dir: &Path, port: u16, users: &Users) -> Server {
    let raddb = e2e::private_raddb(dir);
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
    Server { child, log }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
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
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");

    eprintln!("generating and importing {} users", o.users);
    let started = Instant::now();
    let secrets: Vec<Vec<u8>> = {
        let mut rng = Rng(e2e::now_unix() ^ 0x5eed);
        (0..o.users)
            .map(|_| (0..20).map(|_| rng.next() as u8).collect::<Vec<u8>>())
            .collect()
    };
    {
        let store = Store::open(&state).expect("store");
        let names: Vec<String> = (0..o.users).map(|i| format!("u{i}")).collect();
        let tokens: Vec<ImportedToken<'_>> = names
            .iter()
            .zip(&secrets)
            .map(|(user, secret)| ImportedToken {
                user,
                secret,
                params: params(OTPD_PERIOD),
                last_step: None,
            })
            .collect();
        store
            .import_tokens(&tokens, "BENCH", false, e2e::now_unix())
            .expect("import");
    }
    eprintln!("imported in {:.1} s", started.elapsed().as_secs_f64());
    let mut users = Users {
        secrets,
        otpd_base_step: 0,
        next: [
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        ],
    };

    let otpd_port = e2e::free_port();
    let fr_port = e2e::free_port();
    let otpd_addr: SocketAddr = format!("127.0.0.1:{otpd_port}").parse().unwrap();
    let fr_addr: SocketAddr = format!("127.0.0.1:{fr_port}").parse().unwrap();
    let started = Instant::now();
    let mut freeradius = start_freeradius(dir.path(), fr_port, &users);
    wait_ready(
        &mut freeradius,
        fr_addr,
        "freeradius",
        "p0",
        &pap_password(0),
    );
    eprintln!(
        "freeradius ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut otpd = start_otpd(dir.path(), &state, otpd_port, &o.synchronous);
    wait_ready(&mut otpd, otpd_addr, "otpd", "nobody", "000000");

    // The whole run must stay inside one of otpd's steps.
    let budget = (o.rounds as f64 * 3.0 * (o.seconds + 1.5 + PAUSE.as_secs_f64())) as u64 + 30;
    let left = OTPD_PERIOD - e2e::now_unix() % OTPD_PERIOD;
    if left < budget {
        eprintln!("waiting {left} s for a fresh {OTPD_PERIOD}-second step");
        std::thread::sleep(Duration::from_secs(left + 1));
    }
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
         {} s per target, timeout {} ms, otpd synchronous={}",
        o.users,
        o.sockets,
        o.inflight,
        o.seconds,
        o.timeout.as_millis(),
        o.synchronous
    );
    println!("{version}");
    println!("FreeRADIUS thread pool (defaults): {}", freeradius_pool());
    println!(
        "{:>5} {:>8} {:>10} {:>8} {:>7} {:>8} {:>4} {:>7} {:>7} {:>9} {:>9}",
        "round",
        "target",
        "requests/s",
        "accepts",
        "rejects",
        "timeouts",
        "bad",
        "p50 ms",
        "p99 ms",
        "server us",
        "client us"
    );
    let samples: [Mutex<Vec<(usize, u64)>>; 3] = Default::default();
    let rejects: [Mutex<Vec<(usize, u64)>>; 3] = Default::default();
    let mut results: Vec<[Figures; 3]> = Vec::new();
    for round in 1..=o.rounds {
        let figures = KINDS.map(|kind| {
            let (target, pid) = if kind == Kind::Otpd {
                (otpd_addr, otpd.child.id())
            } else {
                (fr_addr, freeradius.child.id())
            };
            let i = kind as usize;
            let f = run(kind, target, pid, &o, &users, &samples[i], &rejects[i]);
            println!(
                "{:>5} {:>8} {:>10.0} {:>8} {:>7} {:>8} {:>4} {:>7.3} {:>7.3} {:>9.1} {:>9.1}",
                round,
                kind.name(),
                f.rate,
                f.accepted,
                f.rejected,
                f.timeouts,
                f.bad,
                f.p50,
                f.p99,
                f.server_us,
                f.client_us
            );
            // FreeRADIUS keeps every request for cleanup_delay (5 s) and
            // drops new ones past max_requests (16384): let the last
            // target's requests expire first.
            std::thread::sleep(PAUSE);
            f
        });
        results.push(figures);
        if users.exhausted() {
            println!("(otpd ran out of user-steps: raise --users)");
        }
    }

    println!();
    println!(
        "{:>8} {:>10} {:>7} {:>7} {:>9} {:>9}   (medians over the rounds)",
        "target", "requests/s", "p50 ms", "p99 ms", "server us", "client us"
    );
    for kind in KINDS {
        let i = kind as usize;
        println!(
            "{:>8} {:>10.0} {:>7.3} {:>7.3} {:>9.1} {:>9.1}",
            kind.name(),
            median(results.iter().map(|r| r[i].rate).collect()),
            median(results.iter().map(|r| r[i].p50).collect()),
            median(results.iter().map(|r| r[i].p99).collect()),
            median(results.iter().map(|r| r[i].server_us).collect()),
            median(results.iter().map(|r| r[i].client_us).collect()),
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
    // Throughput, ours over theirs; server CPU per request, theirs over
    // ours (> 1: otpd spends less CPU per request).
    let rate_ratio = |r: &[Figures; 3], other: usize| ratio(r[0].rate, r[other].rate);
    let cpu_ratio = |r: &[Figures; 3], other: usize| ratio(r[other].server_us, r[0].server_us);
    println!();
    println!(
        "{:>6} {:>13} {:>12} {:>17} {:>16}",
        "round", "otpd/fr-totp", "otpd/fr-pap", "cpu fr-totp/otpd", "cpu fr-pap/otpd"
    );
    for (i, r) in results.iter().enumerate() {
        println!(
            "{:>6} {:>13.2} {:>12.2} {:>17.2} {:>16.2}",
            i + 1,
            rate_ratio(r, 1),
            rate_ratio(r, 2),
            cpu_ratio(r, 1),
            cpu_ratio(r, 2)
        );
    }
    println!(
        "{:>6} {:>13.2} {:>12.2} {:>17.2} {:>16.2}   (throughput goal: >= 2 and >= 1)",
        "median",
        median(results.iter().map(|r| rate_ratio(r, 1)).collect()),
        median(results.iter().map(|r| rate_ratio(r, 2)).collect()),
        median(results.iter().map(|r| cpu_ratio(r, 1)).collect()),
        median(results.iter().map(|r| cpu_ratio(r, 2)).collect()),
    );

    // otpd takes the earliest step in its window whose code matches; when
    // a user's code repeats that of an earlier, already used step (one in
    // a million per step pair), the request is a replay to otpd.
    let otpd_rejects = rejects[Kind::Otpd as usize].lock().unwrap().clone();
    if !otpd_rejects.is_empty() {
        let repeats = otpd_rejects
            .iter()
            .filter(|&&(user, step)| {
                let code = users.credentials(Kind::Otpd, user, step).1;
                (users.otpd_base_step - 1..step)
                    .any(|earlier| users.credentials(Kind::Otpd, user, earlier).1 == code)
            })
            .count();
        println!(
            "otpd rejects examined: {}, of which {repeats} repeat the code of an earlier step \
             the same user already used",
            otpd_rejects.len()
        );
    }

    // Replays. otpd: codes it accepted during the run, same user and step.
    // rlm_totp accepts only the current 30-second step, so its codes from
    // the run are stale by now: send a current code twice instead.
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
    let otpd_samples = samples[Kind::Otpd as usize].lock().unwrap().clone();
    let mut again = [0usize; 3];
    for &(user, step) in &otpd_samples {
        match tally(Kind::Otpd, otpd_addr, user, step) {
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
    let mut twice = [0usize; 3];
    for user in 0..REPLAYS {
        let first = tally(Kind::FrTotp, fr_addr, user, step);
        let second = tally(Kind::FrTotp, fr_addr, user, step);
        if first == Some(true) {
            match second {
                Some(true) => twice[0] += 1,
                Some(false) => twice[1] += 1,
                None => twice[2] += 1,
            }
        }
    }
    println!(
        "fr-totp, {REPLAYS} current codes each sent twice: second accepted {}, rejected {}, \
         unanswered {}",
        twice[0], twice[1], twice[2]
    );
    for (server, what) in [(&mut otpd, "otpd"), (&mut freeradius, "freeradius")] {
        if let Some(status) = server.child.try_wait().expect("try_wait") {
            println!("{what} exited during the run: {status}");
        }
    }
    for (server, what) in [(&otpd, "otpd"), (&freeradius, "freeradius")] {
        let log = fs::read_to_string(&server.log).unwrap_or_default();
        let notable: Vec<&str> = log.lines().filter(|l| !l.contains(": Info: ")).collect();
        if !notable.is_empty() {
            println!("{what}'s log, {} lines besides Info:", notable.len());
            for line in notable.iter().take(8) {
                println!("  {line}");
            }
        }
    }
}
