//! The directory password (`otpldap`) against a real OpenLDAP server
//! (`e2e::slapd`): a bind by DN template and search-then-bind (anonymous
//! and as a search account) over ldaps:// and StartTLS, wrong and unknown
//! users, user names that try to change the DN or the filter, a CA that
//! does not match, and a directory that hangs, stops or never answers,
//! which must be an error within `timeout_ms`. No error shows a password.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::slapd::{PrivateSlapd, User, SUFFIX};
use e2e::{free_port, require_root_and_peers};
use otpcore::config::{Config, LdapConfig};
use otpldap::{Directory, LdapError, Step, Verdict};

/// The filter of the search-then-bind configurations.
const FILTER: &str = "(&(objectClass=inetOrgPerson)(uid={user}))";
/// The deadline of the tests that wait for it.
const TIMEOUT_MS: u64 = 600;
/// How much later than the deadline an answer may come on a loaded machine.
const SLACK: Duration = Duration::from_secs(5);

/// `[ldap]` with `lines`, read by `Config::parse` as otpd reads it.
fn ldap_config(lines: &[String]) -> LdapConfig {
    let text = format!(
        "service_id = \"X\"\nissuer = \"I\"\nstate_dir = \"/tmp/x\"\n[ldap]\n{}\n",
        lines.join("\n")
    );
    Config::parse(&text, Path::new("otpd.toml"), false)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .ldap
        .expect("[ldap]")
}

/// `ldaps://` to `slapd`, trusting `ca_file`, binding as `uid={user},ou=people`.
fn by_template(slapd: &PrivateSlapd, ca_file: &Path) -> LdapConfig {
    ldap_config(&[
        format!("url = \"{}\"", slapd.ldaps_url()),
        format!("ca_file = \"{}\"", ca_file.display()),
        format!("bind_dn = \"uid={{user}},ou=people,{SUFFIX}\""),
    ])
}

/// `ldaps://` to `slapd`, searching the whole directory, anonymously or as
/// the reader.
fn by_search(slapd: &PrivateSlapd, as_reader: bool) -> LdapConfig {
    let mut lines = vec![
        format!("url = \"{}\"", slapd.ldaps_url()),
        format!("ca_file = \"{}\"", slapd.ca_file().display()),
        format!("search_base = \"{SUFFIX}\""),
        format!("search_filter = \"{FILTER}\""),
    ];
    if as_reader {
        lines.push(format!("search_bind_dn = \"{}\"", slapd.reader_dn()));
        lines.push(format!(
            "search_password_file = \"{}\"",
            slapd.reader_password_file().display()
        ));
    }
    ldap_config(&lines)
}

/// Checks `password` for `user` on a runtime of its own; the answer and
/// how long the check took.
fn timed(
    directory: &Directory,
    user: &str,
    password: &str,
) -> (Result<Verdict, LdapError>, Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let verdict = runtime.block_on(directory.check_password(user, password.as_bytes()));
    (verdict, started.elapsed())
}

/// Opens `config` and checks `password` for `user`: [`timed`].
fn timed_check(
    config: &LdapConfig,
    user: &str,
    password: &str,
) -> (Result<Verdict, LdapError>, Duration) {
    timed(
        &Directory::open(config).expect("the directory opens"),
        user,
        password,
    )
}

fn check(config: &LdapConfig, user: &str, password: &str) -> Result<Verdict, LdapError> {
    timed_check(config, user, password).0
}

/// Panics unless `result` is an error that shows none of `slapd`'s
/// passwords, in its message or its Debug form; returns it.
fn error_without_passwords(slapd: &PrivateSlapd, result: Result<Verdict, LdapError>) -> LdapError {
    let error = match result {
        Err(e) => e,
        Ok(verdict) => panic!("an error expected, got {verdict:?}"),
    };
    let shown = format!("{error} {error:?}");
    for password in slapd.all_passwords() {
        assert!(!shown.contains(password), "a password in {shown}");
    }
    error
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_bind_by_dn_template_takes_only_the_right_password() {
    require_root_and_peers();
    let slapd = PrivateSlapd::shared();
    let config = by_template(slapd, &slapd.ca_file());
    let alice = slapd.password(User::Alice);
    assert_eq!(check(&config, "alice", alice).unwrap(), Verdict::Right);
    assert_eq!(
        check(&config, "alice", slapd.password(User::Bob)).unwrap(),
        Verdict::Wrong
    );
    assert_eq!(
        check(&config, "alice", &format!("{alice}x")).unwrap(),
        Verdict::Wrong
    );
    assert_eq!(check(&config, "nobody", alice).unwrap(), Verdict::Wrong);
    assert_eq!(
        check(&config, "carol", slapd.password(User::Carol)).unwrap(),
        Verdict::Wrong,
        "carol is not in ou=people"
    );
    // A name made of every character that DNs escape binds as its entry.
    let special = User::Special;
    assert_eq!(
        check(&config, special.uid(), slapd.password(special)).unwrap(),
        Verdict::Right
    );
    assert_eq!(
        check(&config, special.uid(), alice).unwrap(),
        Verdict::Wrong
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn search_then_bind_needs_exactly_one_entry() {
    require_root_and_peers();
    let slapd = PrivateSlapd::shared();
    let anonymous = by_search(slapd, false);
    let reader = by_search(slapd, true);
    for config in [&anonymous, &reader] {
        for user in [User::Alice, User::Bob, User::Special] {
            assert_eq!(
                check(config, user.uid(), slapd.password(user)).unwrap(),
                Verdict::Right,
                "{user:?}"
            );
        }
        assert_eq!(
            check(config, "alice", slapd.password(User::Bob)).unwrap(),
            Verdict::Wrong
        );
        assert_eq!(
            check(config, "nobody", slapd.password(User::Alice)).unwrap(),
            Verdict::Wrong
        );
        // Two entries: no bind as either of them.
        assert_eq!(
            check(config, "twin", slapd.password(User::Twin)).unwrap(),
            Verdict::Wrong
        );
    }
    // ou=staff is visible to the reader only.
    let carol = slapd.password(User::Carol);
    assert_eq!(check(&anonymous, "carol", carol).unwrap(), Verdict::Wrong);
    assert_eq!(check(&reader, "carol", carol).unwrap(), Verdict::Right);
    assert!(slapd
        .log()
        .contains(&format!("BIND dn=\"{}\"", slapd.reader_dn())));
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_refused_search_account_is_an_error_not_a_wrong_password() {
    require_root_and_peers();
    let slapd = PrivateSlapd::shared();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("reader.password");
    e2e::write_private_file(&wrong, &format!("{}\n", slapd.password(User::Bob)));
    let config = ldap_config(&[
        format!("url = \"{}\"", slapd.ldaps_url()),
        format!("ca_file = \"{}\"", slapd.ca_file().display()),
        format!("search_base = \"{SUFFIX}\""),
        format!("search_filter = \"{FILTER}\""),
        format!("search_bind_dn = \"{}\"", slapd.reader_dn()),
        format!("search_password_file = \"{}\"", wrong.display()),
    ]);
    let error =
        error_without_passwords(slapd, check(&config, "alice", slapd.password(User::Alice)));
    assert!(
        matches!(&error, LdapError::SearchAccountRefused { answer, .. } if answer.code == 49),
        "{error}"
    );
    assert!(error.to_string().contains("search_bind_dn"), "{error}");
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn an_empty_password_never_reaches_the_directory() {
    require_root_and_peers();
    let slapd = PrivateSlapd::shared();
    // slapd would take an empty password as an anonymous bind.
    for config in [
        by_template(slapd, &slapd.ca_file()),
        by_search(slapd, false),
    ] {
        for password in ["", "\0", "a\0b"] {
            assert_eq!(check(&config, "alice", password).unwrap(), Verdict::Wrong);
        }
    }
    let listener = TcpListener::bind(("127.0.0.1", free_port())).unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = ldap_config(&[
        format!("url = \"ldap://127.0.0.1:{port}\""),
        format!("bind_dn = \"uid={{user}},ou=people,{SUFFIX}\""),
    ]);
    assert_eq!(check(&config, "alice", "").unwrap(), Verdict::Wrong);
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the empty password was sent: {accepted:?}"
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn user_names_cannot_change_the_dn_or_the_filter() {
    require_root_and_peers();
    let slapd = PrivateSlapd::shared();
    let configs = [
        by_template(slapd, &slapd.ca_file()),
        by_search(slapd, false),
        by_search(slapd, true),
    ];
    let injections = [
        "*",
        "alic*",
        "a*e",
        "admin)(uid=*",
        "alice)(uid=*",
        "*)(uid=alice",
        "alice)(|(uid=*",
        "a,ou=x",
        "alice,ou=people",
        &format!("alice,ou=people,{SUFFIX}"),
        "alice+cn=people user",
        "alice\0",
        "alice\\",
        "\\61lice",
        "#alice",
    ];
    for config in &configs {
        for user in injections {
            for password in [slapd.password(User::Alice), slapd.password(User::Twin)] {
                assert_eq!(
                    check(config, user, password).unwrap(),
                    Verdict::Wrong,
                    "{user:?} with {config:?}"
                );
            }
        }
    }
    // The escaped values reached the server as values.
    assert!(
        slapd
            .log()
            .contains("filter=\"(&(objectClass=inetOrgPerson)(uid=alic\\2A))\""),
        "no escaped filter in the server's log"
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn tls_checks_the_ca_over_ldaps_and_starttls() {
    require_root_and_peers();
    let slapd = PrivateSlapd::shared();
    let alice = slapd.password(User::Alice);
    let starttls = |ca_file: &Path| {
        ldap_config(&[
            format!("url = \"{}\"", slapd.ldap_url()),
            "starttls = true".to_owned(),
            format!("ca_file = \"{}\"", ca_file.display()),
            format!("bind_dn = \"uid={{user}},ou=people,{SUFFIX}\""),
        ])
    };
    let upgraded = starttls(&slapd.ca_file());
    assert_eq!(check(&upgraded, "alice", alice).unwrap(), Verdict::Right);
    assert_eq!(
        check(&upgraded, "alice", slapd.password(User::Bob)).unwrap(),
        Verdict::Wrong
    );
    assert!(slapd.log().contains("EXT oid=1.3.6.1.4.1.1466.20037"));

    for config in [
        by_template(slapd, &slapd.other_ca_file()),
        starttls(&slapd.other_ca_file()),
    ] {
        let (result, took) = timed_check(&config, "alice", alice);
        let error = error_without_passwords(slapd, result);
        assert!(matches!(error, LdapError::Tls { .. }), "{error}");
        assert!(error.to_string().contains("UnknownIssuer"), "{error}");
        assert!(took < SLACK, "a TLS failure took {took:?}");
    }

    // In clear on loopback, as the configuration allows.
    let plain = ldap_config(&[
        format!("url = \"{}\"", slapd.ldap_url()),
        format!("bind_dn = \"uid={{user}},ou=people,{SUFFIX}\""),
    ]);
    assert_eq!(check(&plain, "alice", alice).unwrap(), Verdict::Right);
    // ldaps:// to the port that speaks LDAP in clear.
    let confused = ldap_config(&[
        format!(
            "url = \"{}\"",
            slapd.ldap_url().replace("ldap://", "ldaps://")
        ),
        format!("ca_file = \"{}\"", slapd.ca_file().display()),
        format!("bind_dn = \"uid={{user}},ou=people,{SUFFIX}\""),
    ]);
    let error = error_without_passwords(slapd, check(&confused, "alice", alice));
    assert!(
        matches!(error, LdapError::Tls { .. } | LdapError::Timeout { .. }),
        "{error}"
    );
}

/// Asserts that `result` is a timeout at `step`, which came after the
/// deadline and not much later.
fn assert_timeout(result: Result<Verdict, LdapError>, took: Duration, step: Step) {
    match result {
        Err(LdapError::Timeout {
            step: at,
            timeout_ms,
            ..
        }) => {
            assert_eq!(at, step);
            assert_eq!(timeout_ms, TIMEOUT_MS);
        }
        other => panic!("a timeout expected, got {other:?}"),
    }
    let deadline = Duration::from_millis(TIMEOUT_MS);
    assert!(
        took >= deadline && took < deadline + SLACK,
        "the timeout came after {took:?}"
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_directory_that_hangs_or_stops_is_an_error_within_the_timeout() {
    require_root_and_peers();
    let slapd = PrivateSlapd::start();
    let alice = slapd.password(User::Alice).to_owned();
    let timeout = format!("timeout_ms = {TIMEOUT_MS}");
    let ldaps = by_template(&slapd, &slapd.ca_file());
    let ldaps = LdapConfig {
        timeout_ms: TIMEOUT_MS,
        ..ldaps
    };
    let starttls = ldap_config(&[
        format!("url = \"{}\"", slapd.ldap_url()),
        "starttls = true".to_owned(),
        format!("ca_file = \"{}\"", slapd.ca_file().display()),
        format!("search_base = \"{SUFFIX}\""),
        format!("search_filter = \"{FILTER}\""),
        timeout.clone(),
    ]);
    assert_eq!(check(&ldaps, "alice", &alice).unwrap(), Verdict::Right);
    assert_eq!(check(&starttls, "alice", &alice).unwrap(), Verdict::Right);

    slapd.freeze();
    let (result, took) = timed_check(&ldaps, "alice", &alice);
    assert_timeout(result, took, Step::Tls);
    let (result, took) = timed_check(&starttls, "alice", &alice);
    assert_timeout(result, took, Step::Tls);

    // Opened while the CA file is there: dropping the server removes it.
    let directories = [&ldaps, &starttls].map(|c| Directory::open(c).expect("opens"));
    drop(slapd);
    for directory in &directories {
        let (result, took) = timed(directory, "alice", &alice);
        match result {
            Err(LdapError::Unreachable { reason, .. }) => {
                assert!(reason.contains("refused"), "{reason}")
            }
            other => panic!("unreachable expected, got {other:?}"),
        }
        assert!(took < Duration::from_millis(TIMEOUT_MS) + SLACK, "{took:?}");
    }
}

/// A TCP server on loopback that takes connections and never says a word;
/// for each connection, how many bytes it received once the client closed
/// it.
fn silent_server() -> (u16, mpsc::Receiver<usize>) {
    let listener = TcpListener::bind(("127.0.0.1", free_port())).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (closed, closings) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let closed = closed.clone();
            std::thread::spawn(move || {
                let mut received = Vec::new();
                if stream.read_to_end(&mut received).is_ok() {
                    let _ = closed.send(received.len());
                }
            });
        }
    });
    (port, closings)
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_server_that_never_answers_is_a_timeout_and_the_connection_closes() {
    require_root_and_peers();
    let (port, closings) = silent_server();
    let url = |scheme: &str| format!("url = \"{scheme}://127.0.0.1:{port}\"");
    let slapd = PrivateSlapd::shared();
    let ca = format!("ca_file = \"{}\"", slapd.ca_file().display());
    let timeout = format!("timeout_ms = {TIMEOUT_MS}");
    let template = format!("bind_dn = \"uid={{user}},ou=people,{SUFFIX}\"");
    let cases = [
        (
            vec![url("ldaps"), ca.clone(), template.clone(), timeout.clone()],
            Step::Tls,
        ),
        (
            vec![
                url("ldap"),
                "starttls = true".to_owned(),
                ca,
                template.clone(),
                timeout.clone(),
            ],
            Step::Tls,
        ),
        (vec![url("ldap"), template, timeout.clone()], Step::UserBind),
        (
            vec![
                url("ldap"),
                format!("search_base = \"{SUFFIX}\""),
                format!("search_filter = \"{FILTER}\""),
                timeout,
            ],
            Step::Searching,
        ),
    ];
    for (lines, step) in cases {
        let config = ldap_config(&lines);
        let (result, took) = timed_check(&config, "alice", slapd.password(User::Alice));
        assert_timeout(result, took, step);
        let received = closings
            .recv_timeout(SLACK)
            .unwrap_or_else(|_| panic!("the connection of {lines:?} was left open"));
        assert!(received > 0, "nothing was sent before {step}");
    }
}
