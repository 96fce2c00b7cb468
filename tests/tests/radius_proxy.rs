//! FreeRADIUS in front of otpd (conf/radius/freeradius-proxy.conf): a
//! private copy of /etc/freeradius/3.0 whose proxy.conf is the shipped
//! example with only the address, port and secret filled in, and a site
//! that proxies `user@OTP` to otpd with `suffix`. `radclient` talks to
//! FreeRADIUS; otpd must see the plain user name. Loopback only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use e2e::{describe, oathtool_code, require_root_and_peers, stdout, wrong_code, FreeRadiusProxy};

/// Between FreeRADIUS and otpd.
const OTPD_SECRET: &str = "e2e-proxy-otpd-secret";
/// Between radclient and FreeRADIUS.
const NAS_SECRET: &str = "e2e-proxy-nas-secret";

/// The shipped example with `ipaddr`, `port` and `secret` pointed at otpd;
/// nothing else changes.
fn shipped_proxy_conf(otpd_port: u16) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/radius/freeradius-proxy.conf");
    let mut text = fs::read_to_string(&path).expect("conf/radius/freeradius-proxy.conf");
    for (placeholder, value) in [
        ("ipaddr = 192.0.2.20", "ipaddr = 127.0.0.1".to_owned()),
        ("port = 1812", format!("port = {otpd_port}")),
        ("secret = change-me", format!("secret = {OTPD_SECRET}")),
    ] {
        assert_eq!(
            text.matches(placeholder).count(),
            1,
            "the shipped proxy.conf should hold `{placeholder}` once"
        );
        text = text.replace(placeholder, &value);
    }
    text
}

/// FreeRADIUS with the shipped proxy.conf pointed at otpd on `otpd_port`.
fn start_freeradius(otpd_port: u16) -> FreeRadiusProxy {
    FreeRadiusProxy::start(NAS_SECRET, |raddb| {
        let radiusd = fs::read_to_string(raddb.join("radiusd.conf")).expect("radiusd.conf");
        assert!(
            radiusd.contains("\nproxy_requests  = yes")
                || radiusd.contains("\nproxy_requests = yes"),
            "radiusd.conf should keep proxy_requests = yes"
        );
        fs::write(raddb.join("proxy.conf"), shipped_proxy_conf(otpd_port)).expect("proxy.conf");
    })
}

/// `radclient` against FreeRADIUS: PAP with a Message-Authenticator.
fn radclient(port: u16, user: &str, code: &str) -> Output {
    let mut child = Command::new("radclient")
        .args(["-x", "-r", "1", "-t", "8"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("auth")
        .arg(NAS_SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run radclient (apt-get install freeradius-utils)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            format!(
                "User-Name = \"{user}\"\nUser-Password = \"{code}\"\n\
                 Message-Authenticator = 0x00\n"
            )
            .as_bytes(),
        )
        .expect("write radclient stdin");
    child.wait_with_output().expect("radclient output")
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn freeradius_proxies_the_otp_realm_to_otpd_with_the_shipped_stanza() {
    require_root_and_peers();
    let (env, otpd_port) = e2e::start_with_radius("freeradius", OTPD_SECRET);
    let secret = env.enrol_active("alice");
    let freeradius = start_freeradius(otpd_port);
    let logs = |output: &Output| {
        format!(
            "{}\n--- freeradius ---\n{}\n--- otpd ---\n{}",
            describe(output),
            freeradius.log(),
            env.otpd_log()
        )
    };

    let output = radclient(freeradius.port, "alice@OTP", &wrong_code(&secret));
    assert!(
        stdout(&output).contains("Received Access-Reject"),
        "wrong code: {}",
        logs(&output)
    );

    let code = oathtool_code(&secret, 60);
    let output = radclient(freeradius.port, "alice@OTP", &code);
    assert!(
        stdout(&output).contains("Received Access-Accept") && output.status.success(),
        "right code: {}",
        logs(&output)
    );

    // otpd saw "alice" (the realm stripped) from FreeRADIUS, twice.
    e2e::assert_radius_decisions(&env, "alice", 2, "nas=freeradius addr=127.0.0.1:");
}
