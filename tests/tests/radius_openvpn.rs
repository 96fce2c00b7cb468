//! OpenVPN with the radiusplugin (conf/radius/openvpn-radiusplugin.cnf) in
//! front of otpd: a real OpenVPN server loads Debian's
//! /usr/lib/openvpn/radiusplugin.so (package openvpn-auth-radius) with the
//! shipped example, only its server and NAS addresses, secret and OpenVPN
//! config path filled in; a real OpenVPN client logs in with `auth-user-pass`
//! (user name + oathtool's code). A wrong code ends in AUTH_FAILED, the
//! right one in "Initialization Sequence Completed". Debian's plugin (2.1)
//! ignores `nonfatalaccounting=true` and refuses a login whose
//! Accounting-Start goes unanswered; so, as the shipped example says, otpd
//! answers accounting too (`accounting_listen` on the `acctport`, 1813).
//!
//! Network: everything runs in a network namespace this test creates (its
//! own loopback, the tun devices and the 198.51.100.0/24 VPN pool stay
//! inside it): otpd is started a second time inside it, with `[radius]` on
//! the namespace's 127.0.0.1:1812 and accounting on its 127.0.0.1:1813.
//! Enrolment happens before, over HTTP on
//! the host's loopback, exactly as in the other tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::{
    assert_success, oathtool_code, otpd_bin, require_root_and_peers, wait_for_fresh_step,
    wrong_code, TestEnv,
};

/// Between the radiusplugin and otpd.
const SECRET: &str = "e2e-openvpn-radius-secret";
const PLUGIN: &str = "/usr/lib/openvpn/radiusplugin.so";
const PACKAGES: &str = "openvpn openvpn-auth-radius";

/// How long an OpenVPN start or login may take (the plugin waits `wait=5`
/// seconds per unanswered accounting packet).
const VPN_TIMEOUT: Duration = Duration::from_secs(60);

/// The shipped example with the RADIUS server, NAS address, secret and
/// OpenVPN config path filled in; nothing else changes.
fn shipped_plugin_conf(server_conf: &Path) -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/radius/openvpn-radiusplugin.cnf");
    let mut text = fs::read_to_string(&path).expect("conf/radius/openvpn-radiusplugin.cnf");
    for (placeholder, value) in [
        ("name=192.0.2.20", "name=127.0.0.1".to_owned()),
        (
            "NAS-IP-Address=192.0.2.30",
            "NAS-IP-Address=127.0.0.1".to_owned(),
        ),
        ("sharedsecret=change-me", format!("sharedsecret={SECRET}")),
        (
            "OpenVPNConfig=/etc/openvpn/server.conf",
            format!("OpenVPNConfig={}", server_conf.display()),
        ),
    ] {
        assert_eq!(
            text.matches(placeholder).count(),
            1,
            "the shipped radiusplugin.cnf should hold `{placeholder}` once"
        );
        text = text.replace(placeholder, &value);
    }
    for kept in ["authport=1812", "acctport=1813"] {
        assert!(text.contains(kept), "the shipped example lost `{kept}`");
    }
    text
}

fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_success(&output, what);
}

/// A throwaway PKI: a CA, a server and a client certificate (P-256).
fn make_pki(dir: &Path) {
    run(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=otpd e2e VPN CA", "-keyout"])
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(dir.join("ca.crt")),
        "openssl: CA",
    );
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        let ext = dir.join(format!("{name}.ext"));
        fs::write(
            &ext,
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n\
                 extendedKeyUsage={usage}\n"
            ),
        )
        .expect("ext file");
        run(
            Command::new("openssl")
                .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:prime256v1", "-nodes"])
                .arg("-subj")
                .arg(format!("/CN=e2e-{name}"))
                .arg("-keyout")
                .arg(dir.join(format!("{name}.key")))
                .arg("-out")
                .arg(dir.join(format!("{name}.csr"))),
            "openssl: key and request",
        );
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-in"])
                .arg(dir.join(format!("{name}.csr")))
                .arg("-CA")
                .arg(dir.join("ca.crt"))
                .arg("-CAkey")
                .arg(dir.join("ca.key"))
                .arg("-CAcreateserial")
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(dir.join(format!("{name}.crt"))),
            "openssl: signing",
        );
    }
}

/// A network namespace with `lo` up and the processes started in it;
/// on drop every process in it is killed (one by one, by PID) and the
/// namespace is deleted.
struct Lab {
    ns: String,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Lab {
    fn new(dir: &Path) -> Lab {
        // Tests of this file run in parallel, each lab in a namespace of
        // its own.
        static LABS: AtomicUsize = AtomicUsize::new(0);
        let ns = format!(
            "otpd-e2e-ovpn-{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab {
            ns,
            dir: dir.to_owned(),
            children: Vec::new(),
        };
        run(
            Command::new("ip").args(["netns", "add", &lab.ns]),
            "ip netns add",
        );
        run(
            Command::new("ip").args(["-n", &lab.ns, "link", "set", "lo", "up"]),
            "ip link set lo up in the namespace",
        );
        lab
    }

    /// Starts `program args` inside the namespace, stdout and stderr to
    /// `log`; returns the index of the child.
    fn spawn(&mut self, program: &Path, args: &[&str], log: &Path) -> usize {
        let out = File::create(log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        self.children.push(child);
        self.children.len() - 1
    }

    /// Starts an OpenVPN client on the config `conf`, logging to `log` in
    /// the lab's directory, and waits for the verdict on its login:
    /// `AUTH_FAILED` or `Initialization Sequence Completed` (`None`:
    /// neither within [`VPN_TIMEOUT`]). Returns the client's index too.
    fn connect(&mut self, openvpn: &Path, conf: &str, log: &str) -> (usize, Option<String>) {
        let path = self.dir.join(log);
        let client = self.spawn(openvpn, &["--config", conf], &path);
        let seen = self.wait_for(
            client,
            log,
            &["AUTH_FAILED", "Initialization Sequence Completed"],
            VPN_TIMEOUT,
        );
        (client, seen)
    }

    fn stop(&mut self, index: usize) {
        let child = &mut self.children[index];
        let _ = child.kill();
        let _ = child.wait();
    }

    fn exited(&mut self, index: usize) -> bool {
        matches!(self.children[index].try_wait(), Ok(Some(_)))
    }

    fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Waits until the log `name` contains one of `needles`; returns it, or
    /// `None` after `timeout` or when the process `index` exited without.
    fn wait_for(
        &mut self,
        index: usize,
        name: &str,
        needles: &[&str],
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log(name);
            if let Some(found) = needles.iter().find(|n| text.contains(*n)) {
                return Some((*found).to_owned());
            }
            if self.exited(index) {
                // One last look: it may have written and exited.
                let text = self.log(name);
                return needles
                    .iter()
                    .find(|n| text.contains(*n))
                    .map(|n| (*n).to_owned());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The plugin's background processes (forked by the server) live in
        // the namespace too.
        if let Ok(output) = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
        {
            for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn write_private(path: &Path, text: &str) {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("write file");
}

fn server_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "mode server
tls-server
proto udp4
local 127.0.0.1
port 1194
dev ovpn-srv
dev-type tun
disable-dco
topology subnet
server 198.51.100.0 255.255.255.0
ca {d}/ca.crt
cert {d}/server.crt
key {d}/server.key
dh none
reneg-sec 0
keepalive 10 60
status {d}/status.log 1
tmp-dir {d}
plugin {PLUGIN} {d}/radiusplugin.cnf
verb 4
"
    )
}

fn client_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "client
proto udp4
remote 127.0.0.1 1194
nobind
dev ovpn-cli
dev-type tun
disable-dco
ca {d}/ca.crt
cert {d}/client.crt
key {d}/client.key
remote-cert-tls server
auth-user-pass {d}/client.auth
auth-nocache
auth-retry none
connect-retry-max 1
verb 4
"
    )
}

/// An otpd with an active token for alice (its secret returned), enrolled
/// over HTTP on the host's loopback and then moved into a new lab's
/// namespace with a `[radius]` section (plus `extra` lines) on its
/// 127.0.0.1:1812 and 1813 and the radiusplugin as its client; the lab's
/// files go to the returned directory. otpd logs at debug level, where it
/// writes one line per Accounting-Request it answers.
fn otpd_in_a_lab(extra: &str) -> (TestEnv, String, Lab, PathBuf) {
    let mut env = TestEnv::start();
    let secret = env.enrol_active("alice");
    env.stop_otpd();
    let mut config = OpenOptions::new()
        .append(true)
        .open(&env.config)
        .expect("otpd.toml");
    write!(
        config,
        r#"
[radius]
listen = "127.0.0.1:1812"
accounting_listen = "127.0.0.1:1813"
require_message_authenticator = true
{extra}
[[radius.client]]
name = "openvpn"
address = "127.0.0.1/32"
secret = "{SECRET}"
# The radiusplugin sends no Message-Authenticator.
require_message_authenticator = false
"#
    )
    .expect("append [radius]");
    drop(config);
    let root = env.root().to_owned();
    let dir = root.join("openvpn");
    fs::create_dir(&dir).expect("openvpn dir");
    let _ = fs::rename(root.join("otpd.log"), root.join("otpd-host.log"));
    let mut lab = Lab::new(&dir);
    let config_path = env.config.display().to_string();
    let otpd_path = otpd_bin().display().to_string();
    let otpd = lab.spawn(
        Path::new("/usr/bin/env"),
        &["OTPD_LOG=debug", &otpd_path, "--config", &config_path],
        &root.join("otpd.log"),
    );
    env.wait_for_socket();
    assert!(!lab.exited(otpd), "otpd exited:\n{}", env.otpd_log());
    (env, secret, lab, dir)
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn openvpn_radiusplugin_logs_in_with_a_one_time_code_through_otpd() {
    require_root_and_peers();
    let openvpn = Path::new("/usr/sbin/openvpn");
    assert!(
        openvpn.is_file() && Path::new(PLUGIN).is_file(),
        "the OpenVPN test needs `apt-get install {PACKAGES}`"
    );

    let (env, secret, mut lab, dir) = otpd_in_a_lab("");

    make_pki(&dir);
    fs::write(
        dir.join("radiusplugin.cnf"),
        shipped_plugin_conf(&dir.join("server.conf")),
    )
    .expect("radiusplugin.cnf");
    fs::write(dir.join("server.conf"), server_conf(&dir)).expect("server.conf");
    fs::write(dir.join("client.conf"), client_conf(&dir)).expect("client.conf");

    let server_conf_path = dir.join("server.conf").display().to_string();
    let server = lab.spawn(
        openvpn,
        &["--config", &server_conf_path],
        &dir.join("server.log"),
    );
    let logs = |lab: &Lab, client: &str| {
        format!(
            "--- openvpn server ---\n{}\n--- openvpn client ---\n{}\n--- otpd ---\n{}",
            lab.log("server.log"),
            lab.log(client),
            env.otpd_log()
        )
    };
    let started = lab.wait_for(
        server,
        "server.log",
        &["Initialization Sequence Completed"],
        VPN_TIMEOUT,
    );
    assert!(
        started.is_some(),
        "server did not start:\n{}",
        logs(&lab, "")
    );

    let client_conf_path = dir.join("client.conf").display().to_string();
    let auth = dir.join("client.auth");

    // A wrong code: the plugin gets an Access-Reject, the client AUTH_FAILED.
    write_private(&auth, &format!("alice\n{}\n", wrong_code(&secret)));
    let (client, seen) = lab.connect(openvpn, &client_conf_path, "client-wrong.log");
    assert_eq!(
        seen.as_deref(),
        Some("AUTH_FAILED"),
        "wrong code:\n{}",
        logs(&lab, "client-wrong.log")
    );
    lab.stop(client);
    assert!(
        lab.log("server.log")
            .contains("RADIUS-PLUGIN: BACKGROUND  AUTH: Auth failed!")
            && lab
                .log("server.log")
                .contains("radiusplugin.so/PLUGIN_AUTH_USER_PASS_VERIFY status=1"),
        "the plugin should have got an Access-Reject:\n{}",
        logs(&lab, "client-wrong.log")
    );

    // The right code: the tunnel comes up.
    wait_for_fresh_step(60);
    write_private(&auth, &format!("alice\n{}\n", oathtool_code(&secret, 60)));
    let (client, seen) = lab.connect(openvpn, &client_conf_path, "client-right.log");
    assert_eq!(
        seen.as_deref(),
        Some("Initialization Sequence Completed"),
        "right code:\n{}",
        logs(&lab, "client-right.log")
    );
    let server_log = lab.log("server.log");
    for needle in [
        "radiusplugin.so/PLUGIN_AUTH_USER_PASS_VERIFY status=0",
        "Username/Password authentication succeeded for username 'alice'",
        "radiusplugin.so/PLUGIN_CLIENT_CONNECT status=0",
    ] {
        assert!(
            server_log.contains(needle),
            "server log lacks {needle:?}:\n{}",
            logs(&lab, "client-right.log")
        );
    }
    // The plugin's Accounting-Start, answered by otpd (the login above
    // would have failed otherwise).
    assert!(
        env.otpd_log()
            .contains("radius: Accounting-Request from nas=openvpn addr=127.0.0.1:")
            && env.otpd_log().contains("user=alice: answered"),
        "otpd should have answered the plugin's Accounting-Start:\n{}",
        env.otpd_log()
    );
    assert!(
        !lab.exited(client) && !lab.exited(server),
        "client and server should still run:\n{}",
        logs(&lab, "client-right.log")
    );

    // otpd decided twice, for "alice" from the namespace's 127.0.0.1.
    e2e::assert_radius_decisions(&env, "alice", 2, "nas=openvpn addr=127.0.0.1:");
}

/// How often the server renegotiates in the renegotiation tests.
const RENEG_SECONDS: u64 = 8;

/// Brings a tunnel up through otpd (in a lab as above) with the server
/// renegotiating every [`RENEG_SECONDS`] and `[radius] reauth_seconds =
/// reauth`, and watches it for three renegotiation periods. Returns the
/// number of logins the plugin saw accepted, whether the client saw
/// AUTH_FAILED, otpd's RADIUS audit results, and the logs.
fn renegotiations(reauth: u64) -> (usize, bool, Vec<String>, String) {
    let (env, secret, mut lab, dir) = otpd_in_a_lab(&format!("reauth_seconds = {reauth}\n"));
    make_pki(&dir);
    fs::write(
        dir.join("radiusplugin.cnf"),
        shipped_plugin_conf(&dir.join("server.conf")),
    )
    .expect("radiusplugin.cnf");
    fs::write(
        dir.join("server.conf"),
        // `cd`: the plugin writes the client's config file into the
        // server's working directory.
        server_conf(&dir).replace(
            "reneg-sec 0",
            &format!("reneg-sec {RENEG_SECONDS}\ncd {}", dir.display()),
        ),
    )
    .expect("server.conf");
    fs::write(dir.join("client.conf"), client_conf(&dir)).expect("client.conf");
    let server_conf_path = dir.join("server.conf").display().to_string();
    let server = lab.spawn(
        Path::new("/usr/sbin/openvpn"),
        &["--config", &server_conf_path],
        &dir.join("server.log"),
    );
    assert!(lab
        .wait_for(
            server,
            "server.log",
            &["Initialization Sequence Completed"],
            VPN_TIMEOUT
        )
        .is_some());
    wait_for_fresh_step(60);
    write_private(
        &dir.join("client.auth"),
        &format!("alice\n{}\n", oathtool_code(&secret, 60)),
    );
    let client_conf_path = dir.join("client.conf").display().to_string();
    let (_client, seen) = lab.connect(
        Path::new("/usr/sbin/openvpn"),
        &client_conf_path,
        "client.log",
    );
    assert_eq!(
        seen.as_deref(),
        Some("Initialization Sequence Completed"),
        "{}\n{}",
        lab.log("client.log"),
        lab.log("server.log")
    );
    std::thread::sleep(Duration::from_secs(3 * RENEG_SECONDS + 4));
    let server_log = lab.log("server.log");
    let accepted = server_log
        .matches("radiusplugin.so/PLUGIN_AUTH_USER_PASS_VERIFY status=0")
        .count();
    let failed = lab.log("client.log").contains("AUTH_FAILED")
        || server_log.contains("radiusplugin.so/PLUGIN_AUTH_USER_PASS_VERIFY status=1");
    let results = e2e::radius_audit(&env)
        .iter()
        .map(|e| e["result"].as_str().unwrap_or_default().to_owned())
        .collect();
    let logs = format!(
        "--- server ---\n{server_log}\n--- client ---\n{}\n--- otpd ---\n{}",
        lab.log("client.log"),
        env.otpd_log()
    );
    (accepted, failed, results, logs)
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_tunnel_survives_renegotiations_within_reauth_seconds_and_not_without() {
    require_root_and_peers();
    assert!(Path::new(PLUGIN).is_file(), "apt-get install {PACKAGES}");
    let (accepted, failed, results, logs) = renegotiations(600);
    assert!(accepted >= 3 && !failed, "{results:?}\n{logs}");
    assert_eq!(results.first().map(String::as_str), Some("ok"), "{logs}");
    assert!(
        results.iter().skip(1).filter(|r| *r == "reauth").count() >= 2,
        "{results:?}\n{logs}"
    );
    assert!(
        results.iter().all(|r| r == "ok" || r == "reauth"),
        "{results:?}"
    );

    let (accepted, failed, results, logs) = renegotiations(0);
    assert!(accepted == 1 && failed, "{results:?}\n{logs}");
    assert!(results.iter().skip(1).all(|r| r == "fail"), "{results:?}");
}
