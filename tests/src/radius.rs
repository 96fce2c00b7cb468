//! RADIUS: otpd answering RADIUS beside its other listeners, a private
//! FreeRADIUS configuration, and FreeRADIUS proxying to otpd.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{assert_success, free_port, stdout_json_lines, EnvOptions, Server, TestEnv};

/// A [`TestEnv`] whose otpd also answers RADIUS on a free 127.0.0.1 port,
/// for one client at 127.0.0.1 named `client` with `secret` and
/// Message-Authenticator required; the port comes back too.
pub fn start_with_radius(client: &str, secret: &str) -> (TestEnv, u16) {
    let port = free_port();
    let env = TestEnv::start_with(EnvOptions {
        extra_toml: crate::cluster::radius_toml(port, client, secret),
        ..EnvOptions::default()
    });
    (env, port)
}

/// What otpd's audit trail records of its RADIUS decisions, every user's.
pub fn radius_audit(env: &TestEnv) -> Vec<Value> {
    let audit = env.otpctl(&["audit", "--json"], "");
    assert_success(&audit, "otpctl audit");
    stdout_json_lines(&audit)
        .into_iter()
        .filter(|e| e["channel"] == "radius")
        .collect()
}

/// Asserts that otpd decided `decisions` times over RADIUS, every time for
/// `user` (as otpd saw the name) and for a NAS whose peer entry starts with
/// `peer` (`nas=NAME addr=127.0.0.1:`), and accepted exactly once.
pub fn assert_radius_decisions(env: &TestEnv, user: &str, decisions: usize, peer: &str) {
    let radius = radius_audit(env);
    assert_eq!(radius.len(), decisions, "{radius:#?}\n{}", env.otpd_log());
    assert!(
        radius.iter().all(|e| e["user"] == user),
        "otpd should see the user name {user:?}: {radius:#?}"
    );
    assert_eq!(
        radius.iter().filter(|e| e["result"] == "ok").count(),
        1,
        "{radius:#?}"
    );
    for e in &radius {
        let from = e["peer"].as_str().unwrap_or_default();
        assert!(from.starts_with(peer), "peer: {from}, expected {peer}...");
    }
}

/// A private copy of Debian's FreeRADIUS configuration in `dir/raddb`: its
/// own run and log directories, running as root (the copy is in a 0700
/// directory), no sites and no EAP (which needs certificates), so the caller
/// adds exactly the site it needs. The system's /etc/freeradius is untouched.
pub fn private_raddb(dir: &Path) -> PathBuf {
    let raddb = dir.join("raddb");
    let status = Command::new("cp")
        .args(["-a", "/etc/freeradius/3.0"])
        .arg(&raddb)
        .status()
        .expect("cp");
    assert!(status.success(), "cannot copy /etc/freeradius/3.0");
    let conf = raddb.join("radiusd.conf");
    let text = fs::read_to_string(&conf).expect("radiusd.conf");
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        if line.starts_with("raddbdir = ") {
            out.push_str(&format!("raddbdir = {}", raddb.display()));
        } else if line.starts_with("run_dir = ") {
            out.push_str(&format!("run_dir = {}", raddb.join("run").display()));
        } else if line.starts_with("logdir = ") {
            out.push_str(&format!("logdir = {}", raddb.join("log").display()));
        } else if trimmed.starts_with("user = ") || trimmed.starts_with("group = ") {
            out.push('#');
            out.push_str(line);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    fs::write(&conf, out).expect("radiusd.conf");
    fs::create_dir_all(raddb.join("run")).expect("run");
    fs::create_dir_all(raddb.join("log")).expect("log");
    for entry in fs::read_dir(raddb.join("sites-enabled")).expect("sites-enabled") {
        fs::remove_file(entry.expect("entry").path()).expect("rm site");
    }
    let _ = fs::remove_file(raddb.join("mods-enabled/eap"));
    raddb
}

/// The proxying site of a FreeRADIUS in front of otpd, on 127.0.0.1:`port`:
/// `suffix` finds the OTP realm of `user@OTP` and strips it, and the realm
/// (in proxy.conf) says where the request goes.
fn proxy_site(port: u16) -> String {
    format!(
        "server otp_proxy {{\n\tlisten {{\n\t\ttype = auth\n\t\tipaddr = 127.0.0.1\n\t\tport = {port}\n\t}}\n\
         \tauthorize {{\n\t\tsuffix\n\t}}\n\tauthenticate {{\n\t}}\n\tpre-proxy {{\n\t}}\n\
         \tpost-proxy {{\n\t}}\n}}\n"
    )
}

/// A FreeRADIUS proxy (`freeradius -f` on a private configuration), killed
/// on drop.
pub struct FreeRadiusProxy {
    server: Server,
    /// Where it listens for the NAS, on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl FreeRadiusProxy {
    /// A private copy of /etc/freeradius/3.0 ([`private_raddb`]) with only
    /// the proxying site and one NAS client (127.0.0.1 with `nas_secret`);
    /// `configure` writes the rest into the raddb it is given (at least
    /// `proxy.conf` with the realm OTP). The configuration is checked with
    /// `freeradius -C`, then FreeRADIUS starts; this returns once it says it
    /// is ready.
    pub fn start(nas_secret: &str, configure: impl FnOnce(&Path)) -> FreeRadiusProxy {
        let dir = tempfile::Builder::new()
            .prefix("otpd-e2e-freeradius-")
            .tempdir()
            .expect("temp dir");
        let raddb = private_raddb(dir.path());
        let port = free_port();
        fs::write(raddb.join("sites-enabled/otp_proxy"), proxy_site(port)).expect("site");
        fs::write(
            raddb.join("clients.conf"),
            format!("client nas {{\n\tipaddr = 127.0.0.1\n\tsecret = {nas_secret}\n}}\n"),
        )
        .expect("clients.conf");
        configure(&raddb);

        let check = Command::new("freeradius")
            .arg("-C")
            .arg("-d")
            .arg(&raddb)
            .output()
            .expect("run freeradius -C (apt-get install freeradius)");
        assert_success(&check, "freeradius -C");

        let log = dir.path().join("freeradius.log");
        let child = Command::new("freeradius")
            .arg("-f")
            .arg("-d")
            .arg(&raddb)
            .args(["-l", "stdout"])
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).expect("log"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start freeradius");
        let mut proxy = FreeRadiusProxy {
            server: Server::new(child, log),
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !proxy.log().contains("Ready to process requests") {
            if let Some(status) = proxy.server.exited() {
                panic!("freeradius exited with {status}:\n{}", proxy.log());
            }
            assert!(
                Instant::now() < deadline,
                "freeradius not ready after 15 s:\n{}",
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        proxy
    }

    /// What FreeRADIUS logged so far.
    pub fn log(&self) -> String {
        self.server.log()
    }
}
