//! RADIUS for VPN gateways end to end: otpd with `[radius] first_factor =
//! "ldap"` against a private OpenLDAP server (`e2e::slapd`), driven by
//! `radclient` and by raw UDP from loopback addresses. The directory
//! password and the code in one field; the two steps of an
//! Access-Challenge and its State; the renegotiation window; a directory
//! that stops answering.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e::slapd::{PrivateSlapd, User, SUFFIX};
use e2e::{
    free_port, oathtool_code, oathtool_code_at, radius_audit, require_root_and_peers, stdout,
    wait_for_fresh_step, wrong_code, EnvOptions, TestEnv,
};
use otpcore::radius::{self, attr, code, Packet};
use otpproto::clock::unix_now;

const SECRET: &str = "e2e-vpn-secret";
/// `[ldap] timeout_ms` of these daemons.
const LDAP_TIMEOUT_MS: u64 = 1500;
/// How much later than a deadline something may happen on a loaded machine.
const SLACK: Duration = Duration::from_secs(5);
/// The second client's address: raw UDP is sent from it.
const OTHER_CLIENT: &str = "127.0.0.2";

/// A daemon whose RADIUS clients `nas1` (127.0.0.1) and `nas2`
/// ([`OTHER_CLIENT`]) log in with the directory password of `slapd` first;
/// `radius_extra` goes into `[radius]`. The lock is far enough away for
/// the refusals each test provokes.
fn vpn_env(slapd: &PrivateSlapd, radius_extra: &str) -> (TestEnv, u16) {
    let port = free_port();
    let extra_toml = format!(
        r#"
[policy]
max_failures = 50

[radius]
listen = "127.0.0.1:{port}"
first_factor = "ldap"
{radius_extra}

[[radius.client]]
name = "nas1"
address = "127.0.0.1"
secret = "{SECRET}"

[[radius.client]]
name = "nas2"
address = "{OTHER_CLIENT}"
secret = "{SECRET}"

[ldap]
url = "{url}"
ca_file = "{ca}"
bind_dn = "uid={{user}},ou=people,{SUFFIX}"
timeout_ms = {LDAP_TIMEOUT_MS}
"#,
        url = slapd.ldaps_url(),
        ca = slapd.ca_file().display(),
    );
    let env = TestEnv::start_with(EnvOptions {
        extra_toml,
        ..EnvOptions::default()
    });
    (env, port)
}

/// `radclient -x 127.0.0.1:PORT auth SECRET` with `attributes` on stdin.
fn radclient(port: u16, attributes: &str) -> Output {
    e2e::run_with_input(
        Command::new("radclient")
            .args(["-x", "-r", "1", "-t", "3"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("auth")
            .arg(SECRET),
        attributes,
    )
}

fn pap(user: &str, password: &str) -> String {
    format!(
        "User-Name = \"{user}\"\nUser-Password = \"{password}\"\nMessage-Authenticator = 0x00\n"
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The answer radclient received: `Access-Accept`, `Access-Reject`,
/// `Access-Challenge`, or `none`.
fn received(output: &Output) -> &'static str {
    let text = stdout(output);
    ["Access-Accept", "Access-Reject", "Access-Challenge"]
        .into_iter()
        .find(|kind| text.contains(&format!("Received {kind}")))
        .unwrap_or("none")
}

/// The State of the Access-Challenge that radclient printed.
fn state_of(output: &Output) -> Vec<u8> {
    let text = stdout(output);
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("State = 0x"))
        .unwrap_or_else(|| panic!("no State in {text}"));
    (0..value.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&value[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Sends an Access-Request from `from` (a loopback address) with
/// User-Name `user`, User-Password `password` (a value longer than a PAP
/// password may be goes as it is, unencrypted), and a State when given;
/// the answer's code, or `None` after 5 s.
fn udp_request(
    from: &str,
    port: u16,
    user: &[u8],
    password: &[u8],
    state: Option<&[u8]>,
) -> Option<u8> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_le_bytes();
    let authenticator: [u8; 16] = std::array::from_fn(|i| seed[i] ^ (i as u8).wrapping_mul(37));
    let cipher = if password.len() <= radius::MAX_PASSWORD {
        radius::encrypt_password(password, SECRET.as_bytes(), &authenticator).expect("encrypt")
    } else {
        password.to_vec()
    };
    let mut attributes: Vec<(u8, &[u8])> =
        vec![(attr::USER_NAME, user), (attr::USER_PASSWORD, &cipher)];
    if let Some(state) = state {
        attributes.push((attr::STATE, state));
    }
    let request = radius::encode_request(
        code::ACCESS_REQUEST,
        7,
        &authenticator,
        &attributes,
        SECRET.as_bytes(),
        true,
    )
    .expect("encode");
    let socket = UdpSocket::bind((from, 0)).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    socket.send_to(&request, ("127.0.0.1", port)).expect("send");
    let mut buffer = [0u8; 4096];
    let (len, _) = socket.recv_from(&mut buffer).ok()?;
    let answer = Packet::decode(&buffer[..len]).expect("answer decodes");
    assert!(answer.is_response_to(&authenticator, SECRET.as_bytes()));
    Some(answer.code)
}

/// The results and reasons of the audit trail's RADIUS entries for `user`
/// (as the trail escapes it), oldest first.
fn reasons(env: &TestEnv, user: &str) -> Vec<(String, String)> {
    let user = otpproto::logtext::escape(user, otpproto::logtext::MAX_CHARS);
    radius_audit(env)
        .into_iter()
        .filter(|e| e["user"] == user.as_str())
        .map(|e| {
            (
                e["result"].as_str().unwrap_or_default().to_owned(),
                e["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn password_and_code_in_one_field() {
    require_root_and_peers();
    let slapd = PrivateSlapd::shared();
    let (env, port) = vpn_env(slapd, "");
    let secret = env.enrol_active("alice");
    let password = slapd.password(User::Alice);
    wait_for_fresh_step(60);
    let code = oathtool_code(&secret, 60);

    // The right code after a wrong password: refused, and not spent.
    let wrong_password = radclient(port, &pap("alice", &format!("not-{password}{code}")));
    assert_eq!(received(&wrong_password), "Access-Reject");
    let wrong = radclient(
        port,
        &pap("alice", &format!("{password}{}", wrong_code(&secret))),
    );
    assert_eq!(received(&wrong), "Access-Reject");
    assert_eq!(
        stdout(&wrong_password).contains("Authentication failed"),
        stdout(&wrong).contains("Authentication failed"),
        "the two refusals must look alike"
    );
    let right = radclient(port, &pap("alice", &format!("{password}{code}")));
    assert_eq!(received(&right), "Access-Accept", "{}", env.otpd_log());
    let again = radclient(port, &pap("alice", &format!("{password}{code}")));
    assert_eq!(received(&again), "Access-Reject", "a replay");

    // The code alone, an empty password, less than a code: refused.
    let next = oathtool_code_at(&secret, 60, unix_now() + 60);
    for field in [next.clone(), next[1..].to_owned()] {
        let output = radclient(port, &pap("alice", &field));
        assert_eq!(received(&output), "Access-Reject", "{field:?}");
    }
    assert_eq!(
        udp_request("127.0.0.1", port, b"alice", b"", None),
        Some(code::ACCESS_REJECT),
        "an empty password"
    );
    // User names that would change the DN or a filter bind as nobody.
    for user in ["*", "alice)(uid=*", "alice,ou=people", "alice\\", "ali*"] {
        let field = format!("{password}{next}");
        assert_eq!(
            udp_request("127.0.0.1", port, user.as_bytes(), field.as_bytes(), None),
            Some(code::ACCESS_REJECT),
            "{user}"
        );
        assert_eq!(
            reasons(&env, user).last().map(|(_, r)| r.as_str()),
            Some("wrong first factor"),
            "{user}: {:?}",
            reasons(&env, user)
        );
    }
    // An oversized User-Password: refused, and otpd carries on.
    let oversized = vec![b'x'; 240];
    assert_eq!(
        udp_request("127.0.0.1", port, b"alice", &oversized, None),
        Some(code::ACCESS_REJECT)
    );

    // Every failure counted and audited; no password or code in the trail.
    let alice = reasons(&env, "alice");
    let failures = alice.iter().filter(|(result, _)| result == "fail").count();
    assert_eq!(failures, 7, "{alice:?}");
    assert!(alice
        .iter()
        .any(|(result, reason)| result == "fail" && reason == "wrong first factor"));
    let trail = format!("{:?}{}", radius_audit(&env), env.otpd_log());
    assert!(!trail.contains(password), "a password in {trail}");
    assert!(!trail.contains(&code), "a code in the trail");

    // Still serving: the next code with the password.
    let output = radclient(port, &pap("alice", &format!("{password}{next}")));
    assert_eq!(received(&output), "Access-Accept", "{}", env.otpd_log());
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_directory_that_stops_answering_gets_no_accept_and_otpd_carries_on() {
    require_root_and_peers();
    let slapd = PrivateSlapd::start();
    let (env, port) = vpn_env(&slapd, "");
    let secret = env.enrol_active("alice");
    let password = slapd.password(User::Alice).to_owned();
    slapd.freeze();
    wait_for_fresh_step(60);
    let code = oathtool_code(&secret, 60);
    let started = Instant::now();
    let answer = udp_request(
        "127.0.0.1",
        port,
        b"alice",
        format!("{password}{code}").as_bytes(),
        None,
    );
    assert_eq!(answer, None, "no answer while the directory hangs");
    let deadline = Duration::from_millis(LDAP_TIMEOUT_MS) + SLACK;
    let logged = loop {
        if env.otpd_log().contains("cannot check a directory password") {
            break started.elapsed();
        }
        assert!(started.elapsed() < deadline * 2, "{}", env.otpd_log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(logged < deadline, "gave up after {logged:?}");
    // Alive: Status-Server is answered.
    let status = e2e::run_with_input(
        Command::new("radclient")
            .args(["-x", "-r", "1", "-t", "3"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("status")
            .arg(SECRET),
        "Message-Authenticator = 0x00\n",
    );
    assert!(
        stdout(&status).contains("Received Access-Accept"),
        "{}",
        stdout(&status)
    );
    assert!(radius_audit(&env).iter().all(|e| e["result"] != "ok"));
    let log = env.otpd_log();
    assert!(!log.contains(&password) && !log.contains(&code));
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_challenge_asks_for_the_code_and_its_state_answers_once() {
    require_root_and_peers();
    let slapd = PrivateSlapd::shared();
    let (env, port) = vpn_env(slapd, "challenge = true");
    let alice = env.enrol_active("alice");
    let bob = env.enrol_active("bob");
    let password = slapd.password(User::Alice);
    let challenge = || {
        let output = radclient(port, &pap("alice", password));
        assert_eq!(received(&output), "Access-Challenge", "{}", env.otpd_log());
        assert!(
            stdout(&output).contains("Reply-Message = \"One-time password:\""),
            "{}",
            stdout(&output)
        );
        state_of(&output)
    };
    let answer = |user: &str, code: &str, state: &[u8]| {
        let attributes = format!("{}State = 0x{}\n", pap(user, code), hex(state));
        received(&radclient(port, &attributes))
    };
    wait_for_fresh_step(60);
    let code = oathtool_code(&alice, 60);
    let next = oathtool_code_at(&alice, 60, unix_now() + 60);

    let state = challenge();
    assert!(state.len() >= 16, "{state:?}");
    assert_ne!(challenge(), state, "a fresh State each time");
    assert_eq!(answer("alice", &code, &state), "Access-Accept");
    // Used once.
    assert_eq!(answer("alice", &next, &state), "Access-Reject");
    // A wrong password gets no challenge.
    let wrong = radclient(port, &pap("alice", "not-the-password"));
    assert_eq!(received(&wrong), "Access-Reject");
    // A forged State, a malformed one.
    let mut forged = challenge();
    forged[0] ^= 0x80;
    assert_eq!(answer("alice", &next, &forged), "Access-Reject");
    assert_eq!(answer("alice", &next, b"\x01\x02\x03"), "Access-Reject");
    // Another user's State.
    let bobs = oathtool_code(&bob, 60);
    assert_eq!(answer("bob", &bobs, &challenge()), "Access-Reject");
    // Another client's State.
    let state = challenge();
    assert_eq!(
        udp_request(OTHER_CLIENT, port, b"alice", next.as_bytes(), Some(&state)),
        Some(code::ACCESS_REJECT)
    );
    // An expired State: its row aged past the 120 seconds.
    let state = challenge();
    env.sqlite("UPDATE radius_challenges SET expires_at = expires_at - 121");
    assert_eq!(answer("alice", &next, &state), "Access-Reject");
    // The code none of these spent still works with a State of its own.
    assert_eq!(answer("alice", &next, &challenge()), "Access-Accept");
    assert_eq!(
        answer("bob", &bobs, &challenge_for(port, slapd)),
        "Access-Accept"
    );
}

/// The State of a challenge for bob.
fn challenge_for(port: u16, slapd: &PrivateSlapd) -> Vec<u8> {
    let output = radclient(port, &pap("bob", slapd.password(User::Bob)));
    assert_eq!(received(&output), "Access-Challenge");
    state_of(&output)
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn the_same_code_from_the_same_client_is_reaccepted_within_reauth_seconds() {
    require_root_and_peers();
    let slapd = PrivateSlapd::shared();
    let (env, port) = vpn_env(slapd, "reauth_seconds = 600");
    let secret = env.enrol_active("alice");
    let password = slapd.password(User::Alice);
    wait_for_fresh_step(60);
    let code = oathtool_code(&secret, 60);
    let field = format!("{password}{code}");
    assert_eq!(
        received(&radclient(port, &pap("alice", &field))),
        "Access-Accept"
    );
    assert_eq!(
        received(&radclient(port, &pap("alice", &field))),
        "Access-Accept"
    );
    // Through another client: a replay.
    assert_eq!(
        udp_request(OTHER_CLIENT, port, b"alice", field.as_bytes(), None),
        Some(code::ACCESS_REJECT)
    );
    // Another code of the same step's neighbour is no reauth either.
    let other = format!("{password}{}", wrong_code(&secret));
    assert_eq!(
        received(&radclient(port, &pap("alice", &other))),
        "Access-Reject"
    );
    assert_eq!(
        received(&radclient(port, &pap("alice", &field))),
        "Access-Accept"
    );
    // After the window (its start aged by 601 seconds): a replay.
    env.sqlite("UPDATE enrolments SET reauth_at = reauth_at - 601 WHERE user = 'alice'");
    assert_eq!(
        received(&radclient(port, &pap("alice", &field))),
        "Access-Reject"
    );
    let results: Vec<String> = reasons(&env, "alice").into_iter().map(|(r, _)| r).collect();
    assert_eq!(
        results,
        ["ok", "reauth", "fail", "fail", "reauth", "fail"],
        "{:?}",
        reasons(&env, "alice")
    );
}

/// An `/etc/pam.d` service whose only auth module is Debian's
/// pam_radius_auth with the server file `conf`; removed on drop.
struct RadiusPamService {
    name: String,
    path: std::path::PathBuf,
}

impl RadiusPamService {
    fn new(conf: &std::path::Path) -> RadiusPamService {
        let name = format!("otpd-e2e-vpn-{}", std::process::id());
        let path = std::path::Path::new("/etc/pam.d").join(&name);
        std::fs::write(
            &path,
            format!(
                "auth required pam_radius_auth.so conf={}\naccount required pam_permit.so\n",
                conf.display()
            ),
        )
        .expect("write the /etc/pam.d service file");
        RadiusPamService { name, path }
    }
}

impl Drop for RadiusPamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn pam_radius_auth_prompts_for_the_code_of_the_challenge() {
    require_root_and_peers();
    let module = std::path::Path::new("/lib/x86_64-linux-gnu/security/pam_radius_auth.so");
    assert!(module.exists(), "libpam-radius-auth is not installed");
    let slapd = PrivateSlapd::shared();
    // pam_radius_auth 2.0 sends no Message-Authenticator.
    let (env, port) = vpn_env(
        slapd,
        "challenge = true\nrequire_message_authenticator = false",
    );
    let secret = env.enrol_active("alice");
    let conf = env.root().join("pam_radius_auth.conf");
    e2e::write_private_file(&conf, &format!("127.0.0.1:{port} {SECRET} 5\n"));
    let service = RadiusPamService::new(&conf);
    let password = slapd.password(User::Alice);
    wait_for_fresh_step(60);
    let code = oathtool_code(&secret, 60);
    let output = e2e::run_with_input(
        Command::new("pamtester").args(["-v", &service.name, "alice", "authenticate"]),
        &format!("{password}\n{code}\n"),
    );
    let shown = format!("{}{}", stdout(&output), e2e::stderr(&output));
    assert!(
        output.status.success() && shown.contains("successfully authenticated"),
        "{shown}\n{}",
        env.otpd_log()
    );
    assert!(shown.contains("One-time password:"), "{shown}");
    let results: Vec<String> = reasons(&env, "alice").into_iter().map(|(r, _)| r).collect();
    assert_eq!(results, ["ok"], "{:?}", reasons(&env, "alice"));
    // A wrong code after the right password: refused.
    let wrong = format!("{password}\n{}\n", wrong_code(&secret));
    let output = e2e::run_with_input(
        Command::new("pamtester").args([service.name.as_str(), "alice", "authenticate"]),
        &wrong,
    );
    assert!(!output.status.success(), "{}", stdout(&output));
    let results: Vec<String> = reasons(&env, "alice").into_iter().map(|(r, _)| r).collect();
    assert_eq!(results, ["ok", "fail"], "{:?}", reasons(&env, "alice"));
}
