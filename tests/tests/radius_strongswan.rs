//! strongSwan in front of otpd (conf/radius/strongswan-eap-radius.conf):
//! an IKEv2 client logs in with EAP-GTC (user name + one-time code) to a
//! strongSwan gateway whose `eap-gtc` plugin checks the code through the
//! `radius` XAuth backend of the `eap-radius` plugin, which sends otpd a PAP
//! Access-Request. Two charon daemons, each in a network namespace this test
//! creates (a veth pair with 198.51.100.0/24 addresses, no route anywhere
//! else); otpd runs in the gateway's namespace on its own loopback. The
//! test re-runs itself inside the gateway namespace (`ip netns exec`), so
//! the daemon, the gateway charon and the assertions all share its network.
//! Each charon gets its own /run (its pid file is fixed) via `unshare -m`.
//!
//! Needs `strongswan-charon strongswan-swanctl libcharon-extra-plugins`
//! (eap-gtc, eap-radius, eap-identity, kernel-libipsec) and iproute2. ESP
//! runs in userspace (kernel-libipsec): the test kernel may lack ESP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::{assert_success, describe, oathtool_code, require_root_and_peers, stdout, wrong_code};

const TEST_NAME: &str = "strongswan_gateway_checks_the_code_with_otpd_over_radius";
/// Set (to the client's namespace) when this test runs inside the gateway
/// namespace.
const INSIDE: &str = "OTPD_E2E_STRONGSWAN_NETNS";
const CHARON: &str = "/usr/lib/ipsec/charon";

const GW_ADDR: &str = "198.51.100.1";
const CLIENT_ADDR: &str = "198.51.100.2";
/// The network behind the gateway, and the client's virtual IP: neither
/// holds an IKE address, so the userspace ESP of kernel-libipsec (the test
/// kernel may lack ESP) never captures IKE traffic.
const PROTECTED: &str = "198.51.100.128/26";
const CLIENT_VIP: &str = "198.51.100.200";
const GW_INNER: &str = "198.51.100.129";
const RADIUS_SECRET: &str = "e2e-strongswan-radius-secret";
const IKE_PSK: &str = "e2e-strongswan-ike-psk-0123456789";

const PLUGINS: &str = "random nonce pem pkcs1 x509 pubkey hmac md5 sha1 sha2 aes gmp kdf \
                       kernel-libipsec kernel-netlink socket-default vici eap-identity eap-gtc eap-radius";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

fn ip(args: &[&str]) {
    let output = run("ip", args);
    assert_success(&output, &format!("ip {args:?}"));
}

/// Two namespaces joined by a veth pair; deleted on drop.
struct Namespaces {
    gw: String,
    client: String,
}

impl Namespaces {
    fn create() -> Namespaces {
        let id = std::process::id();
        let nets = Namespaces {
            gw: format!("otpd-e2e-sw-gw-{id}"),
            client: format!("otpd-e2e-sw-cl-{id}"),
        };
        let (veth_gw, veth_client) = (
            format!("osw{}g", id % 100_000),
            format!("osw{}c", id % 100_000),
        );
        ip(&["netns", "add", &nets.gw]);
        ip(&["netns", "add", &nets.client]);
        ip(&[
            "link",
            "add",
            &veth_gw,
            "netns",
            &nets.gw,
            "type",
            "veth",
            "peer",
            "name",
            &veth_client,
            "netns",
            &nets.client,
        ]);
        for (ns, dev, addr) in [
            (&nets.gw, &veth_gw, GW_ADDR),
            (&nets.client, &veth_client, CLIENT_ADDR),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        // The gateway's own address in the network it protects.
        ip(&[
            "-n",
            &nets.gw,
            "addr",
            "add",
            &format!("{GW_INNER}/32"),
            "dev",
            "lo",
        ]);
        nets
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and so both.
        let _ = run("ip", &["netns", "del", &self.client]);
        let _ = run("ip", &["netns", "del", &self.gw]);
    }
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn strongswan_gateway_checks_the_code_with_otpd_over_radius() {
    require_root_and_peers();
    if let Ok(names) = std::env::var(INSIDE) {
        inside_gateway_namespace(&names);
        return;
    }
    let nets = Namespaces::create();
    let exe = std::env::current_exe().expect("current_exe");
    let output = Command::new("ip")
        .args(["netns", "exec", &nets.gw])
        .arg(exe)
        .args([
            "--exact",
            TEST_NAME,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INSIDE, &nets.client)
        .stdin(Stdio::null())
        .output()
        .expect("ip netns exec");
    assert!(
        output.status.success() && stdout(&output).contains("1 passed"),
        "the test inside the gateway namespace: {}",
        describe(&output)
    );
}

/// One charon with its own strongswan.conf, vici socket and /run; killed on
/// drop.
struct Charon {
    child: Child,
    dir: PathBuf,
}

impl Charon {
    /// `plugins` goes inside `charon.plugins { }`; `netns` runs the daemon
    /// in another namespace.
    fn start(dir: &Path, netns: Option<&str>, plugins: &str) -> Charon {
        fs::create_dir_all(dir.join("run")).expect("run dir");
        let conf = dir.join("strongswan.conf");
        fs::write(
            &conf,
            format!(
                r#"charon {{
    load = {PLUGINS}
    install_routes = no
    retransmit_tries = 2
    retransmit_timeout = 2.0
    filelog {{
        log {{
            path = {log}
            default = 1
            ike = 2
            cfg = 2
            chd = 2
            knl = 2
            time_format = %T
            flush_line = yes
        }}
    }}
    plugins {{
        vici {{
            socket = unix://{vici}
        }}
{plugins}
    }}
}}
swanctl {{
    socket = unix://{vici}
}}
"#,
                log = dir.join("charon.log").display(),
                vici = dir.join("charon.vici").display(),
            ),
        )
        .expect("strongswan.conf");
        let script = format!(
            "mount --bind {} /run && exec {CHARON}",
            dir.join("run").display()
        );
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "unshare", "-m", "sh", "-c", &script]);
                c
            }
            None => {
                let mut c = Command::new("unshare");
                c.args(["-m", "sh", "-c", &script]);
                c
            }
        };
        let child = command
            .env("STRONGSWAN_CONF", &conf)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("charon.out")).expect("out"))
            .stderr(fs::File::create(dir.join("charon.err")).expect("err"))
            .spawn()
            .expect("start charon (apt-get install strongswan-charon strongswan-swanctl libcharon-extra-plugins)");
        let mut charon = Charon {
            child,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if charon.swanctl(&["--stats"]).status.success() {
                return charon;
            }
            if let Some(status) = charon.child.try_wait().expect("try_wait") {
                panic!("charon exited with {status}:\n{}", charon.logs());
            }
            assert!(
                Instant::now() < deadline,
                "charon not ready after 15 s:\n{}",
                charon.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        ["charon.err", "charon.log"]
            .iter()
            .map(|f| fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `swanctl ARGS --uri` this charon's vici socket (Unix sockets work
    /// across network namespaces).
    fn swanctl(&self, args: &[&str]) -> Output {
        let uri = format!("unix://{}", self.dir.join("charon.vici").display());
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--uri", &uri]);
        run("swanctl", &all)
    }

    /// `swanctl --load-all --file` with `swanctl_conf`.
    fn load(&self, name: &str, swanctl_conf: &str) {
        let file = self.dir.join(name);
        fs::write(&file, swanctl_conf).expect("swanctl.conf");
        let output = self.swanctl(&[
            "--load-all",
            "--noprompt",
            "--file",
            file.to_str().expect("utf-8"),
        ]);
        assert_success(&output, &format!("swanctl --load-all {name}"));
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped example with `address`, `auth_port` and `secret` pointed at
/// otpd; nothing else changes.
fn shipped_eap_radius_conf(otpd_port: u16) -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/radius/strongswan-eap-radius.conf");
    let mut text = fs::read_to_string(&path).expect("conf/radius/strongswan-eap-radius.conf");
    for (placeholder, value) in [
        ("address = 192.0.2.20", "address = 127.0.0.1".to_owned()),
        ("auth_port = 1812", format!("auth_port = {otpd_port}")),
        ("secret = change-me", format!("secret = {RADIUS_SECRET}")),
    ] {
        assert_eq!(
            text.matches(placeholder).count(),
            1,
            "the shipped eap-radius.conf should hold `{placeholder}` once"
        );
        text = text.replace(placeholder, &value);
    }
    text
}

fn gateway_swanctl_conf() -> String {
    format!(
        r#"connections {{
    otp {{
        version = 2
        local_addrs = {GW_ADDR}
        pools = clients
        local {{
            auth = psk
            id = gw.otp.example
        }}
        remote {{
            auth = eap-gtc
            eap_id = %any
        }}
        children {{
            otp {{
                local_ts = {PROTECTED}
                # libipsec (userspace ESP): no AES-GCM without the gcm plugin
                esp_proposals = aes128-sha256
            }}
        }}
    }}
}}
pools {{
    clients {{
        addrs = {CLIENT_VIP}/32
    }}
}}
secrets {{
    ike-gw {{
        id = gw.otp.example
        secret = "{IKE_PSK}"
    }}
}}
"#
    )
}

fn client_swanctl_conf(user: &str, code: &str) -> String {
    format!(
        r#"connections {{
    otp {{
        version = 2
        local_addrs = {CLIENT_ADDR}
        remote_addrs = {GW_ADDR}
        vips = 0.0.0.0
        local {{
            auth = eap-gtc
            id = {user}
        }}
        remote {{
            auth = psk
            id = gw.otp.example
        }}
        children {{
            otp {{
                remote_ts = {PROTECTED}
                # libipsec (userspace ESP): no AES-GCM without the gcm plugin
                esp_proposals = aes128-sha256
            }}
        }}
    }}
}}
secrets {{
    ike-gw {{
        id = gw.otp.example
        secret = "{IKE_PSK}"
    }}
    eap-user {{
        id = {user}
        secret = "{code}"
    }}
}}
"#
    )
}

fn inside_gateway_namespace(client_ns: &str) {
    let (env, otpd_port) = e2e::start_with_radius("strongswan", RADIUS_SECRET);
    let secret = env.enrol_active("alice");

    // The gateway: eap-gtc checks passwords with the eap-radius plugin's
    // XAuth backend, configured by the shipped file.
    let gateway = Charon::start(
        &env.root().join("gateway"),
        None,
        &shipped_eap_radius_conf(otpd_port),
    );
    gateway.load("swanctl.conf", &gateway_swanctl_conf());
    let client = Charon::start(&env.root().join("client"), Some(client_ns), "");

    let logs = |output: &Output| {
        // Let both daemons finish writing what led here.
        std::thread::sleep(Duration::from_secs(1));
        format!(
            "{}\n--- gateway charon ---\n{}\n--- client charon ---\n{}\n--- otpd ---\n{}",
            describe(output),
            gateway.logs(),
            client.logs(),
            env.otpd_log()
        )
    };
    let initiate = || client.swanctl(&["--initiate", "--child", "otp", "--timeout", "20"]);

    // A wrong code: no SA.
    client.load(
        "wrong.conf",
        &client_swanctl_conf("alice", &wrong_code(&secret)),
    );
    let output = initiate();
    assert!(!output.status.success(), "wrong code: {}", logs(&output));
    let sas = gateway.swanctl(&["--list-sas"]);
    assert!(
        !stdout(&sas).contains("ESTABLISHED"),
        "no SA after a wrong code: {}",
        logs(&sas)
    );
    // ... because otpd rejected it, not because IKE failed elsewhere.
    let radius = e2e::radius_audit(&env);
    assert!(
        radius.len() == 1 && radius[0]["user"] == "alice" && radius[0]["result"] != "ok",
        "otpd should have rejected alice once over RADIUS: {radius:#?}\n{}",
        logs(&output)
    );

    // The right code: the IKE SA and the CHILD_SA come up.
    let code = oathtool_code(&secret, 60);
    client.load("right.conf", &client_swanctl_conf("alice", &code));
    let output = initiate();
    assert!(output.status.success(), "right code: {}", logs(&output));
    for (who, charon) in [("gateway", &gateway), ("client", &client)] {
        let sas = charon.swanctl(&["--list-sas"]);
        let text = stdout(&sas);
        assert!(
            text.contains("ESTABLISHED") && text.contains("INSTALLED"),
            "{who} --list-sas: {}",
            logs(&sas)
        );
    }
    let sas = stdout(&gateway.swanctl(&["--list-sas"]));
    assert!(sas.contains("alice"), "gateway SA names alice: {sas}");

    // The tunnel carries traffic: the client, from its virtual IP, reaches
    // a listener on the gateway's inner address.
    let listener = std::net::TcpListener::bind((GW_INNER, 0)).expect("listen on the inner address");
    let port = listener.local_addr().expect("local_addr").port();
    let connect = run(
        "ip",
        &[
            "netns",
            "exec",
            client_ns,
            "timeout",
            "10",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{GW_INNER}/{port} && echo through >&3"),
        ],
    );
    assert!(
        connect.status.success(),
        "through the tunnel: {}",
        logs(&connect)
    );
    let (mut stream, peer) = listener.accept().expect("accept");
    assert_eq!(peer.ip().to_string(), CLIENT_VIP, "the client's virtual IP");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stream, &mut text).expect("read");
    assert_eq!(text, "through\n");
    let sas = stdout(&gateway.swanctl(&["--list-sas"]));
    let packets_in: u64 = sas
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("in "))
        .filter_map(|line| {
            let before = line.split(" packets").next()?;
            before.rsplit(' ').next()?.parse::<u64>().ok()
        })
        .sum();
    assert!(packets_in > 0, "ESP packets into the gateway: {sas}");

    // otpd answered charon twice over RADIUS: one reject, one accept.
    e2e::assert_radius_decisions(&env, "alice", 2, "nas=strongswan addr=127.0.0.1:");
}
