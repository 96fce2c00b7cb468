//! The shipped configuration against the built binaries, bad configurations
//! failing closed, and our codes against oathtool's for fixed times.
//!
//! The configuration tests need the built binaries only, no root. The code
//! comparison needs oathtool: it is ignored unless asked for
//! (tests/run-all.sh does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use e2e::{describe, free_port, otpctl_bin, otpd_bin, stderr, stdout, stdout_json};
use otpcore::totp::{base32, Algorithm, TokenParams};

/// conf/otpd.toml with its paths and addresses moved into `dir`.
fn shipped_config(dir: &Path) -> String {
    let shipped = include_str!("../../conf/otpd.toml");
    let replacements = [
        (
            "\"/var/lib/otpd\"",
            format!("\"{}\"", dir.join("state").display()),
        ),
        (
            "\"/run/otpd/otpd.sock\"",
            format!("\"{}\"", dir.join("otpd.sock").display()),
        ),
        (
            "\"127.0.0.1:8080\"",
            format!("\"127.0.0.1:{}\"", free_port()),
        ),
        ("\"0.0.0.0:1812\"", format!("\"127.0.0.1:{}\"", free_port())),
    ];
    let mut text = shipped.to_owned();
    for (from, to) in replacements {
        assert!(text.contains(from), "conf/otpd.toml holds {from}");
        text = text.replace(from, &to);
    }
    text
}

fn write_config(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).expect("write config");
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

fn run(binary: PathBuf, args: &[&str], config: &Path) -> Output {
    Command::new(binary)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run")
}

#[test]
fn shipped_example_passes_check_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "otpd.toml", &shipped_config(dir.path()), 0o640);
    let out = run(otpd_bin(), &["--check-config"], &config);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn bad_configs_are_refused_naming_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = shipped_config(dir.path());
    let cases = [
        (
            "unknown key",
            good.replace("\nwindow = 1", "\nwindow = 1\nwindoww = 1"),
            "windoww",
            0o600,
        ),
        (
            "bad value",
            good.replace("digits = 6", "digits = 4"),
            "digits",
            0o600,
        ),
        (
            "broken TOML",
            good.replace("[policy]", "[policy"),
            "line",
            0o600,
        ),
        (
            "world-readable secret",
            good.clone(),
            "world-readable",
            0o644,
        ),
        (
            "link lifetime that overflows",
            good.replace("link_ttl_hours = 72", "link_ttl_hours = 5124095576030431"),
            "link_ttl_hours",
            0o600,
        ),
        (
            "world-writable, secret inside",
            good.clone(),
            "chmod o-w",
            0o602,
        ),
        (
            "world-writable, no secret inside",
            good.replace(
                "secret = \"change-me\"",
                "secret_file = \"/nonexistent/vpn1.secret\"",
            ),
            "chmod o-w",
            0o666,
        ),
    ];
    for (what, text, expected, mode) in cases {
        let config = write_config(dir.path(), "bad.toml", &text, mode);
        let line = text
            .lines()
            .position(|l| {
                l.contains(expected)
                    || (expected == "world-readable" && l.contains("[[radius.client]]"))
            })
            .map(|n| n + 1);
        for (binary, args) in [
            (otpd_bin(), vec!["--check-config"]),
            // Starting on a bad config fails closed: no listener comes up.
            (otpd_bin(), vec![]),
            (otpctl_bin(), vec!["list"]),
        ] {
            let out = run(binary.clone(), &args, &config);
            let message = stderr(&out);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{what} {binary:?} {args:?}: {message}"
            );
            assert!(message.contains(expected), "{what}: {message}");
            if let Some(line) = line.filter(|_| expected != "line") {
                assert!(
                    message.contains(&format!("line {line}")),
                    "{what}: no line {line} in {message}"
                );
            }
        }
    }
}

/// Runs `otpd --check-config`, `otpd` and `otpctl list` on `config`; each
/// must fail with exit status 1. Their stderr, joined.
fn refused_by_all(config: &Path) -> String {
    let mut said = String::new();
    for (binary, args) in [
        (otpd_bin(), vec!["--check-config"]),
        (otpd_bin(), vec![]),
        (otpctl_bin(), vec!["list"]),
    ] {
        let out = run(binary.clone(), &args, config);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{binary:?} {args:?}: {}",
            describe(&out)
        );
        said.push_str(&stderr(&out));
        said.push_str(&stdout(&out));
    }
    said
}

#[test]
fn config_errors_do_not_echo_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = shipped_config(dir.path());
    let secret = "Zq7-radius-SECRET";
    for (what, line) in [
        ("unterminated string", format!("secret = \"{secret}")),
        ("unquoted string", format!("secret = {secret}")),
        ("a number", "secret = 8675309314159".to_owned()),
    ] {
        let text = good.replace("secret = \"change-me\"", &line);
        let config = write_config(dir.path(), "broken.toml", &text, 0o600);
        let number = text
            .lines()
            .position(|l| l.starts_with(&line))
            .expect("line")
            + 1;
        let said = refused_by_all(&config);
        assert!(said.contains(&format!("line {number}")), "{what}: {said}");
        for part in [secret, "Zq7", "SECRET", "8675309314159"] {
            assert!(
                !said.contains(part),
                "{what}: the error shows {part}: {said}"
            );
        }
    }
}

#[test]
fn swapped_csv_columns_do_not_echo_the_secret_and_import_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "otpd.toml", &shipped_config(dir.path()), 0o600);
    let csv = dir.path().join("tokens.csv");
    // The secret as authenticator apps show it, in groups of four.
    let secret = "JBSW Y3DP EHPK 3PXP GEZD GNBV";
    fs::write(&csv, format!("{secret},alice\nGEZDGNBVGY3TQOJQ,bob\n")).expect("csv");
    let csv_arg = csv.display().to_string();
    let out = run(
        otpctl_bin(),
        &["import", "--format", "csv", &csv_arg],
        &config,
    );
    let said = describe(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("line 1") && said.contains("line 2"), "{said}");
    assert!(said.contains("nothing imported"), "{said}");
    for part in secret.split(' ').chain(["GEZDGNBVGY3TQOJQ"]) {
        assert!(!said.contains(part), "otpctl import shows {part}: {said}");
    }
    let list = run(otpctl_bin(), &["list", "--json"], &config);
    assert!(list.status.success(), "{}", describe(&list));
    assert_eq!(
        stdout_json(&list),
        serde_json::json!([]),
        "something was imported"
    );
}

#[test]
#[ignore = "end-to-end: needs oathtool, the real phone; run tests/run-all.sh"]
fn codes_equal_oathtool_for_fixed_times() {
    let secrets: [&[u8]; 3] = [
        b"12345678901234567890",
        b"12345678901234567890123456789012",
        b"\x00\xffotpd fixed test secret\x10\x20\x7f",
    ];
    let times = [
        59_u64,
        1_111_111_109,
        1_234_567_890,
        1_800_000_030,
        2_000_000_000,
    ];
    for secret in secrets {
        let b32 = base32(secret);
        for algorithm in [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512] {
            for (digits, period) in [(6, 60), (8, 60), (6, 30)] {
                let params = TokenParams {
                    algorithm,
                    digits,
                    period,
                };
                for t in times {
                    let out = Command::new("oathtool")
                        .arg(format!("--totp={}", algorithm.as_str()))
                        .arg(format!("--digits={digits}"))
                        .arg(format!("--time-step-size={period}s"))
                        .arg(format!("--now=@{t}"))
                        .arg("--base32")
                        .arg(b32.as_str())
                        .output()
                        .expect("run oathtool (apt-get install oathtool)");
                    assert!(out.status.success(), "{}", stderr(&out));
                    let theirs = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                    assert_eq!(
                        params.code_at(secret, t).as_str(),
                        theirs,
                        "{algorithm:?} {digits} digits {period} s at {t}"
                    );
                }
            }
        }
    }
}
