//! The private PostgreSQL server of the harness (`e2e::postgres`): databases
//! owned by `otpd` over the Unix socket and over TLS with verify-full, plain
//! TCP refused, data kept across a stop and a crash, and no server left
//! behind once its test process or its owner is gone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e::postgres::PrivatePostgres;
use e2e::{assert_success, describe, require_root_and_peers, run_with_input, stderr, stdout};

/// The line `shared_server_is_one_per_process` prints about its server.
const SHARED_LINE: &str = "shared-postgres:";

/// `psql -X -qAt -c sql` on `url`, with `password` in PGPASSWORD if given.
fn psql(url: &str, password: Option<&str>, sql: &str) -> Output {
    let mut command = Command::new("psql");
    command
        .args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "20")
        .env_remove("PGPASSWORD");
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    run_with_input(&mut command, "")
}

fn psql_ok(url: &str, password: Option<&str>, sql: &str) -> String {
    let output = psql(url, password, sql);
    assert_success(&output, &format!("psql {url} -c {sql:?}"));
    stdout(&output).trim_end().to_owned()
}

/// The PID on the first line of the cluster's `postmaster.pid`.
fn postmaster_pid(dir: &Path) -> u32 {
    let file = dir.join("data/postmaster.pid");
    let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.lines().next().unwrap().parse().unwrap()
}

/// Whether process `pid` is gone (or a zombie waiting to be reaped).
fn gone(pid: u32) -> bool {
    let output = Command::new("ps")
        .args(["-o", "stat=", "-p", &pid.to_string()])
        .output()
        .expect("ps");
    let stat = stdout(&output);
    stat.trim().is_empty() || stat.starts_with('Z')
}

/// Waits up to a minute until `pid` is gone and `dir` removed.
fn wait_until_cleaned_up(pid: u32, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !gone(pid) || dir.exists() {
        assert!(
            Instant::now() < deadline,
            "postgres {pid} still running or {} still there",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn databases_over_the_socket_and_over_tls_only() {
    require_root_and_peers();
    let pg = PrivatePostgres::shared();
    let a = pg.create_database("harness_a");
    let b = pg.create_database("harness_b");
    for db in [&a, &b] {
        assert_eq!(
            pg.psql(
                "postgres",
                &format!(
                    "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{}'",
                    db.name
                )
            ),
            "otpd"
        );
    }
    assert_eq!(a.password_file, b.password_file);
    assert_eq!(a.ca_file, pg.dir().join("ca.pem"));

    // The socket: otpd without a password; each database its own.
    assert!(
        a.socket_url.starts_with("postgresql://otpd@%2Ftmp%2F"),
        "{}",
        a.socket_url
    );
    assert!(a.socket_url.ends_with(&format!(":{}/harness_a", pg.port())));
    assert_eq!(
        psql_ok(
            &a.socket_url,
            None,
            "CREATE TABLE t (x int); INSERT INTO t VALUES (7); SELECT current_user, sum(x) FROM t"
        ),
        "otpd|7"
    );
    assert_eq!(
        psql_ok(&b.socket_url, None, "SELECT to_regclass('t') IS NULL"),
        "t"
    );

    // The password file: root's, 0600, the password and a newline.
    let meta = fs::metadata(&a.password_file).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600));
    let text = fs::read_to_string(&a.password_file).unwrap();
    let password = text.strip_suffix('\n').expect("a trailing newline");
    assert!(password.len() >= 32 && !password.contains(char::is_whitespace));

    // TCP with TLS, the server's name verified against the test CA.
    assert_eq!(
        a.tls_url,
        format!(
            "postgresql://otpd@localhost:{}/harness_a?sslmode=verify-full&sslrootcert={}",
            pg.port(),
            a.ca_file.display()
        )
    );
    assert_eq!(
        psql_ok(
            &a.tls_url,
            Some(password),
            "SELECT ssl, sum(x) FROM pg_stat_ssl, t WHERE pid = pg_backend_pid() GROUP BY ssl"
        ),
        "t|7"
    );
    let by_address = a.tls_url.replace("@localhost:", "@127.0.0.1:");
    assert_eq!(psql_ok(&by_address, Some(password), "SELECT 1"), "1");

    // A wrong password, a CA that did not sign the certificate, no TLS.
    let wrong = psql(&a.tls_url, Some("not-the-password"), "SELECT 1");
    assert!(
        !wrong.status.success() && stderr(&wrong).contains("password authentication failed"),
        "{}",
        describe(&wrong)
    );
    let other_ca = a.tls_url.replace(
        &a.ca_file.display().to_string(),
        "/etc/ssl/certs/ca-certificates.crt",
    );
    let unverified = psql(&other_ca, Some(password), "SELECT 1");
    assert!(
        !unverified.status.success() && stderr(&unverified).contains("certificate verify failed"),
        "{}",
        describe(&unverified)
    );
    let plain = format!(
        "postgresql://otpd@127.0.0.1:{}/harness_a?sslmode=disable",
        pg.port()
    );
    let refused = psql(&plain, Some(password), "SELECT 1");
    assert!(
        !refused.status.success() && stderr(&refused).contains("pg_hba.conf rejects connection"),
        "{}",
        describe(&refused)
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn stop_start_again_and_a_crash_keep_committed_data() {
    require_root_and_peers();
    let pg = PrivatePostgres::start();
    let db = pg.create_database("durable");
    psql_ok(
        &db.socket_url,
        None,
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1)",
    );
    let port = pg.port();

    pg.stop();
    assert!(!psql(&pg.admin_url(), None, "SELECT 1").status.success());
    pg.start_again();
    assert_eq!(pg.port(), port);
    assert_eq!(
        psql_ok(
            &db.socket_url,
            None,
            "INSERT INTO t VALUES (2); SELECT sum(x) FROM t"
        ),
        "3"
    );

    // A crash right after a commit: the row is there after recovery.
    let pid = postmaster_pid(pg.dir());
    pg.kill();
    assert!(gone(pid), "the killed postmaster {pid} still runs");
    pg.start_again();
    assert_eq!(pg.psql("durable", "SELECT sum(x) FROM t"), "3");
    let log = pg.log();
    assert!(log.contains("database system was interrupted"), "{log}");

    // Drop stops the server and removes its directory.
    let (dir, pid) = (pg.dir().to_owned(), postmaster_pid(pg.dir()));
    drop(pg);
    assert!(gone(pid), "postgres {pid} still runs after drop");
    assert!(!dir.exists(), "{} still there after drop", dir.display());
}

/// Also run as a child process by
/// `shared_server_stops_when_the_test_process_exits`.
#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn shared_server_is_one_per_process() {
    require_root_and_peers();
    let pg = PrivatePostgres::shared();
    assert!(std::ptr::eq(pg, PrivatePostgres::shared()));
    assert_eq!(pg.psql("postgres", "SELECT current_user"), "postgres");
    println!(
        "{SHARED_LINE} {} {}",
        postmaster_pid(pg.dir()),
        pg.dir().display()
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn shared_server_stops_when_the_test_process_exits() {
    require_root_and_peers();
    let output = run_with_input(
        Command::new(std::env::current_exe().unwrap()).args([
            "--exact",
            "shared_server_is_one_per_process",
            "--include-ignored",
            "--nocapture",
        ]),
        "",
    );
    assert_success(&output, "the child test");
    let said = stdout(&output);
    let line = said
        .lines()
        .find_map(|l| l.strip_prefix(SHARED_LINE))
        .unwrap_or_else(|| panic!("no {SHARED_LINE:?} line: {}", describe(&output)));
    let (pid, dir) = line.trim().split_once(' ').unwrap();
    wait_until_cleaned_up(pid.parse().unwrap(), &PathBuf::from(dir));
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn the_command_starts_a_server_for_scripts_and_stops_it() {
    require_root_and_peers();
    let bin = env!("CARGO_BIN_EXE_private-postgres");
    let parent = tempfile::tempdir().unwrap();
    fs::set_permissions(
        parent.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dir = parent.path().join("pg");

    // Returns at once (the server does not hold its stdout), one line.
    let started = run_with_input(Command::new(bin).arg("start").arg(&dir), "");
    assert_success(&started, "private-postgres start");
    let said = stdout(&started);
    let url = said.strip_suffix('\n').expect("one line");
    assert!(
        !url.contains('\n') && url.starts_with("postgresql://postgres@%2F"),
        "{said}"
    );
    let pid = postmaster_pid(&dir);
    assert_eq!(psql_ok(url, None, "SELECT current_user"), "postgres");

    let stopped = run_with_input(Command::new(bin).arg("stop").arg(&dir), "");
    assert_success(&stopped, "private-postgres stop");
    assert!(gone(pid), "postgres {pid} still runs after stop");
    assert!(!psql(url, None, "SELECT 1").status.success());

    let usage = run_with_input(&mut Command::new(bin), "");
    assert_eq!(usage.status.code(), Some(2), "{}", describe(&usage));
}
