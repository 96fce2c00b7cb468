//! Decisions reach a real syslog, end to end (root only): a private
//! rsyslogd listens on a socket of its own and writes `authpriv.*` to a
//! file of its own. otpd and pam_otp write to `/dev/log`, so while the test
//! runs `/dev/log` is a symbolic link to that socket; the test only makes
//! the link where there is no `/dev/log` and removes it afterwards, also
//! when it fails; where a live `/dev/log` exists the test fails with a
//! message saying so, and the machine's own syslog is never touched. A login over
//! the Unix socket (pamtester, a real /etc/pam.d service), a wrong code and
//! a login over RADIUS (radclient) must appear as otpd's decision lines with
//! user, channel and result, next to pam_otp's own lines; no code, seed or
//! activation password may appear in the file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::pamtester::{AUTH_ERR, SUCCESS};
use e2e::{require_root_and_peers, require_tools, start_with_radius, PamService};

const DEV_LOG: &str = "/dev/log";
const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const RADIUS_SECRET: &str = "syslog-secret";

/// A private rsyslogd, killed on drop.
struct Rsyslogd {
    child: Child,
    socket: PathBuf,
    file: PathBuf,
}

impl Rsyslogd {
    fn start(dir: &Path) -> Rsyslogd {
        let work = dir.join("work");
        fs::create_dir_all(&work).expect("work dir");
        let socket = dir.join("log");
        let file = dir.join("authpriv.log");
        let config = dir.join("rsyslog.conf");
        fs::write(
            &config,
            format!(
                "global(workDirectory=\"{work}\")\n\
                 module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
                 input(type=\"imuxsock\" Socket=\"{socket}\")\n\
                 authpriv.* action(type=\"omfile\" file=\"{file}\")\n",
                work = work.display(),
                socket = socket.display(),
                file = file.display(),
            ),
        )
        .expect("rsyslog.conf");
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&config)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("rsyslogd.err")).expect("log"))
            .spawn()
            .expect("start rsyslogd");
        let mut rsyslogd = Rsyslogd {
            child,
            socket,
            file,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !rsyslogd.socket.exists() {
            let exited = rsyslogd.child.try_wait().expect("rsyslogd status");
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "rsyslogd did not open {} ({exited:?}): {}",
                rsyslogd.socket.display(),
                fs::read_to_string(dir.join("rsyslogd.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        rsyslogd
    }

    /// The file's text once it holds every one of `needles` (or after 20 s).
    fn text_with(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = fs::read_to_string(&self.file).unwrap_or_default();
            if needles.iter().all(|n| text.contains(n)) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/dev/log` as a link to a private socket, removed on drop (a panic
/// included) if it is still that link.
struct DevLogLink {
    target: PathBuf,
}

impl DevLogLink {
    /// None when `/dev/log` exists: a live syslog is left alone.
    fn make(target: &Path) -> Option<DevLogLink> {
        if fs::symlink_metadata(DEV_LOG).is_ok() {
            return None;
        }
        symlink(target, DEV_LOG).expect("link /dev/log");
        Some(DevLogLink {
            target: target.to_owned(),
        })
    }
}

impl Drop for DevLogLink {
    fn drop(&mut self) {
        if fs::read_link(DEV_LOG).is_ok_and(|t| t == self.target) {
            let _ = fs::remove_file(DEV_LOG);
        }
    }
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn decisions_of_otpd_and_pam_otp_reach_syslog_without_secrets() {
    require_root_and_peers();
    require_tools(&[("rsyslogd", "rsyslog"), ("pamtester", "pamtester")]);
    let dir = tempfile::Builder::new()
        .prefix("otpd-syslog-")
        .tempdir()
        .expect("temp dir");
    let rsyslogd = Rsyslogd::start(dir.path());
    let Some(_link) = DevLogLink::make(&rsyslogd.socket) else {
        panic!(
            "{DEV_LOG} exists: this test does not touch a live syslog; \
             run it where {DEV_LOG} is absent (a container, CI)"
        );
    };
    let (env, radius_port) = start_with_radius("gw", RADIUS_SECRET);
    let csv = env.root().join("tokens.csv");
    fs::write(
        &csv,
        format!("alice,{SEED},30,6,SHA1\nbob,{SEED},30,6,SHA1\n"),
    )
    .expect("csv");
    let csv = csv.to_string_lossy().into_owned();
    let output = env.otpctl(&["import", "--format", "csv", &csv], "");
    e2e::assert_success(&output, "otpctl import");
    env.issue("carol", "carol@example.jp", "4321");

    let service = PamService::new(
        &format!("socket={} debug", env.socket_path().display()),
        &[],
    );
    let code = e2e::oathtool_code(SEED, 30);
    let output = service.authenticate("alice", &format!("{code}\n"));
    assert!(
        e2e::pamtester::ended_with(&output, SUCCESS),
        "{}",
        e2e::describe(&output)
    );
    let wrong = e2e::wrong_code(SEED);
    let output = service.authenticate("alice", &format!("{wrong}\n"));
    assert!(
        e2e::pamtester::ended_with(&output, AUTH_ERR),
        "{}",
        e2e::describe(&output)
    );
    let output = e2e::run_with_input(
        Command::new("radclient")
            .args(["-x", "-r", "1", "-t", "3"])
            .arg(format!("127.0.0.1:{radius_port}"))
            .arg("auth")
            .arg(RADIUS_SECRET),
        &format!("User-Name = \"bob\"\nUser-Password = \"{code}\"\nMessage-Authenticator = 0x00\n"),
    );
    assert!(
        e2e::stdout(&output).contains("Access-Accept"),
        "{}",
        e2e::describe(&output)
    );

    let accepted = "pam ok user=alice";
    let refused = "pam fail user=alice";
    let by_radius = "radius ok user=bob";
    let text = rsyslogd.text_with(&[accepted, refused, by_radius, "pam_otp"]);
    let lines =
        |needle: &str| -> Vec<&str> { text.lines().filter(|l| l.contains(needle)).collect() };
    for needle in [accepted, refused, by_radius] {
        let found = lines(needle);
        assert_eq!(found.len(), 1, "one line with {needle:?} in\n{text}");
        assert!(found[0].contains("otpd"), "{}", found[0]);
    }
    assert!(!lines("pam_otp").is_empty(), "pam_otp's lines in\n{text}");
    for secret in [code.as_str(), wrong.as_str(), SEED, "4321", RADIUS_SECRET] {
        assert!(!text.contains(secret), "{secret:?} in the syslog:\n{text}");
    }
}
