//! RADIUS end to end: FreeRADIUS's `radclient` as the NAS
//! against the built `otpd`, and raw UDP for what radclient cannot send
//! (requests without a Message-Authenticator, wrong secrets, unknown
//! clients, retransmissions, malformed packets); accounting (RFC 2866) on
//! `accounting_listen` with `radclient acct`. Only loopback addresses are
//! ever sent to.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::process::{Command, Output};
use std::time::Duration;

use e2e::{
    describe, free_port, oathtool_code, require_root_and_peers, stdout, wrong_code, EnvOptions,
    TestEnv,
};
use otpcore::radius::{self, attr, code, Packet};
use serde_json::Value;

const SECRET: &str = "e2e-radius-secret";

/// A daemon with `[radius]` on a free loopback port and one client.
fn radius_env(client_address: &str, client_extra: &str) -> (TestEnv, u16) {
    radius_env_with(client_address, client_extra, "")
}

/// The same, with `radius_extra` added to `[radius]`.
fn radius_env_with(client_address: &str, client_extra: &str, radius_extra: &str) -> (TestEnv, u16) {
    let port = free_port();
    let extra_toml = format!(
        r#"
[radius]
listen = "127.0.0.1:{port}"
require_message_authenticator = true
{radius_extra}

[[radius.client]]
name = "nas1"
address = "{client_address}"
secret = "{SECRET}"
{client_extra}
"#
    );
    let env = TestEnv::start_with(EnvOptions {
        extra_toml,
        ..EnvOptions::default()
    });
    (env, port)
}

/// `radclient -x 127.0.0.1:PORT KIND SECRET` with `attributes` on stdin.
fn radclient(port: u16, kind: &str, attributes: &str) -> Output {
    radclient_with_secret(port, kind, SECRET, attributes)
}

fn radclient_with_secret(port: u16, kind: &str, secret: &str, attributes: &str) -> Output {
    e2e::run_with_input(
        Command::new("radclient")
            .args(["-x", "-r", "1", "-t", "3"])
            .arg(format!("127.0.0.1:{port}"))
            .arg(kind)
            .arg(secret),
        attributes,
    )
}

fn pap(user: &str, code: &str) -> String {
    format!("User-Name = \"{user}\"\nUser-Password = \"{code}\"\nMessage-Authenticator = 0x00\n")
}

fn radius_entries(entries: &[Value]) -> Vec<&Value> {
    entries
        .iter()
        .filter(|e| e["channel"] == "radius")
        .collect()
}

/// A loopback UDP socket that waits at most 1 s for an answer.
fn udp() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    socket
}

/// Sends `packet` and returns the answer, or `None` after 1 s.
fn exchange(socket: &UdpSocket, port: u16, packet: &[u8]) -> Option<Vec<u8>> {
    socket.send_to(packet, ("127.0.0.1", port)).expect("send");
    let mut buffer = [0u8; 4096];
    match socket.recv_from(&mut buffer) {
        Ok((len, _)) => Some(buffer[..len].to_vec()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv: {e}"),
    }
}

fn authenticator(n: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    for (i, b) in a.iter_mut().enumerate() {
        *b = n.wrapping_mul(31).wrapping_add(i as u8 * 7);
    }
    a
}

fn request(id: u8, user: &str, code: &str, secret: &str, with_ma: bool) -> Vec<u8> {
    radius::access_request(
        id,
        &authenticator(id),
        user.as_bytes(),
        code.as_bytes(),
        secret.as_bytes(),
        with_ma,
    )
    .expect("encode")
}

/// Decodes an answer to `req` and checks its authenticators.
fn decode_answer(answer: &[u8], req: &[u8]) -> (u8, Option<Vec<u8>>) {
    let request = Packet::decode(req).expect("request");
    let packet = Packet::decode(answer).expect("answer decodes");
    assert_eq!(packet.identifier, request.identifier);
    assert!(
        packet.is_response_to(&request.authenticator, SECRET.as_bytes()),
        "bad response authenticator or Message-Authenticator"
    );
    assert_eq!(
        packet.attributes().first().map(|a| a.kind),
        Some(attr::MESSAGE_AUTHENTICATOR),
        "Message-Authenticator must come first"
    );
    (
        packet.code,
        packet.attribute(attr::REPLY_MESSAGE).map(<[u8]>::to_vec),
    )
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn radclient_accept_reject_replay_and_status() {
    require_root_and_peers();
    let (env, port) = radius_env("127.0.0.1/32", "");
    let secret = env.enrol_active("alice");
    let wrong = wrong_code(&secret);

    let output = radclient(port, "auth", &pap("alice", &wrong));
    let text = stdout(&output);
    assert!(
        text.contains("Received Access-Reject"),
        "wrong code: {}\n{}",
        describe(&output),
        env.otpd_log()
    );
    assert!(text.contains("Authentication failed"), "{text}");

    let code = oathtool_code(&secret, 60);
    let output = radclient(port, "auth", &pap("alice", &code));
    let text = stdout(&output);
    assert!(
        text.contains("Received Access-Accept") && output.status.success(),
        "right code: {}\n{}",
        describe(&output),
        env.otpd_log()
    );
    // radclient drops an answer whose Message-Authenticator does not
    // verify ("Reply verification failed"), so receiving one proves it.
    let received = text
        .split("Received Access-Accept")
        .nth(1)
        .unwrap_or_default();
    assert!(
        received.contains("Message-Authenticator = 0x"),
        "the answer should carry a Message-Authenticator: {text}"
    );
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("verification failed"),
        "{}",
        describe(&output)
    );

    let output = radclient(port, "auth", &pap("alice", &code));
    assert!(
        stdout(&output).contains("Received Access-Reject"),
        "replayed code: {}",
        describe(&output)
    );

    // No token at all looks like a wrong code.
    let output = radclient(port, "auth", &pap("nobody", "123456"));
    assert!(
        stdout(&output).contains("Received Access-Reject"),
        "{}",
        describe(&output)
    );

    let output = radclient(port, "status", "Message-Authenticator = 0x00\n");
    assert!(
        stdout(&output).contains("Received Access-Accept"),
        "status: {}\n{}",
        describe(&output),
        env.otpd_log()
    );

    let entries = env.audit("alice");
    let entries = radius_entries(&entries);
    assert_eq!(entries.len(), 3, "{entries:#?}");
    assert_eq!(
        entries.iter().filter(|e| e["result"] == "ok").count(),
        1,
        "{entries:#?}"
    );
    for e in &entries {
        let peer = e["peer"].as_str().unwrap_or_default();
        assert!(peer.starts_with("nas=nas1 addr=127.0.0.1:"), "peer: {peer}");
    }
    assert!(!env.otpd_log().contains(&code), "the code reached the log");
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn retransmission_gets_the_cached_answer_without_a_second_verification() {
    require_root_and_peers();
    let (env, port) = radius_env("127.0.0.1/32", "");
    let secret = env.enrol_active("bob");
    let code = oathtool_code(&secret, 60);
    let socket = udp();
    let packet = request(17, "bob", &code, SECRET, true);
    let first = exchange(&socket, port, &packet).expect("an answer");
    let second = exchange(&socket, port, &packet).expect("an answer to the retransmission");
    assert_eq!(first, second, "a retransmission must get identical bytes");
    let (answer, _) = decode_answer(&first, &packet);
    assert_eq!(answer, code::ACCESS_ACCEPT, "{}", env.otpd_log());

    // A new request (new authenticator) with the spent code is a replay.
    let again = radius::access_request(
        18,
        &authenticator(99),
        b"bob",
        code.as_bytes(),
        SECRET.as_bytes(),
        true,
    )
    .unwrap();
    let answer = exchange(&socket, port, &again).expect("an answer");
    let (answer, reply) = decode_answer(&answer, &again);
    assert_eq!(answer, code::ACCESS_REJECT);
    assert_eq!(reply.as_deref(), Some(&b"Authentication failed"[..]));

    let entries = env.audit("bob");
    let entries = radius_entries(&entries);
    assert_eq!(
        entries.len(),
        2,
        "one verification for the packet sent twice, one for the replay: {entries:#?}"
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn unauthenticated_and_malformed_packets_are_dropped() {
    require_root_and_peers();
    let (env, port) = radius_env("127.0.0.1/32", "");
    let socket = udp();

    // Missing the required Message-Authenticator.
    let no_ma = request(1, "carol", "123456", SECRET, false);
    assert_eq!(
        exchange(&socket, port, &no_ma),
        None,
        "no Message-Authenticator"
    );
    // Wrong secret: the Message-Authenticator does not match.
    let wrong_secret = request(2, "carol", "123456", "not-the-secret", true);
    assert_eq!(exchange(&socket, port, &wrong_secret), None, "wrong secret");
    // Status-Server without a Message-Authenticator.
    let status = radius::encode_request(
        code::STATUS_SERVER,
        3,
        &authenticator(3),
        &[],
        SECRET.as_bytes(),
        false,
    )
    .unwrap();
    assert_eq!(exchange(&socket, port, &status), None, "bare Status-Server");

    let good = request(4, "carol", "123456", SECRET, true);
    let mut corpus: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("short", good[..19].to_vec()),
        ("header only, length 20 but code 1 with no MA", {
            let mut p = good[..20].to_vec();
            p[3] = 20;
            p
        }),
    ];
    let mut too_large = good.clone();
    too_large[3] = too_large[3].wrapping_add(10);
    corpus.push(("length field too large", too_large));
    let mut too_small = good.clone();
    too_small[3] = too_small[3].wrapping_sub(10);
    corpus.push(("length field too small", too_small));
    let mut below_header = good.clone();
    below_header[2] = 0;
    below_header[3] = 10;
    corpus.push(("length field below 20", below_header));
    for (name, len) in [
        ("attribute length 0", 0u8),
        ("attribute length 1", 1),
        ("attribute overflowing", 250),
    ] {
        let mut p = good.clone();
        p[21] = len;
        corpus.push((name, p));
    }
    let mut truncated_ma = good[..30].to_vec();
    truncated_ma[3] = 30;
    truncated_ma[21] = 10;
    corpus.push(("truncated Message-Authenticator", truncated_ma));
    let mut oversized = good.clone();
    oversized.resize(5000, 0);
    corpus.push(("oversized datagram", oversized));
    corpus.push(("Access-Accept sent to the server", {
        radius::encode_response(
            code::ACCESS_ACCEPT,
            5,
            &authenticator(5),
            &[],
            SECRET.as_bytes(),
        )
        .unwrap()
    }));
    for (name, packet) in &corpus {
        assert_eq!(exchange(&socket, port, packet), None, "{name} was answered");
    }

    // The daemon still answers a good request (carol has no token: reject).
    let answer = exchange(&socket, port, &good).unwrap_or_else(|| {
        panic!(
            "no answer to a good request after the corpus:\n{}",
            env.otpd_log()
        )
    });
    let (answer, reply) = decode_answer(&answer, &good);
    assert_eq!(answer, code::ACCESS_REJECT);
    assert_eq!(reply.as_deref(), Some(&b"Authentication failed"[..]));

    let log = env.otpd_log();
    assert!(log.contains("radius: dropped"), "drops are logged:\n{log}");
    // Rate-limited: many drops from one address, few lines.
    assert!(
        log.matches("radius: dropped").count() <= 3,
        "drops are rate limited:\n{log}"
    );
    assert!(!log.contains(SECRET), "the secret reached the log");
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn unknown_clients_are_dropped() {
    require_root_and_peers();
    // Only configured: nothing is ever sent to 10.9.9.9.
    let (env, port) = radius_env("10.9.9.9/32", "");
    let socket = udp();
    let packet = request(1, "dave", "123456", SECRET, true);
    assert_eq!(exchange(&socket, port, &packet), None);
    let log = env.otpd_log();
    assert!(log.contains("not a configured client"), "{log}");
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn per_client_override_accepts_requests_without_message_authenticator() {
    require_root_and_peers();
    let (env, port) = radius_env("127.0.0.0/8", "require_message_authenticator = false");
    let socket = udp();
    let packet = request(1, "erin", "123456", SECRET, false);
    let answer = exchange(&socket, port, &packet)
        .unwrap_or_else(|| panic!("no answer:\n{}", env.otpd_log()));
    let (answer, _) = decode_answer(&answer, &packet);
    assert_eq!(answer, code::ACCESS_REJECT);
    // A present but wrong Message-Authenticator is still dropped.
    let bad = request(2, "erin", "123456", "other", true);
    assert_eq!(exchange(&socket, port, &bad), None);
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn radclient_accounting_gets_an_accounting_response() {
    require_root_and_peers();
    let acct = free_port();
    let (env, port) = radius_env_with(
        "127.0.0.1/32",
        "",
        &format!("accounting_listen = \"127.0.0.1:{acct}\""),
    );
    let start =
        "Acct-Status-Type = Start\nAcct-Session-Id = \"e2e-session-1\"\nUser-Name = \"alice\"\n";
    let output = radclient(acct, "acct", start);
    assert!(
        stdout(&output).contains("Received Accounting-Response") && output.status.success(),
        "accounting: {}\n{}",
        describe(&output),
        env.otpd_log()
    );
    // With a Message-Authenticator: the answer carries one too (radclient
    // drops an answer whose Message-Authenticator does not verify).
    let output = radclient(
        acct,
        "acct",
        &format!("{start}Message-Authenticator = 0x00\n"),
    );
    let text = stdout(&output);
    assert!(
        text.contains("Received Accounting-Response") && output.status.success(),
        "accounting with Message-Authenticator: {}\n{}",
        describe(&output),
        env.otpd_log()
    );
    assert!(
        text.split("Received Accounting-Response")
            .nth(1)
            .unwrap_or_default()
            .contains("Message-Authenticator = 0x"),
        "{text}"
    );

    // A wrong secret gets no answer.
    let output = radclient_with_secret(acct, "acct", "not-the-secret", start);
    assert!(
        !stdout(&output).contains("Received") && !output.status.success(),
        "wrong secret: {}",
        describe(&output)
    );

    // The authentication port does not answer accounting, nor the
    // accounting port authentication.
    let socket = udp();
    let packet = radius::encode_accounting_request(
        9,
        &[(attr::USER_NAME, b"alice")],
        SECRET.as_bytes(),
        false,
    )
    .unwrap();
    assert_eq!(exchange(&socket, port, &packet), None, "accounting on 1812");
    let access = request(10, "alice", "123456", SECRET, true);
    assert_eq!(exchange(&socket, acct, &access), None, "auth on 1813");

    let log = env.otpd_log();
    assert!(log.contains("radius: dropped"), "{log}");
    assert!(!log.contains(SECRET), "the secret reached the log");
    assert!(
        !log.contains("e2e-session-1"),
        "attribute values reached the log"
    );
}
