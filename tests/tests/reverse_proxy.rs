//! otpd behind nginx, end to end (root only): the shipped
//! `conf/nginx/otpd.conf` (only its ports changed) proxies the activation
//! page, otpd trusts nginx's `X-Forwarded-For`, and the per-address rate
//! limit holds up one client without holding up another behind the same
//! proxy; a client that talks to otpd directly cannot choose its address
//! by sending the header itself. The `[metrics]` listener's output passes
//! `promtool check metrics`, and its clock gauges say what adjtimex(8)
//! reads from the kernel. Clients are told apart by binding their
//! sockets to different loopback addresses (127.0.0.3, 127.0.0.4, ...);
//! nginx listens on 127.0.0.2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::TestEnv;
use e2e::{free_port, require_root_and_peers, require_tools, write_private_file, EnvOptions};
use serde_json::Value;

const SHIPPED: &str = include_str!("../../conf/nginx/otpd.conf");

/// Sends one HTTP/1.1 request from `source` to `to`; the status and body.
fn request(
    source: Ipv4Addr,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(IpAddr::V4(source), 0).into())
        .expect("bind the client address");
    socket.connect(&to.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: otp.example.com\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body.as_bytes()).expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// nginx with the shipped server block, killed on drop.
struct Nginx {
    child: Child,
}

impl Nginx {
    /// Starts nginx under `prefix`, listening on `listen` and proxying to
    /// otpd's `[http]` port.
    fn start(prefix: &Path, listen: SocketAddr, otpd_port: u16) -> Nginx {
        fs::create_dir_all(prefix.join("tmp")).expect("nginx prefix");
        let server = SHIPPED
            .replacen(
                "server 127.0.0.1:8080;",
                &format!("server 127.0.0.1:{otpd_port};"),
                1,
            )
            .replacen("    listen 80;\n", &format!("    listen {listen};\n"), 1);
        assert_ne!(server, SHIPPED, "the shipped file has the expected ports");
        fs::write(prefix.join("otpd.conf"), server).expect("server block");
        let p = prefix.display();
        let main = format!(
            "user root;\nworker_processes 1;\nerror_log {p}/error.log;\npid {p}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {p}/access.log;\n\
               client_body_temp_path {p}/tmp/body;\n  proxy_temp_path {p}/tmp/proxy;\n\
               fastcgi_temp_path {p}/tmp/fastcgi;\n  uwsgi_temp_path {p}/tmp/uwsgi;\n\
               scgi_temp_path {p}/tmp/scgi;\n  include {p}/otpd.conf;\n}}\n"
        );
        fs::write(prefix.join("nginx.conf"), main).expect("nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(prefix.join("stderr.log")).expect("log"))
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx { child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(listen).is_err() {
            let exited = nginx.child.try_wait().expect("nginx status");
            assert!(
                Instant::now() < deadline && exited.is_none(),
                "nginx did not listen on {listen} ({exited:?}): {}{}",
                fs::read_to_string(prefix.join("error.log")).unwrap_or_default(),
                fs::read_to_string(prefix.join("stderr.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An otpd with `[metrics]` on `metrics_port` that trusts 127.0.0.1 as a
/// proxy.
fn otpd_behind_a_proxy(metrics_port: u16) -> TestEnv {
    let mut env = TestEnv::start_with(EnvOptions {
        extra_toml: format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"),
        ..EnvOptions::default()
    });
    env.stop_otpd();
    let config = fs::read_to_string(&env.config).expect("config");
    let trusting = config.replacen(
        "[http]\n",
        "[http]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        1,
    );
    assert_ne!(trusting, config);
    fs::remove_file(&env.config).expect("remove the config");
    write_private_file(&env.config, &trusting);
    env.start_otpd_again();
    env
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn nginx_names_the_client_and_a_direct_claim_is_ignored() {
    require_root_and_peers();
    require_tools(&[
        ("nginx", "nginx"),
        ("promtool", "prometheus"),
        ("adjtimex", "adjtimex"),
    ]);
    let metrics_port = free_port();
    let env = otpd_behind_a_proxy(metrics_port);
    let issued = env.issue("alice", "alice@example.jp", "4321");
    let nginx_addr = SocketAddr::from(([127, 0, 0, 2], free_port()));
    let _nginx = Nginx::start(&env.root().join("nginx"), nginx_addr, env.http_port);
    let otpd_addr = SocketAddr::from(([127, 0, 0, 1], env.http_port));
    let activate = "/api/v1/activate";

    // 30 junk activations from one client through nginx: the limit (20 a
    // minute) holds it up.
    let pest = Ipv4Addr::new(127, 0, 0, 3);
    let statuses: Vec<u16> = (0..30)
        .map(|_| request(pest, nginx_addr, "POST", activate, &[], "{}").0)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        20,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        10,
        "{statuses:?}"
    );

    // Another client behind the same nginx activates.
    let body = format!(
        r#"{{"service_id":"{}","user_id":"{}","activation_password":"4321"}}"#,
        e2e::SERVICE_ID,
        issued.user_id
    );
    let phone = Ipv4Addr::new(127, 0, 0, 4);
    let (status, answer) = request(phone, nginx_addr, "POST", activate, &[], &body);
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("JSON");
    assert!(answer["otpauth_uri"].is_string(), "{answer}");

    // Talking to otpd directly, a client cannot pick its address: a new
    // X-Forwarded-For each time, still held up after 20.
    let direct = Ipv4Addr::new(127, 0, 0, 5);
    let statuses: Vec<u16> = (0..21)
        .map(|i| {
            let claim = format!("198.51.100.{i}");
            let headers = [("X-Forwarded-For", claim.as_str())];
            request(direct, otpd_addr, "POST", activate, &headers, "{}").0
        })
        .collect();
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        20,
        "{statuses:?}"
    );

    // The audit trail names the clients, never nginx or a claim.
    let output = env.otpctl(&["audit", "--json"], "");
    let entries = e2e::stdout_json_lines(&output);
    let limited: Vec<&str> = entries
        .iter()
        .filter(|e| {
            e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("rate limit"))
        })
        .filter_map(|e| e["peer"].as_str())
        .collect();
    assert_eq!(limited, ["127.0.0.3", "127.0.0.5"], "{entries:?}");
    let activated: Vec<&str> = entries
        .iter()
        .filter(|e| e["user"] == "alice" && e["channel"] == "http" && e["result"] == "ok")
        .filter_map(|e| e["peer"].as_str())
        .collect();
    assert_eq!(activated, ["127.0.0.4"], "{entries:?}");

    // The metrics listener's output passes promtool, and health is good.
    let metrics = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let local = Ipv4Addr::LOCALHOST;
    let before = KernelClock::read();
    let (status, text) = request(local, metrics, "GET", "/metrics", &[], "");
    let after = KernelClock::read();
    assert_eq!(status, 200, "{text}");
    before.agrees_with(&after, &text, &env.otpd_log());
    assert!(
        text.contains("otpd_decisions_total{channel=\"http\",result=\"ok\"}"),
        "{text}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let (status, text) = request(local, metrics, "GET", "/healthz", &[], "");
    assert_eq!(status, 200, "{text}");
}

/// The kernel's clock state as adjtimex(8) prints it, read-only.
#[derive(Debug)]
struct KernelClock {
    synchronised: bool,
    /// Microseconds.
    max_error: u64,
}

impl KernelClock {
    fn read() -> KernelClock {
        let output = Command::new("adjtimex")
            .arg("--print")
            .output()
            .expect("adjtimex");
        assert!(output.status.success(), "adjtimex --print: {output:?}");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let field = |name: &str| -> i64 {
            text.lines()
                .find_map(|l| {
                    let (key, value) = l.split_once([':', '='])?;
                    (key.trim() == name).then(|| value.trim().parse().ok())?
                })
                .unwrap_or_else(|| panic!("adjtimex --print has no {name}: {text}"))
        };
        const TIME_ERROR: i64 = 5;
        const STA_UNSYNC: i64 = 0x40;
        KernelClock {
            synchronised: field("return value") != TIME_ERROR && field("status") & STA_UNSYNC == 0,
            max_error: u64::try_from(field("maxerror")).unwrap_or(0),
        }
    }

    /// Checks that the scrape `metrics`, taken between `self` and `after`,
    /// reports the kernel's state, and that otpd's log said it at start.
    fn agrees_with(&self, after: &KernelClock, metrics: &str, log: &str) {
        let value = |name: &str| -> f64 {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
        };
        assert_eq!(
            self.synchronised, after.synchronised,
            "the clock changed its state during the scrape: {self:?} {after:?}"
        );
        let synchronised = value("otpd_clock_synchronised");
        assert_eq!(
            synchronised,
            f64::from(u8::from(self.synchronised)),
            "{self:?}"
        );
        // The maximum error grows while unsynchronised (at most 16 s), so
        // the scrape's lies between the readings before and after it.
        let max_error = (value("otpd_clock_max_error_seconds") * 1e6).round() as u64;
        let (low, high) = (
            self.max_error.min(after.max_error),
            self.max_error.max(after.max_error),
        );
        assert!(
            (low..=high).contains(&max_error),
            "otpd says {max_error} us, adjtimex {low}..{high} us"
        );
        value("otpd_clock_estimated_error_seconds");
        let said = if self.synchronised {
            "clock: the system clock is synchronised"
        } else {
            "clock: the system clock is not synchronised"
        };
        assert!(log.contains(said), "otpd's log lacks {said:?}:\n{log}");
    }
}

/// A private Prometheus that scrapes `target` every second, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: otpd\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("prometheus.yml");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("prometheus.log")).expect("log"))
            .spawn()
            .expect("start prometheus");
        Prometheus { child, port }
    }

    /// The value of the series of `metric` whose labels include `labels`,
    /// as Prometheus answers `/api/v1/query?query=METRIC`; None while
    /// it has none.
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let path = format!("/api/v1/query?query={metric}");
        let answer = e2e::http_request(self.port, "GET", &path, None, b"").ok()?;
        let answer: Value = serde_json::from_slice(&answer.body).ok()?;
        answer["data"]["result"]
            .as_array()?
            .iter()
            .find(|series| {
                labels
                    .iter()
                    .all(|(name, value)| series["metric"][name] == *value)
            })
            .and_then(|series| series["value"][1].as_str()?.parse().ok())
    }

    /// Waits until the series reaches `at_least`.
    fn wait_for(&self, metric: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let value = self.value(metric, labels);
            if value.is_some_and(|v| v >= at_least) {
                return value.unwrap_or_default();
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus has {metric}{labels:?} = {value:?}, not {at_least}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/healthz` on `port`: its status, within a bound that a hung store
/// must not stretch.
fn health(port: u16) -> u16 {
    let asked = Instant::now();
    let status = e2e::http_request(port, "GET", "/healthz", None, b"")
        .map(|r| r.status)
        .unwrap_or(0);
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "/healthz took {:?}",
        asked.elapsed()
    );
    status
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn prometheus_reads_the_decisions_and_healthz_follows_the_store() {
    require_root_and_peers();
    require_tools(&[
        ("prometheus", "prometheus"),
        ("radclient", "freeradius-utils"),
    ]);
    let pg = e2e::postgres::PrivatePostgres::start();
    let db = pg.create_database("otpd_metrics");
    let metrics_port = free_port();
    let radius_port = free_port();
    let secret = "metrics-secret";
    let env = TestEnv::start_with(EnvOptions {
        extra_toml: format!(
            "[store]\nbackend = \"postgresql\"\nurl = \"{}\"\n\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n{}",
            db.socket_url,
            e2e::cluster::radius_toml(radius_port, "gw", secret)
        ),
        ..EnvOptions::default()
    });
    let seed = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let csv = env.root().join("tokens.csv");
    fs::write(
        &csv,
        format!("alice,{seed},30,6,SHA1\nbob,{seed},30,6,SHA1\n"),
    )
    .expect("csv");
    let csv = csv.to_string_lossy().into_owned();
    let output = env.otpctl(&["import", "--format", "csv", &csv], "");
    e2e::assert_success(&output, "otpctl import");
    let prometheus = Prometheus::start(
        &env.root().join("prometheus"),
        SocketAddr::from(([127, 0, 0, 1], metrics_port)),
    );

    // One login over the socket, one over RADIUS, one wrong code.
    let code = e2e::oathtool_code(seed, 30);
    assert!(env.otpctl_test("alice", &code), "{}", env.otpd_log());
    assert!(!env.otpctl_test("alice", "000000"));
    let output = e2e::run_with_input(
        Command::new("radclient")
            .args(["-x", "-r", "1", "-t", "3"])
            .arg(format!("127.0.0.1:{radius_port}"))
            .arg("auth")
            .arg(secret),
        &format!("User-Name = \"bob\"\nUser-Password = \"{code}\"\nMessage-Authenticator = 0x00\n"),
    );
    assert!(
        e2e::stdout(&output).contains("Access-Accept"),
        "{}",
        e2e::describe(&output)
    );
    let decisions = "otpd_decisions_total";
    prometheus.wait_for(decisions, &[("channel", "pam"), ("result", "ok")], 1.0);
    prometheus.wait_for(decisions, &[("channel", "pam"), ("result", "fail")], 1.0);
    prometheus.wait_for(decisions, &[("channel", "radius"), ("result", "ok")], 1.0);
    prometheus.wait_for("otpd_tokens", &[("state", "active")], 2.0);
    prometheus.wait_for("otpd_verify_duration_seconds_count", &[], 3.0);
    prometheus.wait_for("otpd_build_info", &[("job", "otpd")], 1.0);

    // The store goes away: 503, quickly; it comes back: 200.
    assert_eq!(health(metrics_port), 200);
    pg.stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(metrics_port) != 503 {
        assert!(
            Instant::now() < deadline,
            "/healthz stays 200 without PostgreSQL"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    pg.start_again();
    let deadline = Instant::now() + Duration::from_secs(60);
    while health(metrics_port) != 200 {
        assert!(
            Instant::now() < deadline,
            "/healthz stays unhealthy after PostgreSQL is back\n{}",
            env.otpd_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    prometheus.wait_for("otpd_store_errors_total", &[], 1.0);
}
