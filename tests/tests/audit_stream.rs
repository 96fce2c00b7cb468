//! `otpctl audit` prints a long trail as it reads it (root only): 300,000
//! entries written into the SQLite store with the sqlite3 CLI come out as
//! JSON Lines, every line one entry in order, and otpctl's peak memory
//! (GNU time's maximum resident set size) is the same for 300,000 entries
//! as for 30,000. A reader that stops early (`head`) ends otpctl quietly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use e2e::{
    assert_success, describe, otpctl_bin, require_root_and_peers, require_tools, run_with_input,
    stdout, stdout_json_lines, EnvOptions, TestEnv,
};

/// Entries written before the first measurement, and in all.
const SMALL: u64 = 30_000;
const LARGE: u64 = 300_000;
/// How much more memory the large trail may take: a trail held in memory
/// would take over 100 MiB more.
const SLACK_KIB: u64 = 4 * 1024;
/// The time of the first entry: recent, so the retention keeps it.
const FIRST: u64 = 1_790_000_000;

/// Halfway through the trail: `FIRST` + 150,000 s.
const SINCE: &str = "2026-09-23T07:53:20Z";

/// Appends entries `from..to` to the audit table, numbered by `reason`.
fn write_entries(env: &TestEnv, from: u64, to: u64) {
    env.sqlite(&format!(
        "WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {to}) \
         INSERT INTO audit (time, user, channel, peer, result, reason) \
         SELECT {FIRST} + i, 'user' || (i % 7), 'pam', 'uid=0 pid=' || i || ' service=sshd', \
         CASE i % 2 WHEN 0 THEN 'ok' ELSE 'fail' END, 'entry ' || i FROM n"
    ));
}

/// Runs otpctl audit with `args` under GNU time: its output and its peak
/// resident set size in KiB.
fn audit_measured(env: &TestEnv, args: &[&str]) -> (std::process::Output, u64) {
    let mut command = Command::new("/usr/bin/time");
    command
        .args(["-f", "maxrss=%M"])
        .arg(otpctl_bin())
        .arg("--config")
        .arg(&env.config)
        .arg("audit")
        .args(args);
    let output = run_with_input(&mut command, "");
    assert_success(&output, "otpctl audit");
    let rss = String::from_utf8_lossy(&output.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("maxrss=")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no maxrss from GNU time: {}", describe(&output)));
    (output, rss)
}

/// Checks that `output` holds entries `0..count` as JSON Lines, in order.
fn assert_entries(output: &std::process::Output, count: u64) {
    let lines = stdout_json_lines(output);
    assert_eq!(lines.len() as u64, count);
    for (i, line) in (0u64..).zip(&lines) {
        assert_eq!(line["reason"], format!("entry {i}"), "line {}", i + 1);
        assert_eq!(line["user"], format!("user{}", i % 7), "{line}");
        assert_eq!(line["channel"], "pam", "{line}");
        assert_eq!(line["peer"], format!("uid=0 pid={i} service=sshd"));
        assert_eq!(line["result"], if i % 2 == 0 { "ok" } else { "fail" });
        assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_long_trail_prints_line_by_line_in_flat_memory() {
    require_root_and_peers();
    require_tools(&[("sqlite3", "sqlite3"), ("/usr/bin/time", "time")]);
    let env = TestEnv::start_with(EnvOptions {
        smtp: false,
        ..EnvOptions::default()
    });

    write_entries(&env, 0, SMALL);
    let (small, small_rss) = audit_measured(&env, &["--json"]);
    assert_entries(&small, SMALL);

    write_entries(&env, SMALL, LARGE);
    let (large, large_rss) = audit_measured(&env, &["--json"]);
    assert_entries(&large, LARGE);
    let (text, text_rss) = audit_measured(&env, &[]);
    let text = stdout(&text);
    assert_eq!(text.lines().count() as u64, LARGE);
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.contains(" entry 299999 [uid=0 pid=299999")),
        "{:?}",
        text.lines().last()
    );
    eprintln!(
        "audit_stream: otpctl audit peak RSS: {SMALL} entries --json {small_rss} KiB; \
         {LARGE} entries --json {large_rss} KiB, text {text_rss} KiB"
    );
    assert!(
        large_rss <= small_rss + SLACK_KIB && text_rss <= small_rss + SLACK_KIB,
        "memory grows with the trail: {small_rss} KiB for {SMALL} entries, \
         {large_rss} KiB (JSON) and {text_rss} KiB (text) for {LARGE}"
    );

    // One user's entries from a time, filtered as they stream.
    let output = env.otpctl(
        &["audit", "--json", "--user", "user3", "--since", SINCE],
        "",
    );
    assert_success(&output, "otpctl audit --user --since");
    let since = e2e::parse_rfc3339_utc(SINCE).expect("a time");
    let since = u64::try_from(since).expect("after 1970");
    let expected = (0..LARGE)
        .filter(|i| i % 7 == 3 && FIRST + i >= since)
        .count();
    assert!(expected > 0 && (expected as u64) < LARGE / 7, "{expected}");
    let lines = stdout_json_lines(&output);
    assert_eq!(lines.len(), expected);
    assert!(lines.iter().all(|l| l["user"] == "user3"));

    // A reader that stops early: otpctl ends at once, status 0, quietly.
    let piped = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {} --config {} audit --json | head -n 3",
            otpctl_bin().display(),
            env.config.display()
        ))
        .output()
        .expect("bash");
    assert!(piped.status.success(), "{}", describe(&piped));
    assert_eq!(stdout(&piped).lines().count(), 3);
    assert_eq!(String::from_utf8_lossy(&piped.stderr), "");
}
