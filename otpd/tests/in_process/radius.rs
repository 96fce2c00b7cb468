//! The RADIUS listener in process, on loopback ports: one acceptance of a
//! code that many NASes send at once, a flood held to the in-flight cap,
//! accounting, and secrets that fail the start.

use std::sync::Arc;
use std::time::Duration;

use otpcore::config::{Cidr, Config, FirstFactor, RadiusClient, RadiusConfig};
use otpcore::radius::{self, attr, code, Packet};
use otpd::daemon::{unix_now, Daemon};
use otpd::error::ListenError;
use otpd::radius::{RadiusListener, MAX_IN_FLIGHT};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use crate::common::{active_token, daemon_with, Serving};

const SECRET: &[u8] = b"in-process-secret";

/// The `[radius]` section of one client `nas` at 127.0.0.1 (secret
/// [`SECRET`] or `secret_file`), on port 0, with an accounting port when
/// asked.
fn radius_config(accounting: bool, secret_file: Option<std::path::PathBuf>) -> RadiusConfig {
    let secret = match secret_file {
        Some(_) => None,
        None => Some(String::from_utf8(SECRET.to_vec()).unwrap()),
    };
    RadiusConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        accounting_listen: accounting.then(|| "127.0.0.1:0".parse().unwrap()),
        require_message_authenticator: true,
        client: vec![RadiusClient {
            name: "nas".to_owned(),
            address: Cidr::parse("127.0.0.1").unwrap(),
            secret,
            secret_file,
            require_message_authenticator: None,
            first_factor: None,
            reauth_seconds: None,
        }],
        radsec_listen: None,
        radsec_cert: None,
        radsec_key: None,
        radsec_ca: None,
        first_factor: FirstFactor::None,
        challenge: false,
        reauth_seconds: 0,
    }
}

/// A daemon with one RADIUS client `nas` at 127.0.0.1 (secret [`SECRET`])
/// and its listener on port 0, with an accounting port when asked; not
/// serving yet.
fn fixture(accounting: bool) -> (tempfile::TempDir, Arc<Daemon>, RadiusListener) {
    let (dir, daemon) = daemon_with(|config: &mut Config| {
        config.radius = Some(radius_config(accounting, None));
    });
    let radius = daemon.config.radius.as_ref().expect("radius section");
    let listener = RadiusListener::bind(radius).expect("bind");
    (dir, daemon, listener)
}

/// The listener serving `daemon`, with a verifier of its own.
fn serve(daemon: &Arc<Daemon>, listener: RadiusListener) -> Serving {
    Serving::start(daemon, |daemon, verifier, shutdown| {
        listener.serve(daemon, verifier, shutdown)
    })
}

#[tokio::test]
async fn concurrent_requests_accept_a_code_once_and_stop_cleanly() {
    let (_dir, daemon, listener) = fixture(false);
    let addr = listener.local_addr().unwrap();
    let secret = active_token(&daemon, "zoe");
    let params = daemon.config.token.params();
    let code = params
        .code_at(&secret, unix_now() + params.period)
        .to_string();
    let serving = serve(&daemon, listener);

    // 32 NASes ask at once with the same fresh code: one gets in.
    let mut asks = JoinSet::new();
    for id in 0..32u8 {
        let code = code.clone();
        asks.spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let auth = [id; 16];
            let packet =
                radius::access_request(id, &auth, b"zoe", code.as_bytes(), SECRET, true).unwrap();
            socket.send_to(&packet, addr).await.unwrap();
            let mut buffer = [0u8; 4096];
            let (len, _) =
                tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buffer))
                    .await
                    .expect("an answer")
                    .unwrap();
            let answer = Packet::decode(&buffer[..len]).unwrap();
            assert!(answer.is_response_to(&auth, SECRET));
            answer.code
        });
    }
    let mut accepted = 0;
    while let Some(answer) = asks.join_next().await {
        if answer.unwrap() == code::ACCESS_ACCEPT {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1, "a code must be accepted exactly once");

    serving.stop().await;
}

#[tokio::test]
async fn a_client_flooding_valid_requests_is_held_to_the_in_flight_cap() {
    let (_dir, daemon, listener) = fixture(false);
    let addr = listener.local_addr().unwrap();
    let serving = serve(&daemon, listener);

    // A stalled store: another connection holds the database's write
    // lock, as another process's transaction would, so nothing in
    // verification finishes and every admitted request stays in flight.
    let staller =
        rusqlite::Connection::open(daemon.config.state_dir.join(otpstore::DB_FILE)).unwrap();
    staller.execute_batch("BEGIN IMMEDIATE").unwrap();
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let answers = tokio::spawn({
        let socket = Arc::clone(&socket);
        async move {
            let mut count = 0;
            let mut buffer = [0u8; 4096];
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buffer)).await
            {
                count += 1;
            }
            count
        }
    });
    let sent = MAX_IN_FLIGHT + 200;
    for n in 0..sent {
        // Distinct requests, so none is a retransmission of another.
        let mut auth = [0u8; 16];
        auth[..8].copy_from_slice(&(n as u64).to_be_bytes());
        let packet =
            radius::access_request(n as u8, &auth, b"nobody", b"123456", SECRET, true).unwrap();
        socket.send_to(&packet, addr).await.unwrap();
        if n % 32 == 31 {
            // Let the listener read, so the kernel keeps every datagram.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(staller);
    assert_eq!(
        answers.await.unwrap(),
        MAX_IN_FLIGHT,
        "exactly the requests admitted while the store stalled are answered"
    );

    serving.stop().await;
}

#[tokio::test]
async fn accounting_requests_are_answered_and_the_rest_dropped() {
    let (_dir, daemon, listener) = fixture(true);
    let addr = listener.accounting_addr().expect("accounting").unwrap();
    let serving = serve(&daemon, listener);

    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let exchange = |packet: Vec<u8>| {
        let socket = &socket;
        async move {
            socket.send_to(&packet, addr).await.unwrap();
            let mut buffer = [0u8; 4096];
            match tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buffer))
                .await
            {
                Ok(received) => Some(buffer[..received.unwrap().0].to_vec()),
                Err(_) => None,
            }
        }
    };
    let start: &[(u8, &[u8])] = &[
        (attr::ACCT_STATUS_TYPE, &[0, 0, 0, 1]),
        (attr::ACCT_SESSION_ID, b"s1"),
        (attr::USER_NAME, b"zoe"),
    ];
    for (id, with_ma) in [(1u8, false), (2, true)] {
        let request = radius::encode_accounting_request(id, start, SECRET, with_ma).unwrap();
        let request_auth = Packet::decode(&request).unwrap().authenticator;
        let answer = exchange(request).await.expect("an Accounting-Response");
        let answer = Packet::decode(&answer).unwrap();
        assert_eq!(answer.code, code::ACCOUNTING_RESPONSE);
        assert_eq!(answer.identifier, id);
        assert!(answer.is_response_to(&request_auth, SECRET));
        let first = answer.attributes().first().map(|a| a.kind);
        if with_ma {
            assert_eq!(first, Some(attr::MESSAGE_AUTHENTICATOR));
        } else {
            assert_eq!(first, None);
        }
    }
    // Wrong secret, a bad Message-Authenticator, an Access-Request and
    // garbage on the accounting port: no answer.
    let wrong = radius::encode_accounting_request(3, start, b"wrong", false).unwrap();
    assert_eq!(exchange(wrong).await, None, "wrong secret");
    let mut bad_ma = radius::encode_accounting_request(4, start, SECRET, true).unwrap();
    bad_ma[radius::HEADER_LEN + 2] ^= 1;
    let auth = radius::accounting_request_authenticator(&bad_ma, SECRET);
    bad_ma[4..20].copy_from_slice(&auth);
    assert_eq!(exchange(bad_ma).await, None, "bad Message-Authenticator");
    let access = radius::access_request(5, &[5u8; 16], b"zoe", b"123456", SECRET, true).unwrap();
    assert_eq!(exchange(access).await, None, "Access-Request");
    assert_eq!(exchange(vec![4, 0, 0]).await, None, "garbage");

    serving.stop().await;
}

/// The error that binding `config` fails with, and its message.
fn refused(config: &RadiusConfig) -> (ListenError, String) {
    let err = RadiusListener::bind(config).err().expect("an error");
    let message = err.to_string();
    (err, message)
}

#[test]
fn empty_or_missing_secret_files_fail_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let (err, message) = refused(&radius_config(false, Some(empty.clone())));
    assert!(
        matches!(err, ListenError::EmptySecretFile { .. }),
        "{err:?}"
    );
    let expected = format!(
        "radius.client \"nas\": secret_file {} is empty",
        empty.display()
    );
    assert_eq!(message, expected);

    let missing = dir.path().join("missing");
    let (err, message) = refused(&radius_config(false, Some(missing.clone())));
    assert!(matches!(err, ListenError::SecretFile { .. }), "{err:?}");
    let named = format!(
        "radius.client \"nas\": cannot read secret_file {}: ",
        missing.display()
    );
    assert!(message.starts_with(&named), "{message}");
}

#[test]
fn a_taken_port_fails_the_start_and_names_it() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut config = radius_config(false, None);
    config.listen = addr;
    let (err, message) = refused(&config);
    assert!(matches!(err, ListenError::Radius { .. }), "{err:?}");
    let named = format!("cannot listen for RADIUS on {addr}: ");
    assert!(message.starts_with(&named), "{message}");

    config.listen = "127.0.0.1:0".parse().unwrap();
    config.accounting_listen = Some(addr);
    let (err, message) = refused(&config);
    assert!(
        matches!(err, ListenError::RadiusAccounting { .. }),
        "{err:?}"
    );
    let named = format!("cannot listen for RADIUS accounting on {addr}: ");
    assert!(message.starts_with(&named), "{message}");
}
