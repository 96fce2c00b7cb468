//! Seed files written by the real python3-pskc library, fresh each run
//! (random secrets, serial numbers and counters; plain, encrypted with a
//! pre-shared AES-128-CBC key with and without an encrypted MAC key, and
//! the forms that must be refused), read by `otpcore::pskc` exactly as the
//! library wrote them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use e2e::{require_root_and_peers, SYSTEM_PYTHON};

#[path = "../../otpcore/tests/support/pskc_expected.rs"]
mod pskc_expected;

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn seed_files_from_python_pskc_read_back_exactly() {
    require_root_and_peers();
    let library = Command::new(SYSTEM_PYTHON)
        .args(["-c", "import pskc"])
        .status()
        .expect("run python3");
    assert!(
        library.success(),
        "{SYSTEM_PYTHON} lacks the pskc module: `apt-get install python3-pskc` (tests/run-all.sh does)"
    );
    let generator =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../otpcore/tests/data/pskc/generate.py");
    for _ in 0..3 {
        let dir = tempfile::tempdir().expect("temporary directory");
        let output = Command::new(SYSTEM_PYTHON)
            .arg(&generator)
            .arg(dir.path())
            .output()
            .expect("run generate.py");
        assert!(
            output.status.success(),
            "generate.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(pskc_expected::check_generated(dir.path()), 8);
    }
}
