//! Whether the end-to-end tests run here: as root, with the real peers
//! installed.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Debian's python3, which has python3-aiosmtpd (not a pyenv shim on PATH).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";
/// Debian packages the peers come from, for error messages.
const PEER_PACKAGES: &str = "python3-aiosmtpd oathtool sqlite3 expect chromium chromium-driver";

/// Whether the end-to-end tests run here: only as root (they start servers
/// and, in later suites, touch /etc/pam.d). Not root: prints
/// "skipped: not root" and returns false. Root: the peers must be installed,
/// and their absence panics with the packages to install.
pub fn e2e_enabled() -> bool {
    let uid = fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    if uid != 0 {
        eprintln!("skipped: not root (run tests/run-all.sh as root for the end-to-end tests)");
        return false;
    }
    require_peers();
    true
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
