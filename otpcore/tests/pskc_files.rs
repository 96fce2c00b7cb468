//! The seed files under tests/data/pskc, written by the python3-pskc
//! library (generate.py there), read back exactly as it wrote them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[path = "support/pskc_expected.rs"]
mod pskc_expected;

#[test]
fn python_pskc_fixtures_read_back_exactly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pskc");
    assert_eq!(pskc_expected::check_generated(&dir), 8);
}
