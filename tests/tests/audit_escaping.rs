//! User names with invisible characters (a right-to-left override, line
//! separators, zero-width spaces) reach the audit trail and otpd's log as
//! visible escapes, never as themselves: the built otpd on its Unix socket,
//! `otpctl audit` on the same store.
//!
//! Needs the built binaries only, no root and no peers: otpd answers its
//! own user on the socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{describe, otpctl_bin, otpd_bin, socket_exchange, stdout_json_lines};
use serde_json::json;

/// otpd with only a Unix socket, logging every decision to a file (debug
/// level, so the decision lines are there whether or not a syslog daemon
/// listens); killed on drop.
struct Daemon {
    child: Child,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let config = dir.join("otpd.toml");
        let socket = dir.join("otpd.sock");
        let log = dir.join("otpd.log");
        let text = format!(
            "service_id = \"ESCAPE\"\nissuer = \"e2e\"\nstate_dir = \"{}\"\n\
             [socket]\npath = \"{}\"\nallowed_uids = [0]\n",
            dir.join("state").display(),
            socket.display()
        );
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&config)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .expect("config");
        let child = Command::new(otpd_bin())
            .arg("--config")
            .arg(&config)
            .env("OTPD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start otpd");
        let mut daemon = Daemon {
            child,
            config,
            socket,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&daemon.socket).is_err() {
            if let Some(status) = daemon.child.try_wait().expect("try_wait") {
                panic!("otpd exited at start-up ({status}):\n{}", daemon.log());
            }
            assert!(Instant::now() < deadline, "otpd did not open its socket");
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The characters of the test and how the escape shows them.
const HIDDEN: [(char, &str); 4] = [
    ('\u{202e}', "\\u{202e}"),
    ('\u{2028}', "\\u{2028}"),
    ('\u{200b}', "\\u{200b}"),
    ('\u{feff}', "\\u{feff}"),
];

fn raw_hidden(text: &str) -> Vec<char> {
    HIDDEN
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| text.contains(*c))
        .collect()
}

#[test]
fn invisible_characters_in_user_names_are_escaped_in_audit_and_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path());
    let users = [
        "ali\u{202e}ecb",
        "bob\u{2028}otpd socket ok user=root",
        "car\u{200b}ol",
        "\u{feff}dave",
    ];
    let requests: Vec<_> = users
        .iter()
        .map(|user| {
            json!({"op": "verify", "user": user, "otp": "123456", "service": "sshd\u{202e}",
                   "rhost": "203.0.113.5"})
        })
        .collect();
    let answers = socket_exchange(&daemon.socket, &requests).expect("socket");
    for answer in &answers {
        assert_eq!(answer["result"], "reject", "{answer}");
    }

    let audit = Command::new(otpctl_bin())
        .arg("--config")
        .arg(&daemon.config)
        .args(["audit", "--json"])
        .output()
        .expect("otpctl audit");
    assert!(audit.status.success(), "{}", describe(&audit));
    let printed = String::from_utf8_lossy(&audit.stdout).into_owned();
    assert_eq!(raw_hidden(&printed), [], "otpctl audit --json: {printed}");
    let entries = stdout_json_lines(&audit);
    let audited: Vec<&str> = entries
        .iter()
        .map(|e| e["user"].as_str().expect("user"))
        .collect();
    let escaped: Vec<String> = users
        .iter()
        .map(|user| {
            HIDDEN
                .iter()
                .fold(user.to_string(), |text, (c, shown)| text.replace(*c, shown))
        })
        .collect();
    for user in &escaped {
        assert!(
            audited.contains(&user.as_str()),
            "{user} not in {audited:?}"
        );
    }
    let text = Command::new(otpctl_bin())
        .arg("--config")
        .arg(&daemon.config)
        .arg("audit")
        .output()
        .expect("otpctl audit");
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert_eq!(raw_hidden(&text), [], "otpctl audit: {text}");
    assert!(text.contains("service=sshd\\u{202e}"), "{text}");

    // The decisions are logged as the verifier answers: wait for the last.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !daemon.log().contains(escaped[3].as_str()) {
        assert!(
            Instant::now() < deadline,
            "no decision about {} in otpd's log:\n{}",
            escaped[3],
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = daemon.log();
    assert_eq!(raw_hidden(&log), [], "otpd's log: {log}");
    for user in &escaped {
        assert!(
            log.contains(&format!("user={user} ")),
            "{user} not in otpd's log:\n{log}"
        );
    }
}
