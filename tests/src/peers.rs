//! Whether the end-to-end tier can run here: as root, with the real peers
//! installed.
//!
//! End-to-end tests are marked `#[ignore = "end-to-end: ..."]`, so a plain
//! `cargo test` lists them as ignored; `tests/run-all.sh` runs them as root
//! with `--include-ignored`. Each begins with [`require_root_and_peers`],
//! which panics when it cannot run: an end-to-end test never passes without
//! having run.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Debian's python3, which has python3-aiosmtpd (not a pyenv shim on PATH).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";
/// Debian packages the peers come from, for error messages.
const PEER_PACKAGES: &str = "python3-aiosmtpd oathtool sqlite3 expect chromium chromium-driver";

/// Panics unless this runs as root (the end-to-end tests start servers and
/// write /etc/pam.d) with the harness's peers installed (aiosmtpd,
/// oathtool, sqlite3, expect, chromium and chromedriver); the message names
/// what is missing and how to get it.
pub fn require_root_and_peers() {
    let uid = fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    assert!(
        uid == 0,
        "this end-to-end test needs root and the real peers: run tests/run-all.sh as root \
         (a plain `cargo test` leaves it ignored)"
    );
    require_peers();
}

/// Panics unless each `(tool, package)` is on PATH, naming the Debian
/// packages of those that are not (tests/run-all.sh installs them all).
pub fn require_tools(tools: &[(&str, &str)]) {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(tool, _)| {
            !Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(_, package)| *package)
        .collect();
    assert!(
        missing.is_empty(),
        "missing tools: `apt-get install {}` (tests/run-all.sh does)",
        missing.join(" ")
    );
}

fn require_peers() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        let mut missing = Vec::new();
        let aiosmtpd = Command::new(SYSTEM_PYTHON)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(aiosmtpd, Ok(s) if s.success()) {
            missing.push(format!("aiosmtpd for {SYSTEM_PYTHON} (python3-aiosmtpd)"));
        }
        for (tool, flag) in [
            ("oathtool", "--version"),
            ("sqlite3", "--version"),
            ("expect", "-v"),
            ("chromedriver", "--version"),
            ("chromium", "--version"),
        ] {
            let ok = Command::new(tool)
                .arg(flag)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                missing.push(tool.to_owned());
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "end-to-end tests run as root need their peers, missing: {}; \
                 install them with `apt-get install {PEER_PACKAGES}` (tests/run-all.sh does)",
                missing.join(", ")
            ))
        }
    });
    if let Err(message) = result {
        panic!("{message}");
    }
}
