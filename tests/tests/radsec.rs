//! RADIUS over TLS (RadSec): radsecproxy in front of otpd, relaying
//! radclient's UDP requests over mutual TLS with the shipped
//! conf/radius/radsecproxy.conf; clients whose certificate comes from
//! another CA, that present none, or that connect from an address that is
//! not a client, get nothing; a small rustls client checks Status-Server,
//! a retransmission on one connection and a bad Length field; and a flood
//! of silent, garbage, half-finished and idle TLS connections leaves UDP
//! RADIUS and the PAM socket answering, with otpd's descriptors bounded.
//! The certificates are made here with rcgen. Loopback only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{
    describe, free_port, oathtool_code, require_root_and_peers, require_tools, stdout,
    write_private_file, wrong_code, EnvOptions, TestEnv,
};
use otpcore::radius::{self, code, Packet};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::json;

/// Between radclient and radsecproxy, and between radclient and otpd over
/// UDP.
const NAS_SECRET: &str = "e2e-radsec-nas-secret";
/// The shared secret of RadSec.
const RADSEC_SECRET: &[u8] = b"radsec";

/// The test's certificates in one directory: otpd's server certificate
/// for 127.0.0.1 from `server-ca.pem`; a client certificate from
/// `client-ca.pem` (the CA otpd trusts), and one from `other-ca.pem`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("otpd-radsec-")
            .tempdir()
            .expect("temp dir");
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
                .expect("CA certificate")
        };
        let leaf = |name: &str, purpose, issuer: &CertifiedIssuer<'_, KeyPair>, file: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![purpose];
            let cert = params.signed_by(&key, issuer).expect("certificate");
            fs::write(dir.path().join(format!("{file}.crt")), cert.pem()).expect("write cert");
            write_private_file(
                &dir.path().join(format!("{file}.key")),
                &key.serialize_pem(),
            );
        };
        let (server_ca, client_ca, other_ca) = (
            ca("otpd RadSec server CA"),
            ca("otpd RadSec client CA"),
            ca("unrelated CA"),
        );
        for (file, issuer) in [
            ("server-ca", &server_ca),
            ("client-ca", &client_ca),
            ("other-ca", &other_ca),
        ] {
            fs::write(dir.path().join(format!("{file}.pem")), issuer.pem()).expect("write CA");
        }
        leaf(
            "127.0.0.1",
            ExtendedKeyUsagePurpose::ServerAuth,
            &server_ca,
            "server",
        );
        leaf(
            "radsecproxy",
            ExtendedKeyUsagePurpose::ClientAuth,
            &client_ca,
            "client",
        );
        leaf(
            "intruder",
            ExtendedKeyUsagePurpose::ClientAuth,
            &other_ca,
            "other",
        );
        Pki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

/// otpd with UDP RADIUS and RadSec on free loopback ports, for one client
/// `radsec` at `clients` (UDP secret [`NAS_SECRET`]); the UDP and RadSec
/// ports come back too.
fn start_otpd(pki: &Pki, clients: &str) -> (TestEnv, u16, u16) {
    let (udp, tls) = (free_port(), free_port());
    let env = TestEnv::start_with(EnvOptions {
        extra_toml: format!(
            "\n[radius]\nlisten = \"127.0.0.1:{udp}\"\naccounting_listen = \"127.0.0.1:{accounting}\"\n\
             radsec_listen = \"127.0.0.1:{tls}\"\n\
             radsec_cert = \"{cert}\"\nradsec_key = \"{key}\"\nradsec_ca = \"{ca}\"\n\n\
             [[radius.client]]\nname = \"radsec\"\naddress = \"{clients}\"\nsecret = \"{NAS_SECRET}\"\n",
            cert = pki.path("server.crt").display(),
            key = pki.path("server.key").display(),
            ca = pki.path("client-ca.pem").display(),
            accounting = free_port(),
        ),
        ..EnvOptions::default()
    });
    wait_for_tcp(tls, &env);
    (env, udp, tls)
}

fn wait_for_tcp(port: u16, env: &TestEnv) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "otpd does not listen on {port}:\n{}",
            env.otpd_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// radsecproxy in the foreground with the shipped radsecproxy.conf, its
/// placeholders pointed at this test: UDP from radclient on `port`, TLS to
/// otpd on `otpd_port` with the client certificate `cert` (`client` or
/// `other`). Killed on drop.
struct RadsecProxy {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl RadsecProxy {
    fn start(pki: &Pki, otpd_port: u16, cert: &str) -> RadsecProxy {
        require_tools(&[("radsecproxy", "radsecproxy")]);
        let port = free_port();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/radius/radsecproxy.conf");
        let mut text = fs::read_to_string(&path).expect("conf/radius/radsecproxy.conf");
        for (placeholder, value) in [
            (
                "ListenUDP 127.0.0.1:1812",
                format!("ListenUDP 127.0.0.1:{port}"),
            ),
            (
                "/etc/radsecproxy/otpd-server-ca.crt",
                pki.path("server-ca.pem").display().to_string(),
            ),
            (
                "/etc/radsecproxy/radsecproxy.crt",
                pki.path(&format!("{cert}.crt")).display().to_string(),
            ),
            (
                "/etc/radsecproxy/radsecproxy.key",
                pki.path(&format!("{cert}.key")).display().to_string(),
            ),
            ("secret change-me", format!("secret {NAS_SECRET}")),
            ("host otp.example.com", "host 127.0.0.1".to_owned()),
            ("port 2083", format!("port {otpd_port}")),
        ] {
            assert_eq!(
                text.matches(placeholder).count(),
                1,
                "the shipped radsecproxy.conf should hold `{placeholder}` once"
            );
            text = text.replace(placeholder, &value);
        }
        let config = pki.path(&format!("radsecproxy-{cert}.conf"));
        fs::write(&config, text).expect("radsecproxy.conf");
        let log = pki.path(&format!("radsecproxy-{cert}.log"));
        let child = Command::new("radsecproxy")
            .arg("-f")
            .arg("-d")
            .arg("4")
            .arg("-c")
            .arg(&config)
            .arg("-i")
            .arg(pki.path(&format!("radsecproxy-{cert}.pid")))
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).expect("log"))
            .stderr(fs::File::create(pki.path(&format!("radsecproxy-{cert}.err"))).expect("log"))
            .spawn()
            .expect("start radsecproxy");
        let mut proxy = RadsecProxy { child, log, port };
        // It binds its UDP port before it connects anywhere.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("radsecproxy exited with {status}:\n{}", proxy.log());
            }
            assert!(
                Instant::now() < deadline,
                "radsecproxy does not listen:\n{}",
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        proxy
    }

    fn log(&self) -> String {
        let err = self.log.with_extension("err");
        format!(
            "{}{}",
            fs::read_to_string(&self.log).unwrap_or_default(),
            fs::read_to_string(err).unwrap_or_default()
        )
    }
}

impl Drop for RadsecProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `radclient` sending one PAP request with a Message-Authenticator to
/// 127.0.0.1:`port`, once, waiting `timeout` seconds.
fn radclient(port: u16, user: &str, code: &str, timeout: u32) -> Output {
    e2e::run_with_input(
        Command::new("radclient")
            .args(["-x", "-r", "1", "-t"])
            .arg(timeout.to_string())
            .arg(format!("127.0.0.1:{port}"))
            .arg("auth")
            .arg(NAS_SECRET),
        &format!(
            "User-Name = \"{user}\"\nUser-Password = \"{code}\"\nMessage-Authenticator = 0x00\n"
        ),
    )
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn radsecproxy_relays_codes_to_otpd_over_mutual_tls() {
    require_root_and_peers();
    let pki = Pki::new();
    let (env, _, tls) = start_otpd(&pki, "127.0.0.1/32");
    let secret = env.enrol_active("alice");
    let proxy = RadsecProxy::start(&pki, tls, "client");
    let logs = |output: &Output| {
        format!(
            "{}\n--- radsecproxy ---\n{}\n--- otpd ---\n{}",
            describe(output),
            proxy.log(),
            env.otpd_log()
        )
    };

    let output = radclient(proxy.port, "alice", &wrong_code(&secret), 10);
    assert!(
        stdout(&output).contains("Received Access-Reject"),
        "wrong code: {}",
        logs(&output)
    );
    let code = oathtool_code(&secret, 60);
    let output = radclient(proxy.port, "alice", &code, 10);
    assert!(
        stdout(&output).contains("Received Access-Accept") && output.status.success(),
        "right code: {}",
        logs(&output)
    );
    let output = radclient(proxy.port, "alice", &code, 10);
    assert!(
        stdout(&output).contains("Received Access-Reject"),
        "replayed code: {}",
        logs(&output)
    );
    e2e::assert_radius_decisions(&env, "alice", 3, "nas=radsec addr=127.0.0.1:");
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_client_certificate_from_another_ca_gets_no_answer() {
    require_root_and_peers();
    let pki = Pki::new();
    let (env, _, tls) = start_otpd(&pki, "127.0.0.1/32");
    let secret = env.enrol_active("bob");
    let proxy = RadsecProxy::start(&pki, tls, "other");
    let output = radclient(proxy.port, "bob", &oathtool_code(&secret, 60), 5);
    assert!(
        !stdout(&output).contains("Received Access-"),
        "a certificate from another CA must get no answer: {}\n--- radsecproxy ---\n{}",
        describe(&output),
        proxy.log()
    );
    let log = env.otpd_log();
    assert!(
        log.contains("RadSec connection: TLS handshake failed"),
        "otpd should log the refused handshake:\n{log}"
    );
    assert!(e2e::radius_audit(&env).is_empty(), "no decision expected");
}

/// A rustls client configuration that trusts otpd's server CA and
/// presents `cert` (`client`, `other`), or no certificate.
fn client_config(pki: &Pki, cert: Option<&str>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.path("server-ca.pem")).expect("server CA"))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    Arc::new(match cert {
        Some(name) => builder
            .with_client_auth_cert(
                vec![
                    CertificateDer::from_pem_file(pki.path(&format!("{name}.crt"))).expect("cert"),
                ],
                PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key"))).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    })
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TCP connection to otpd's RadSec port from `source`.
fn connect_from(source: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(IpAddr::V4(source), 0).into())?;
    socket.connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)).into(),
        Duration::from_secs(5),
    )?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    stream.set_write_timeout(Some(Duration::from_secs(15)))?;
    Ok(stream)
}

/// A TLS connection from `source` with the handshake done.
fn tls_connect(
    config: &Arc<rustls::ClientConfig>,
    source: Ipv4Addr,
    port: u16,
) -> std::io::Result<Tls> {
    let mut stream = connect_from(source, port)?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut session = rustls::ClientConnection::new(Arc::clone(config), name).expect("client");
    while session.is_handshaking() {
        session.complete_io(&mut stream)?;
    }
    Ok(rustls::StreamOwned::new(session, stream))
}

/// Reads one RADIUS packet from `tls`.
fn read_packet(tls: &mut Tls) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    tls.read_exact(&mut header)?;
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut packet = vec![0u8; length];
    packet[..4].copy_from_slice(&header);
    tls.read_exact(&mut packet[4..])?;
    Ok(packet)
}

/// Whether the server ended the connection: EOF or an error within the
/// read timeout, rather than data.
fn ended(tls: &mut Tls) -> bool {
    let mut byte = [0u8; 1];
    matches!(tls.read(&mut byte), Ok(0) | Err(_))
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_tls_client_gets_status_cached_answers_and_is_closed_on_a_bad_length() {
    require_root_and_peers();
    let pki = Pki::new();
    let (env, _, port) = start_otpd(&pki, "127.0.0.1/32");
    let secret = env.enrol_active("carol");
    let config = client_config(&pki, Some("client"));
    let loopback = Ipv4Addr::LOCALHOST;

    // Status-Server: Access-Accept, authenticated with the secret `radsec`.
    let mut tls = tls_connect(&config, loopback, port).expect("handshake");
    let auth = [7u8; 16];
    let status =
        radius::encode_request(code::STATUS_SERVER, 1, &auth, &[], RADSEC_SECRET, true).unwrap();
    tls.write_all(&status).unwrap();
    let answer = read_packet(&mut tls).expect("Status-Server answer");
    let packet = Packet::decode(&answer).expect("answer decodes");
    assert_eq!(packet.code, code::ACCESS_ACCEPT);
    assert!(packet.is_authenticated_response_to(&auth, RADSEC_SECRET));

    // A right code, sent twice on the connection: one decision, the same
    // answer twice.
    let code = oathtool_code(&secret, 60);
    let auth = [9u8; 16];
    let request =
        radius::access_request(2, &auth, b"carol", code.as_bytes(), RADSEC_SECRET, true).unwrap();
    tls.write_all(&request).unwrap();
    let first = read_packet(&mut tls).expect("answer");
    assert_eq!(Packet::decode(&first).unwrap().code, code::ACCESS_ACCEPT);
    tls.write_all(&request).unwrap();
    let second = read_packet(&mut tls).expect("cached answer");
    assert_eq!(first, second, "a retransmission gets the cached answer");
    assert_eq!(e2e::radius_audit(&env).len(), 1, "one decision");

    // With accounting_listen, an Accounting-Request gets its response.
    let accounting = radius::encode_accounting_request(
        4,
        &[(radius::attr::ACCT_STATUS_TYPE, &[0, 0, 0, 1])],
        RADSEC_SECRET,
        false,
    )
    .unwrap();
    tls.write_all(&accounting).unwrap();
    let answer = read_packet(&mut tls).expect("Accounting-Response");
    assert_eq!(answer[0], code::ACCOUNTING_RESPONSE);
    assert_eq!(answer[1], 4);

    // A request signed with another secret gets nothing; the connection
    // stays.
    let wrong = radius::access_request(3, &[3; 16], b"carol", b"123456", b"other", true).unwrap();
    tls.write_all(&wrong).unwrap();
    tls.write_all(&status).unwrap();
    let answer = read_packet(&mut tls).expect("the Status-Server after it");
    assert_eq!(answer[1], 1, "only the Status-Server is answered");

    // A Length field beyond 4096 closes the connection.
    tls.write_all(&[1, 4, 0x10, 0x01]).unwrap();
    tls.write_all(&[0; 64]).unwrap();
    assert!(ended(&mut tls), "a bad length closes the connection");

    // No certificate, or one from another CA: the handshake fails.
    for cert in [None, Some("other")] {
        let refused =
            tls_connect(&client_config(&pki, cert), loopback, port).and_then(|mut tls| {
                tls.write_all(&status)?;
                read_packet(&mut tls)
            });
        assert!(refused.is_err(), "{cert:?}: {refused:?}");
    }
    // The right certificate from an address that is not a client.
    let refused = tls_connect(&config, Ipv4Addr::new(127, 0, 0, 2), port).and_then(|mut tls| {
        tls.write_all(&status)?;
        read_packet(&mut tls)
    });
    assert!(refused.is_err(), "not a client: {refused:?}");
    let log = env.otpd_log();
    assert!(
        log.contains("RadSec connection: not a configured client"),
        "{log}"
    );
}

/// Descriptors otpd has open.
fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(usize::MAX)
}

/// The connections of the flood.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Connects and sends nothing.
    Silent,
    /// Sends bytes that are not TLS.
    Garbage,
    /// Sends the start of a ClientHello and stops.
    PartialHello,
    /// Finishes the handshake with a good certificate and stops.
    Idle,
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_flood_of_bad_tls_connections_leaves_udp_and_the_socket_answering() {
    require_root_and_peers();
    let pki = Pki::new();
    let (env, udp, port) = start_otpd(&pki, "127.0.0.0/8");
    let secret = env.enrol_active("dave");
    let pid = env.otpd_pid().expect("otpd pid");
    let before = open_fds(pid);
    let config = client_config(&pki, Some("client"));

    // 40 finished handshakes first, then 300 more connections of the other
    // kinds: beyond the 256 that otpd serves at once. At most 20 from one
    // address (127.0.0.2 and up).
    let mut connections: Vec<(Kind, TcpStream, Option<Tls>)> = Vec::new();
    for i in 0..340u32 {
        let source = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i / 20).unwrap());
        let kind = match i {
            0..40 => Kind::Idle,
            _ => [Kind::Silent, Kind::Garbage, Kind::PartialHello][(i % 3) as usize],
        };
        match kind {
            Kind::Idle => {
                let tls = tls_connect(&config, source, port).expect("idle handshake");
                let tcp = tls.sock.try_clone().unwrap();
                connections.push((kind, tcp, Some(tls)));
            }
            _ => {
                let mut tcp = connect_from(source, port).expect("connect");
                match kind {
                    Kind::Garbage => tcp.write_all(&[0x47; 512]).unwrap(),
                    // A TLS record header announcing 512 bytes, and 5 of them.
                    Kind::PartialHello => tcp
                        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03])
                        .unwrap(),
                    _ => {}
                }
                connections.push((kind, tcp, None));
            }
        }
    }

    // Meanwhile UDP RADIUS and the PAM socket answer.
    let code = oathtool_code(&secret, 60);
    let started = Instant::now();
    let output = radclient(udp, "dave", &code, 10);
    assert!(
        stdout(&output).contains("Received Access-Accept"),
        "UDP during the flood: {}\n{}",
        describe(&output),
        env.otpd_log()
    );
    let answer = env.socket_request(&json!({
        "op": "verify", "user": "dave", "otp": wrong_code(&secret), "service": "radsec-flood",
    }));
    assert_eq!(answer["result"], "reject", "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "UDP and the socket took {:?}",
        started.elapsed()
    );
    let during = open_fds(pid);
    assert!(
        during <= before + 256 + 16,
        "otpd holds {during} descriptors ({before} before the flood)"
    );

    // Garbage is refused at once; the silent and half-finished connections
    // are closed after the handshake deadline, also those that waited in
    // the listen queue for a slot.
    for (kind, tcp, _) in &mut connections {
        if *kind != Kind::Idle {
            tcp.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (kind, tcp, _) in &mut connections {
        if *kind == Kind::Idle {
            continue;
        }
        let mut buffer = [0u8; 256];
        loop {
            match tcp.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(_) => assert!(Instant::now() < deadline, "{kind:?} keeps getting data"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "a {kind:?} connection was not closed in time"
        );
    }
    // The established ones are still served.
    let (_, _, idle) = connections.iter_mut().find(|c| c.0 == Kind::Idle).unwrap();
    let idle = idle.as_mut().unwrap();
    let status =
        radius::encode_request(code::STATUS_SERVER, 5, &[5; 16], &[], RADSEC_SECRET, true).unwrap();
    idle.write_all(&status).unwrap();
    let answer = read_packet(idle).expect("Status-Server on an idle connection");
    assert_eq!(answer[0], code::ACCESS_ACCEPT);
    drop(connections);
    let log = env.otpd_log();
    assert!(log.contains("TLS handshake failed"), "{log}");

    // 40 more from one address: beyond 32, closed at once.
    let mut same: Vec<TcpStream> = (0..40)
        .map(|_| connect_from(Ipv4Addr::new(127, 0, 0, 99), port).expect("connect"))
        .collect();
    let mut closed = 0;
    for tcp in &mut same {
        tcp.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut byte = [0u8; 1];
        if matches!(tcp.read(&mut byte), Ok(0)) {
            closed += 1;
        }
    }
    assert!(
        closed >= 8,
        "{closed} of 40 connections from one address closed at once"
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn unusable_radsec_files_stop_the_start_with_a_message_naming_them() {
    require_root_and_peers();
    let pki = Pki::new();
    let secret = "Xq9-radsec-udp-SECRET";
    fs::write(pki.path("garbage.pem"), "not a certificate\n").unwrap();
    let missing = pki.path("missing.pem");
    let cases = [
        // (cert, key, ca, the file the message must name)
        (
            missing.clone(),
            pki.path("server.key"),
            pki.path("client-ca.pem"),
            missing.clone(),
        ),
        (
            pki.path("garbage.pem"),
            pki.path("server.key"),
            pki.path("client-ca.pem"),
            pki.path("garbage.pem"),
        ),
        (
            pki.path("server.crt"),
            pki.path("client.key"),
            pki.path("client-ca.pem"),
            pki.path("client.key"),
        ),
        (
            pki.path("server.crt"),
            pki.path("server.key"),
            missing.clone(),
            missing.clone(),
        ),
        (
            pki.path("server.crt"),
            pki.path("server.key"),
            pki.path("garbage.pem"),
            pki.path("garbage.pem"),
        ),
    ];
    for (n, (cert, key, ca, named)) in cases.into_iter().enumerate() {
        let state = pki.path("state");
        fs::create_dir_all(&state).unwrap();
        let config = pki.path(&format!("otpd-{n}.toml"));
        write_private_file(
            &config,
            &format!(
                "service_id = \"X\"\nissuer = \"I\"\nstate_dir = \"{state}\"\n\n\
                 [radius]\nlisten = \"127.0.0.1:{udp}\"\nradsec_listen = \"127.0.0.1:{tls}\"\n\
                 radsec_cert = \"{cert}\"\nradsec_key = \"{key}\"\nradsec_ca = \"{ca}\"\n\n\
                 [[radius.client]]\nname = \"nas\"\naddress = \"127.0.0.1\"\nsecret = \"{secret}\"\n",
                state = state.display(),
                udp = free_port(),
                tls = free_port(),
                cert = cert.display(),
                key = key.display(),
                ca = ca.display(),
            ),
        );
        let output = e2e::run_with_input(
            Command::new(e2e::otpd_bin()).arg("--config").arg(&config),
            "",
        );
        let said = format!("{}{}", stdout(&output), e2e::stderr(&output));
        assert!(!output.status.success(), "{named:?}: {}", describe(&output));
        assert!(
            said.contains(&named.display().to_string()) && said.contains("RadSec"),
            "the message should name {}: {said}",
            named.display()
        );
        assert!(!said.contains(secret), "{said}");
        assert!(!said.contains("listening on"), "{said}");
    }
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_client_that_does_not_read_its_answers_is_disconnected() {
    require_root_and_peers();
    let pki = Pki::new();
    let (env, _, port) = start_otpd(&pki, "127.0.0.1/32");
    let config = client_config(&pki, Some("client"));
    let mut tls = tls_connect(&config, Ipv4Addr::LOCALHOST, port).expect("handshake");
    let status =
        radius::encode_request(code::STATUS_SERVER, 1, &[1; 16], &[], RADSEC_SECRET, true).unwrap();
    // Status-Servers without reading a single answer, until otpd gives up.
    let batch = status.repeat(1000);
    let started = Instant::now();
    let mut sent = 0usize;
    let cut = loop {
        if let Err(e) = tls.write_all(&batch).and_then(|()| tls.flush()) {
            break e;
        }
        sent += 1000;
        assert!(
            sent < 2_000_000 && started.elapsed() < Duration::from_secs(60),
            "otpd still reads after {sent} unread answers:\n{}",
            env.otpd_log()
        );
    };
    let log = env.otpd_log();
    assert!(log.contains("does not read its answers"), "{cut}: {log}");
    // Others are still served.
    let mut other = tls_connect(&config, Ipv4Addr::LOCALHOST, port).expect("handshake");
    other.write_all(&status).unwrap();
    assert_eq!(
        read_packet(&mut other).expect("answer")[0],
        code::ACCESS_ACCEPT
    );
}
