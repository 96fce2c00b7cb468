//! `otpctl store copy` end to end: 100,000 tokens in a SQLite store that
//! otpd serves (and writes to during the copy) copied over TLS into an
//! empty database of a private PostgreSQL server; then otpd on that
//! database lets a sample of the tokens log in, refuses the code used
//! before the copy as a replay, and a second copy into the same database is
//! refused without changing it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::postgres::{Database, PrivatePostgres};
use e2e::{
    assert_success, import_active_tokens, now_unix, oathtool_code, otpctl_bin,
    require_root_and_peers, run_with_input, socket_exchange, start_otpd_on, start_socket_otpd,
    stderr, stdout_json, stdout_json_lines, wait_for_fresh_step, Server,
};
use otpcore::totp::{Algorithm, TokenParams};
use serde_json::{json, Value};

const USERS: usize = 100_000;
const PERIOD: u64 = 60;
const PARAMS: TokenParams = TokenParams {
    algorithm: Algorithm::Sha1,
    digits: 6,
    period: PERIOD,
};

fn name(i: usize) -> String {
    format!("u{i:06}")
}

/// A secret of its own for token `i`.
fn secret(i: usize) -> Vec<u8> {
    let mut s = (i as u64).to_be_bytes().to_vec();
    s.extend((0..12u32).map(|b| (i as u32).wrapping_mul(2_654_435_761).rotate_left(b) as u8));
    s
}

fn base32(secret: &[u8]) -> String {
    data_encoding::BASE32.encode(secret)
}

/// Verifies one code per `(user, code)` on one connection to `socket`; the
/// results (`accept`, `reject`, ...).
fn verify(socket: &Path, logins: &[(String, String)]) -> Vec<String> {
    let requests: Vec<Value> = logins
        .iter()
        .map(|(user, code)| json!({"op": "verify", "user": user, "otp": code, "service": "sshd"}))
        .collect();
    socket_exchange(socket, &requests)
        .expect("socket")
        .iter()
        .map(|a| a["result"].as_str().unwrap_or("?").to_owned())
        .collect()
}

fn otpctl(config: &Path, args: &[&str]) -> Output {
    run_with_input(
        Command::new(otpctl_bin())
            .arg("--config")
            .arg(config)
            .args(args),
        "",
    )
}

/// `otpctl store copy` of the store of `config` into `db` (over TLS, its
/// password from the database's file), with the options `more`.
fn copy_into(config: &Path, db: &Database, more: &[&str]) -> Output {
    let password_file = db.password_file.to_str().expect("path");
    let args = [
        &[
            "store",
            "copy",
            "--to",
            &db.tls_url,
            "--password-file",
            password_file,
        ],
        more,
    ]
    .concat();
    otpctl(config, &args)
}

/// Waits until `daemon` opens `socket`.
fn wait_for_socket(daemon: &mut Server, socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if let Some(status) = daemon.exited() {
            panic!("otpd exited at start-up: {status}\n{}", daemon.log());
        }
        assert!(Instant::now() < deadline, "no socket:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the database `db` holds, row for row, as digests and counts.
fn contents(pg: &PrivatePostgres, db: &str) -> String {
    pg.psql(
        db,
        "SELECT count(*), md5(coalesce(string_agg(concat_ws('|', id, username, user_id, state, last_step, \
         failures, locked_until, encode(secret, 'hex')), ',' ORDER BY id), '')) FROM enrolments;\n\
         SELECT count(*), md5(coalesce(string_agg(concat_ws('|', id, time, username, reason), ',' ORDER BY id), '')) \
         FROM audit;\n\
         SELECT count(*) FROM meta;",
    )
}

/// The figures of one side of the report, without the backend's own.
fn figures(side: &Value) -> Value {
    let mut side = side.clone();
    let map = side.as_object_mut().expect("an object");
    map.remove("backend");
    map.remove("schema_version");
    side
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_served_sqlite_store_of_100000_tokens_moves_to_postgresql() {
    require_root_and_peers();
    let pg = PrivatePostgres::shared();
    let db = pg.create_database("store_copy");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");

    let started = Instant::now();
    let names: Vec<String> = (0..USERS).map(name).collect();
    let secrets: Vec<Vec<u8>> = (0..USERS).map(secret).collect();
    import_active_tokens(&state, "", &names, &secrets, PARAMS);
    eprintln!(
        "imported {USERS} tokens in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // otpd on SQLite accepts one code; it stays used.
    let socket = dir.path().join("otpd.sock");
    let sqlite_otpd = start_socket_otpd(dir.path(), &state, &socket, "normal");
    wait_for_fresh_step(PERIOD);
    let used = USERS / 2;
    let used_code = oathtool_code(&base32(&secrets[used]), PERIOD);
    let used_step = PARAMS.step_at(now_unix());
    assert_eq!(
        verify(&socket, &[(name(used), used_code.clone())]),
        ["accept"]
    );

    // The copy, while otpd keeps writing audit rows.
    let config = dir.path().join("otpd.toml");
    let password_file = db.password_file.to_str().expect("path");
    let stop = AtomicBool::new(false);
    let (output, copy_seconds, written_meanwhile) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut written = 0;
            while !stop.load(Ordering::Relaxed) && written < 5_000 {
                verify(&socket, &[("nobody".to_owned(), "000000".to_owned())]);
                written += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            written
        });
        let started = Instant::now();
        let output = copy_into(&config, &db, &["--json"]);
        let seconds = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        (output, seconds, writer.join().expect("writer"))
    });
    assert_success(&output, "otpctl store copy");
    let report = stdout_json(&output);
    eprintln!(
        "copied {USERS} tokens in {copy_seconds:.1} s (otpctl: {:.1} s); otpd answered \
         {written_meanwhile} logins meanwhile",
        report["seconds"].as_f64().expect("seconds")
    );
    assert_eq!(report["source"]["backend"], "sqlite");
    assert_eq!(report["copy"]["backend"], "postgresql");
    assert_eq!(figures(&report["source"]), figures(&report["copy"]));
    let copy = &report["copy"];
    assert_eq!(copy["enrolments_by_state"], json!({"active": USERS}));
    assert_eq!(copy["last_step_sum"], json!(used_step));
    assert_eq!(copy["key_check_values"], 1);
    assert_eq!(copy["last_enrolment_id"], json!(USERS));
    let audit_rows = copy["audit_rows"].as_u64().expect("audit rows");
    assert!(audit_rows >= 1, "{report}");
    assert!(!stderr(&output).contains(password_file));

    // The counts as PostgreSQL itself gives them.
    assert_eq!(
        pg.psql(
            &db.name,
            &format!(
                "SELECT count(*), min(id), max(id), sum(last_step), count(*) FILTER (WHERE state = 'active') \
                 FROM enrolments; SELECT count(*) FROM audit; \
                 SELECT last_step FROM enrolments WHERE username = '{}'",
                name(used)
            )
        ),
        format!("{USERS}|1|{USERS}|{used_step}|{USERS}\n{audit_rows}\n{used_step}")
    );
    drop(sqlite_otpd);

    // otpd on PostgreSQL, with the same key file.
    let pg_dir = dir.path().join("pg");
    std::fs::create_dir(&pg_dir).expect("dir");
    let pg_socket = pg_dir.join("otpd.sock");
    let listeners = format!(
        "[socket]\npath = \"{}\"\nallowed_uids = [0]\n\n[store]\nbackend = \"postgresql\"\n\
         url = \"{}\"\npassword_file = \"{password_file}\"\nkey_file = \"{}\"\n",
        pg_socket.display(),
        db.tls_url,
        state.join("otpd.key").display()
    );
    let mut pg_otpd = start_otpd_on(&pg_dir, &pg_dir.join("state"), "normal", &listeners);
    wait_for_socket(&mut pg_otpd, &pg_socket);

    // The code used before the copy is a replay there.
    assert_eq!(verify(&pg_socket, &[(name(used), used_code)]), ["reject"]);
    let pg_config = pg_dir.join("otpd.toml");
    let trail = otpctl(&pg_config, &["audit", "--user", &name(used), "--json"]);
    assert_success(&trail, "otpctl audit");
    let trail = stdout_json_lines(&trail);
    let last = trail.last().expect("an entry");
    assert_eq!(last["reason"], "code already used", "{trail:?}");

    // A sample spread over the range, the first and the last, log in.
    wait_for_fresh_step(PERIOD);
    let mut sample: Vec<usize> = (0..200).map(|k| k * (USERS / 200) + k % 97).collect();
    sample.extend([0, USERS - 1]);
    sample.retain(|&i| i != used);
    sample.sort_unstable();
    sample.dedup();
    let logins: Vec<(String, String)> = sample
        .iter()
        .map(|&i| (name(i), oathtool_code(&base32(&secrets[i]), PERIOD)))
        .collect();
    let results = verify(&pg_socket, &logins);
    let refused: Vec<&String> = logins
        .iter()
        .zip(&results)
        .filter(|(_, r)| *r != "accept")
        .map(|((user, _), _)| user)
        .collect();
    assert!(refused.is_empty(), "refused on PostgreSQL: {refused:?}");

    // A second copy into the same database is refused and changes nothing.
    let before = contents(pg, &db.name);
    let again = copy_into(&config, &db, &[]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already holds data"),
        "{}",
        stderr(&again)
    );
    assert_eq!(contents(pg, &db.name), before);
}
