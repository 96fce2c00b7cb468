//! HTTP connections are bounded, end to end (root only). An otpd allowed
//! 1,024 open files (systemd's default soft limit, here the hard limit as
//! well, so otpd cannot raise it) faces 1,100 connections that send
//! nothing, stop after the HTTP/2 preface, stop after the TLS handshake, or
//! send their body one byte every two seconds. While they are open,
//! pamtester logs in through the PAM socket in its usual time and a normal
//! request is answered; otpd stays well below its descriptor limit, never
//! runs out of descriptors, and closes every one of those connections
//! itself. Only loopback is flooded, with a bounded number of connections
//! for a bounded time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{
    describe, oathtool_code, otpd_bin, require_root_and_peers, said, socket_exchange,
    write_private_file, PamService, TestEnv,
};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use serde_json::json;

/// otpd's open-files limit (soft and hard) in these tests.
const NOFILE: u64 = 1024;
/// Connections in one flood.
const FLOOD: usize = 1100;
/// otpd's bound on a connection that has not completed a request since it
/// was accepted, and on reading one request body.
const BOUND: Duration = Duration::from_secs(10);
/// otpd serves at most half its descriptors' worth of HTTP connections at
/// once; the others wait in the listen queue until served ones close. A
/// flood of [`FLOOD`] idle connections therefore drains in this many
/// rounds of [`BOUND`].
const ROUNDS: u32 = 3;
/// How long pam_otp.so waits for otpd by default (`timeout_ms`): a login
/// that takes longer has failed.
const PAM_TIMEOUT: Duration = Duration::from_secs(5);
/// A slow body's client sends one byte this often.
const DRIP: Duration = Duration::from_secs(2);
/// The HTTP/2 connection preface followed by an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Lets this process hold a flood's client sockets.
fn raise_own_open_files() {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let wanted = (4 * FLOOD as u64).max(soft);
    let hard = hard.max(wanted);
    setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).expect("raise RLIMIT_NOFILE of the test");
}

/// An otpd started under `prlimit --nofile=NOFILE:NOFILE` on a TestEnv's
/// state and socket; killed on drop.
struct LimitedOtpd {
    child: Child,
    log: PathBuf,
}

impl LimitedOtpd {
    fn start(env: &TestEnv, config: &Path, name: &str) -> LimitedOtpd {
        let log = env.root().join(format!("{name}.log"));
        let child = Command::new("prlimit")
            .arg(format!("--nofile={NOFILE}:{NOFILE}"))
            .arg("--")
            .arg(otpd_bin())
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(File::create(env.root().join(format!("{name}.out"))).expect("out file"))
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("start otpd under prlimit");
        let mut otpd = LimitedOtpd { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = socket_exchange(&env.socket_path(), &[json!({"op": "status"})]);
            let listening = TcpStream::connect(("127.0.0.1", env.http_port)).is_ok();
            if listening && matches!(&status, Ok(a) if a[0]["result"] == "ok") {
                break;
            }
            if let Some(exit) = otpd.child.try_wait().expect("try_wait") {
                panic!("otpd exited with {exit}:\n{}", otpd.log());
            }
            assert!(
                Instant::now() < deadline,
                "otpd did not start:\n{}",
                otpd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let limits = fs::read_to_string(format!("/proc/{}/limits", otpd.pid())).expect("limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("open files line");
        let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
        assert_eq!(
            numbers,
            [NOFILE.to_string(), NOFILE.to_string()],
            "otpd's limit: {line}"
        );
        otpd
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Descriptors otpd holds now.
    fn fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LimitedOtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- otpd (nofile {NOFILE}) stderr ---\n{}", self.log());
        }
    }
}

/// What a flood connection does after connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Nothing at all.
    Silent,
    /// The HTTP/2 prior-knowledge preface and an empty SETTINGS frame.
    H2Preface,
    /// Request headers announcing a 1,000-byte body, then one byte every
    /// [`DRIP`].
    SlowBody,
    /// A complete TLS handshake, then nothing.
    TlsIdle,
}

struct Conn {
    kind: Kind,
    stream: TcpStream,
    /// Since the flood began, when the server closed it.
    closed_after: Option<Duration>,
    /// The first bytes the server sent.
    received: Vec<u8>,
}

/// A client for the TLS otpd: trusts only `cert`.
fn tls_client(cert: &rcgen::Certificate) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn tls_session(config: &Arc<rustls::ClientConfig>) -> rustls::ClientConnection {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    rustls::ClientConnection::new(Arc::clone(config), name).expect("client")
}

/// Opens one connection of `kind`; `Err` when connecting failed.
fn open(
    kind: Kind,
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    match kind {
        Kind::Silent => {}
        Kind::H2Preface => stream.write_all(H2_PREFACE)?,
        Kind::SlowBody => stream.write_all(
            b"POST /api/v1/activate HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
        )?,
        Kind::TlsIdle => {
            let mut session = tls_session(tls.expect("a TLS client"));
            while session.is_handshaking() {
                session.complete_io(&mut stream)?;
            }
        }
    }
    Ok(stream)
}

/// What one flood showed.
struct Figures {
    connected: usize,
    connect_failures: usize,
    fds_before: usize,
    fds_max: usize,
    fds_after: usize,
    pam: Output,
    pam_took: Duration,
    /// Status line of the normal request and how long it took.
    normal: (String, Duration),
    /// When the first and the last flood connection were closed by otpd.
    first_closed: Option<Duration>,
    last_closed: Option<Duration>,
    /// Connections closed within [`BOUND`] and a few seconds of the start.
    closed_in_first_round: usize,
    still_open: Vec<Kind>,
    /// Slow-body connections whose answer was not a 408.
    slow_without_408: usize,
}

/// Floods `otpd` with `plan` (kinds and counts, opened in this order),
/// logs alice in with pamtester and sends `normal` while the connections
/// are open, then waits for otpd to close them.
fn flood(
    env: &TestEnv,
    otpd: &LimitedOtpd,
    secret: &str,
    plan: &[(Kind, usize)],
    tls: Option<&Arc<rustls::ClientConfig>>,
    normal: impl FnOnce() -> std::io::Result<String> + Send + 'static,
) -> Figures {
    let addr = SocketAddr::from(([127, 0, 0, 1], env.http_port));
    let fds_before = otpd.fds();
    let stop = Arc::new(AtomicBool::new(false));
    let fds_max = Arc::new(AtomicUsize::new(fds_before));
    let sampler = {
        let (stop, fds_max) = (Arc::clone(&stop), Arc::clone(&fds_max));
        let fd_dir = format!("/proc/{}/fd", otpd.pid());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = fs::read_dir(&fd_dir).map(|d| d.count()).unwrap_or(0);
                fds_max.fetch_max(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let started = Instant::now();
    let mut conns = Vec::new();
    let mut connect_failures = 0;
    for &(kind, count) in plan {
        for _ in 0..count {
            match open(kind, addr, tls) {
                Ok(stream) => conns.push(Conn {
                    kind,
                    stream,
                    closed_after: None,
                    received: Vec::new(),
                }),
                Err(_) => connect_failures += 1,
            }
        }
    }
    let drips: Vec<TcpStream> = conns
        .iter()
        .filter(|c| c.kind == Kind::SlowBody)
        .map(|c| c.stream.try_clone().expect("clone"))
        .collect();
    let dripper = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut drips = drips;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(DRIP);
                drips.retain_mut(|s| s.write_all(b" ").is_ok());
            }
        })
    };
    eprintln!(
        "flood: {} connections open after {:?}, otpd holds {} descriptors",
        conns.len(),
        started.elapsed(),
        otpd.fds()
    );

    // While they are open: a normal request (it may wait in the listen
    // queue behind the flood) and a login.
    let normal = std::thread::spawn(move || {
        let started = Instant::now();
        let answer = normal().unwrap_or_else(|e| format!("no answer: {e}"));
        let status = answer.lines().next().unwrap_or_default().to_owned();
        (status, started.elapsed())
    });
    let code = oathtool_code(secret, 60);
    let service = PamService::new(&format!("socket={}", env.socket_path().display()), &[]);
    let pam_started = Instant::now();
    let pam = service.authenticate("alice", &format!("{code}\n"));
    let pam_took = pam_started.elapsed();

    // otpd must close every flood connection itself.
    for c in &conns {
        c.stream.set_nonblocking(true).expect("nonblocking");
    }
    let deadline = started + ROUNDS * BOUND + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && conns.iter().any(|c| c.closed_after.is_none()) {
        for c in conns.iter_mut().filter(|c| c.closed_after.is_none()) {
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => c.closed_after = Some(started.elapsed()),
                    Ok(n) if c.received.len() < 4096 => {
                        c.received.extend_from_slice(&buf[..n]);
                        continue;
                    }
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => c.closed_after = Some(started.elapsed()),
                }
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    dripper.join().expect("dripper");
    let normal = normal.join().expect("normal request");
    let closed: Vec<Duration> = conns.iter().filter_map(|c| c.closed_after).collect();
    let closed_in_first_round = closed
        .iter()
        .filter(|t| **t <= BOUND + Duration::from_secs(5))
        .count();
    let still_open: Vec<Kind> = conns
        .iter()
        .filter(|c| c.closed_after.is_none())
        .map(|c| c.kind)
        .collect();
    let slow_without_408 = conns
        .iter()
        .filter(|c| c.kind == Kind::SlowBody && !c.received.starts_with(b"HTTP/1.1 408"))
        .count();
    let connected = conns.len();
    drop(conns);
    // The descriptors come back once the connections are gone.
    let settle = Instant::now() + Duration::from_secs(10);
    while otpd.fds() > fds_before + 4 && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(100));
    }
    Figures {
        connected,
        connect_failures,
        fds_before,
        fds_max: fds_max.load(Ordering::Relaxed),
        fds_after: otpd.fds(),
        pam,
        pam_took,
        normal,
        first_closed: closed.iter().min().copied(),
        closed_in_first_round,
        last_closed: closed.iter().max().copied(),
        still_open,
        slow_without_408,
    }
}

/// The figures, then what they must show.
fn assert_bounded(what: &str, f: &Figures, otpd: &LimitedOtpd) {
    eprintln!(
        "{what}: {} connected ({} failed to connect); otpd descriptors {} before, {} at most, \
         {} after; pamtester {:?} in {:?}; normal request {:?} in {:?}; otpd closed the first \
         flood connection after {:?}, {} within {:?}, the last after {:?}, {} still open",
        f.connected,
        f.connect_failures,
        f.fds_before,
        f.fds_max,
        f.fds_after,
        said(&f.pam).trim(),
        f.pam_took,
        f.normal.0,
        f.normal.1,
        f.first_closed,
        f.closed_in_first_round,
        BOUND + Duration::from_secs(5),
        f.last_closed,
        f.still_open.len()
    );
    assert!(
        f.pam.status.success() && said(&f.pam).contains("successfully authenticated"),
        "{what}: pamtester did not log in during the flood: {}",
        describe(&f.pam)
    );
    assert!(
        f.pam_took < PAM_TIMEOUT,
        "{what}: the login took {:?}",
        f.pam_took
    );
    assert_eq!(
        f.normal.0, "HTTP/1.1 200 OK",
        "{what}: the normal request during the flood"
    );
    assert!(
        f.fds_max <= (NOFILE - NOFILE / 4) as usize,
        "{what}: otpd held {} of its {NOFILE} descriptors",
        f.fds_max
    );
    let log = otpd.log();
    assert!(
        !log.contains("Too many open files"),
        "{what}: otpd ran out of descriptors"
    );
    assert!(
        f.still_open.is_empty(),
        "{what}: otpd left {} flood connections open for {:?} ({:?}…)",
        f.still_open.len(),
        ROUNDS * BOUND + Duration::from_secs(20),
        &f.still_open[..f.still_open.len().min(5)]
    );
    assert_eq!(
        f.slow_without_408, 0,
        "{what}: slow bodies must end with 408 Request Timeout"
    );
    assert!(
        f.first_closed
            .is_some_and(|t| t >= BOUND - Duration::from_secs(1)),
        "{what}: otpd closed a connection before its bound: {:?}",
        f.first_closed
    );
    // The first round is every connection otpd served at once: its bound,
    // not something later, closed them.
    assert!(
        f.closed_in_first_round >= FLOOD / 3,
        "{what}: only {} connections closed within {:?}",
        f.closed_in_first_round,
        BOUND + Duration::from_secs(5)
    );
    assert_eq!(f.connect_failures, 0, "{what}: connections refused");
    assert!(
        f.fds_after <= f.fds_before + 4,
        "{what}: otpd kept {} descriptors after the flood (had {})",
        f.fds_after,
        f.fds_before
    );
}

/// One GET /healthz on a fresh connection; the whole answer.
fn plain_get(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(90)))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// The same over TLS.
fn tls_get(port: u16, config: &Arc<rustls::ClientConfig>) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(90)))?;
    let mut session = tls_session(config);
    let mut tls = rustls::Stream::new(&mut session, &mut stream);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            // Closed without close_notify: the answer is complete anyway.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof && !answer.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn idle_and_slow_http_connections_are_bounded_and_closed() {
    require_root_and_peers();
    raise_own_open_files();
    let mut env = TestEnv::start();
    let secret = env.enrol_active("alice");
    env.stop_otpd();
    let otpd = LimitedOtpd::start(&env, &env.config, "otpd-nofile");
    let port = env.http_port;
    let figures = flood(
        &env,
        &otpd,
        &secret,
        &[
            (Kind::SlowBody, 100),
            (Kind::H2Preface, 400),
            (Kind::Silent, FLOOD - 500),
        ],
        None,
        move || plain_get(port),
    );
    assert_bounded("HTTP", &figures, &otpd);
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn idle_https_connections_are_bounded_and_closed() {
    require_root_and_peers();
    raise_own_open_files();
    let mut env = TestEnv::start();
    let secret = env.enrol_active("alice");
    env.stop_otpd();

    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let (cert, key) = (env.root().join("tls.crt"), env.root().join("tls.key"));
    fs::write(&cert, certified.cert.pem()).expect("write cert");
    write_private_file(&key, &certified.signing_key.serialize_pem());
    let config = fs::read_to_string(&env.config).expect("config");
    let with_tls = config.replacen(
        "[http]\n",
        &format!(
            "[http]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        1,
    );
    assert_ne!(with_tls, config, "no [http] table in {config}");
    let tls_config = env.root().join("otpd-tls.toml");
    write_private_file(&tls_config, &with_tls);

    let otpd = LimitedOtpd::start(&env, &tls_config, "otpd-tls-nofile");
    let client = tls_client(&certified.cert);
    let port = env.http_port;
    let normal_client = Arc::clone(&client);
    let figures = flood(
        &env,
        &otpd,
        &secret,
        &[(Kind::TlsIdle, 300), (Kind::Silent, FLOOD - 300)],
        Some(&client),
        move || tls_get(port, &normal_client),
    );
    assert_bounded("HTTPS", &figures, &otpd);
}
