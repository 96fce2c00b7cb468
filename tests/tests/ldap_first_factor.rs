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

/// How many connections `slapd` accepted so far, from its log.
fn accepted(slapd: &PrivateSlapd) -> usize {
    slapd
        .log()
        .lines()
        .filter(|line| line.contains(" ACCEPT from "))
        .count()
}

/// For every search in `slapd`'s log, the DN its connection was bound as
/// when it searched (`""` for anonymous, which is also a connection that
/// never bound).
fn search_identities(slapd: &PrivateSlapd) -> Vec<String> {
    let mut bound: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut identities = Vec::new();
    for line in slapd.log().lines() {
        let Some(at) = line.find("conn=") else {
            continue;
        };
        let mut words = line[at..].split(' ');
        let conn = words.next().unwrap_or_default().to_owned();
        let rest: Vec<&str> = words.collect();
        let rest = rest.join(" ");
        if let Some(dn) = rest
            .split_once("BIND dn=\"")
            .and_then(|(_, tail)| tail.split_once('"'))
        {
            bound.insert(conn, dn.0.to_owned());
        } else if rest.contains("SRCH base=") {
            identities.push(bound.get(&conn).cloned().unwrap_or_default());
        }
    }
    identities
}

/// Many checks on one directory: the right verdicts, over fewer
/// connections than checks, and no search on a connection still bound as
/// the previous user.
#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn sequential_checks_reuse_connections_and_search_as_the_configured_identity() {
    require_root_and_peers();
    let slapd = PrivateSlapd::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let alice = slapd.password(User::Alice);
    let carol = slapd.password(User::Carol);
    const CHECKS: usize = 12;
    let mut configs = vec![(by_template(&slapd, &slapd.ca_file()), "people")];
    configs.push((by_search(&slapd, true), "reader"));
    configs.push((by_search(&slapd, false), "anonymous"));
    for (config, name) in configs {
        let directory = Directory::open(&config).expect("the directory opens");
        let before = accepted(&slapd);
        for round in 0..CHECKS / 3 {
            let verdicts = runtime.block_on(async {
                [
                    directory.check_password("alice", alice.as_bytes()).await,
                    directory.check_password("alice", carol.as_bytes()).await,
                    directory.check_password("carol", carol.as_bytes()).await,
                ]
            });
            let [right, wrong, staff] = verdicts.map(Result::unwrap);
            assert_eq!(right, Verdict::Right, "{name}, round {round}");
            assert_eq!(wrong, Verdict::Wrong, "{name}, round {round}");
            // ou=staff is visible to the reader only, never to alice.
            let carol_seen = if name == "reader" {
                Verdict::Right
            } else {
                Verdict::Wrong
            };
            assert_eq!(staff, carol_seen, "{name}, round {round}");
        }
        // slapd writes its log as it goes; give it a moment.
        std::thread::sleep(Duration::from_millis(200));
        let connections = accepted(&slapd) - before;
        assert!(
            (1..CHECKS / 2).contains(&connections),
            "{name}: {connections} connections for {CHECKS} checks"
        );
    }
    let identities = search_identities(&slapd);
    let reader = slapd.reader_dn();
    // Two of the configurations search once a check.
    assert_eq!(identities.len(), 2 * CHECKS, "{identities:?}");
    assert!(
        identities.iter().all(|dn| dn.is_empty() || *dn == reader),
        "a search ran as a user: {identities:?}"
    );
    assert!(identities.contains(&reader), "{identities:?}");
}

/// A slapd started again with the command line of `slapd`'s server, after
/// that one was stopped; killed when dropped.
struct Restarted(std::process::Child);

impl Restarted {
    /// Stops `slapd`'s server (SIGTERM: it closes every connection) and
    /// starts it again on the same ports, configuration and database.
    fn restart(slapd: &PrivateSlapd) -> Restarted {
        let port = slapd.ldaps_url().rsplit(':').next().unwrap().to_owned();
        let listener = format!("127.0.0.1:{port}/");
        let (pid, args) = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| {
                let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
                let line = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let args: Vec<String> = line
                    .split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                (args.first()? == "slapd" && args.iter().any(|a| a.contains(&listener)))
                    .then_some((pid, args))
            })
            .next()
            .expect("slapd's process");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}");
        // Stopped once its listener is gone (it stays a zombie of its
        // supervisor until that ends).
        let deadline = Instant::now() + SLACK;
        while std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_ok()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| !stat.contains(") Z "))
        {
            assert!(Instant::now() < deadline, "slapd {pid} does not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let child = std::process::Command::new(&args[0])
            .args(&args[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start slapd again");
        let restarted = Restarted(child);
        while std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err() {
            assert!(
                Instant::now() < deadline + SLACK,
                "slapd does not start again"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        restarted
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A connection the server closed while it was idle does not fail the
/// next check: it runs on a new connection.
#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_restarted_directory_still_gives_the_right_verdict() {
    require_root_and_peers();
    let slapd = PrivateSlapd::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let alice = slapd.password(User::Alice);
    let bob = slapd.password(User::Bob);
    let mut servers = Vec::new();
    for config in [
        by_template(&slapd, &slapd.ca_file()),
        by_search(&slapd, true),
    ] {
        let directory = Directory::open(&config).expect("the directory opens");
        let check = |user: &str, password: &str| {
            runtime
                .block_on(directory.check_password(user, password.as_bytes()))
                .unwrap()
        };
        assert_eq!(check("alice", alice), Verdict::Right);
        // The servers stopped by a restart are reaped when their handles go.
        servers.push(Restarted::restart(&slapd));
        assert_eq!(check("bob", bob), Verdict::Right);
        assert_eq!(check("bob", alice), Verdict::Wrong);
        servers.push(Restarted::restart(&slapd));
        assert_eq!(check("bob", alice), Verdict::Wrong);
        assert_eq!(check("alice", alice), Verdict::Right);
    }
    drop(servers);
}
