//! Hardware tokens end to end: PSKC seed files written by the real
//! python3-pskc library (plain and under a pre-shared key) and the
//! examples of RFC 6030, loaded with `otpctl import --format pskc`, given
//! out with `otpctl assign`, and logging in with `oathtool --hotp` codes
//! through pamtester, radclient and `otpctl test`. Damaged, hostile and
//! wrong input loads nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use e2e::{
    assert_success, describe, pamtester, require_root_and_peers, run_with_input, start_with_radius,
    stderr, stdout, stdout_json, PamService, TestEnv, SYSTEM_PYTHON,
};
use serde_json::Value;

const RADIUS_SECRET: &str = "hotp-e2e-secret";

/// RFC 6030 figure 3: a plain HOTP key, RFC 4226's test secret, 8 digits.
const FIGURE_3: &str = include_str!("../../otpcore/src/pskc/rfc6030-figure3.xml");

/// RFC 6030 figure 6: the same token, its secret and MAC key encrypted
/// with the pre-shared key [`FIGURE_6_PSK`].
const FIGURE_6: &str = include_str!("../../otpcore/src/pskc/rfc6030-figure6.xml");
const FIGURE_6_PSK: &str = "12345678901234567890123456789012";
/// The secret of both figures, in hex.
const FIGURE_SECRET: &str = "3132333435363738393031323334353637383930";

/// Seed files freshly written by python3-pskc, and what they hold.
struct Generated {
    dir: tempfile::TempDir,
    expected: Value,
}

impl Generated {
    fn new() -> Generated {
        let dir = tempfile::tempdir().expect("temporary directory");
        let generator =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../otpcore/tests/data/pskc/generate.py");
        let output = Command::new(SYSTEM_PYTHON)
            .arg(&generator)
            .arg(dir.path())
            .output()
            .expect("run generate.py");
        assert!(
            output.status.success(),
            "generate.py ({SYSTEM_PYTHON} needs the pskc module): {}",
            describe(&output)
        );
        let text = std::fs::read_to_string(dir.path().join("expected.json")).expect("expected");
        Generated {
            expected: serde_json::from_str(&text).expect("expected.json"),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The tokens a file holds (empty for one to be refused).
    fn tokens(&self, name: &str) -> Vec<Value> {
        self.expected["files"][name]["tokens"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The first token of `name` of `kind` with SHA1 and 6 digits.
    fn token(&self, name: &str, kind: &str) -> Value {
        self.tokens(name)
            .into_iter()
            .find(|t| t["kind"] == kind && t["algorithm"] == "SHA1" && t["digits"] == 6)
            .expect("a SHA1 6-digit token")
    }
}

/// `otpctl import --format pskc FILE [--psk-file PSK]`.
fn import(env: &TestEnv, file: &Path, psk: Option<&Path>) -> Output {
    let mut args = vec!["import", "--format", "pskc"];
    let psk_arg;
    if let Some(psk) = psk {
        psk_arg = psk.display().to_string();
        args.extend(["--psk-file", psk_arg.as_str()]);
    }
    let file_arg = file.display().to_string();
    args.push(&file_arg);
    env.otpctl(&args, "")
}

/// The serial numbers that `otpctl list --unassigned --json` shows.
fn unassigned(env: &TestEnv) -> Vec<String> {
    let output = env.otpctl(&["list", "--unassigned", "--json"], "");
    assert_success(&output, "otpctl list --unassigned");
    stdout_json(&output)
        .as_array()
        .expect("an array")
        .iter()
        .map(|t| t["serial"].as_str().expect("a serial").to_owned())
        .collect()
}

/// Asserts `output` is a refusal (exit 1) whose message names `what`.
fn refused(output: &Output, what: &str) {
    assert_eq!(output.status.code(), Some(1), "{}", describe(output));
    assert!(
        stderr(output).contains(what),
        "expected {what:?}: {}",
        describe(output)
    );
}

/// `oathtool --hotp` code of `counter` for the hex secret.
fn hotp(secret_hex: &str, counter: u64, digits: u32) -> String {
    let output = Command::new("oathtool")
        .args([
            "--hotp",
            "-c",
            &counter.to_string(),
            "-d",
            &digits.to_string(),
        ])
        .arg(secret_hex)
        .output()
        .expect("oathtool");
    assert_success(&output, "oathtool --hotp");
    stdout(&output).trim().to_owned()
}

/// Whether radclient got an Access-Accept for `user` and `code`.
fn radius_accepts(port: u16, user: &str, code: &str) -> bool {
    let output = run_with_input(
        Command::new("radclient")
            .args(["-x", "-r", "1", "-t", "3"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["auth", RADIUS_SECRET]),
        &format!(
            "User-Name = \"{user}\"\nUser-Password = \"{code}\"\nMessage-Authenticator = 0x00\n"
        ),
    );
    let text = stdout(&output);
    assert!(
        text.contains("Received Access-Accept") || text.contains("Received Access-Reject"),
        "radclient got no answer: {}",
        describe(&output)
    );
    text.contains("Received Access-Accept")
}

fn pam_accepts(pam: &PamService, user: &str, code: &str) -> bool {
    let output = pam.authenticate(user, &format!("{code}\n"));
    if pamtester::ended_with(&output, pamtester::SUCCESS) {
        return true;
    }
    assert!(
        pamtester::ended_with(&output, pamtester::AUTH_ERR),
        "pamtester neither succeeded nor failed: {}",
        describe(&output)
    );
    false
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn seed_files_load_and_an_assigned_hotp_token_logs_in_everywhere() {
    require_root_and_peers();
    let (env, port) = start_with_radius("vpn", RADIUS_SECRET);
    let files = Generated::new();
    let psk = files.path("psk.hex");
    let mut loaded = Vec::new();
    for (name, psk_file) in [
        ("plain-hotp.pskc", None),
        ("plain-totp.pskc", None),
        ("psk-hotp.pskc", Some(psk.as_path())),
        ("psk-totp.pskc", Some(psk.as_path())),
        ("psk-no-mac-key.pskc", Some(psk.as_path())),
    ] {
        let output = import(&env, &files.path(name), psk_file);
        assert_success(&output, name);
        loaded.extend(
            files
                .tokens(name)
                .iter()
                .map(|t| t["serial"].as_str().expect("serial").to_owned()),
        );
    }
    for name in ["pbkdf2.pskc", "aes256.pskc", "kw-aes128.pskc"] {
        let output = import(&env, &files.path(name), Some(&psk));
        refused(&output, "nothing imported");
    }
    let figure = env.root().join("figure-3.pskc");
    std::fs::write(&figure, FIGURE_3).expect("write");
    assert_success(&import(&env, &figure, None), "RFC 6030 figure 3");
    loaded.push("987654321".to_owned());
    loaded.sort();
    assert_eq!(unassigned(&env), loaded);

    // An event-based token from the encrypted file, given to alice.
    let token = files.token("psk-hotp.pskc", "hotp");
    let serial = token["serial"].as_str().expect("serial");
    let secret = token["secret_hex"].as_str().expect("secret");
    let c = token["counter"].as_u64().expect("counter");
    assert_success(&env.otpctl(&["assign", "alice", serial], ""), "assign");
    assert!(!unassigned(&env).iter().any(|s| s == serial));
    let shown = stdout_json(&env.otpctl(&["show", "alice", "--json"], ""));
    assert_eq!(
        (&shown["kind"], &shown["serial"], &shown["counter"]),
        (&Value::from("hotp"), &Value::from(serial), &Value::from(c)),
        "{shown}"
    );

    let pam = PamService::new(&format!("socket={}", env.socket_path().display()), &[]);
    assert!(pam_accepts(&pam, "alice", &hotp(secret, c, 6)), "PAM");
    assert!(
        radius_accepts(port, "alice", &hotp(secret, c + 1, 6)),
        "RADIUS"
    );
    assert!(
        env.otpctl_test("alice", &hotp(secret, c + 2, 6)),
        "otpctl test"
    );
    // A used code is refused on every channel.
    assert!(!pam_accepts(&pam, "alice", &hotp(secret, c + 2, 6)));
    assert!(!radius_accepts(port, "alice", &hotp(secret, c + 1, 6)));
    // Ten presses nobody used are skipped over (the next counter is c + 3).
    assert!(radius_accepts(port, "alice", &hotp(secret, c + 13, 6)));
    assert!(!env.otpctl_test("alice", &hotp(secret, c + 12, 6)));
    // Eleven are beyond the look-ahead.
    assert!(!pam_accepts(&pam, "alice", &hotp(secret, c + 25, 6)));
    // Two consecutive codes resync it.
    let resync = env.otpctl(
        &[
            "resync",
            "alice",
            &hotp(secret, c + 40, 6),
            &hotp(secret, c + 41, 6),
        ],
        "",
    );
    assert_success(&resync, "otpctl resync");
    assert!(pam_accepts(&pam, "alice", &hotp(secret, c + 42, 6)));
    let shown = stdout_json(&env.otpctl(&["show", "alice", "--json"], ""));
    assert_eq!(shown["counter"], c + 43, "{shown}");

    // The RFC's figure 3 token (8 digits) and a time-based token of 60 s.
    assert_success(
        &env.otpctl(&["assign", "bob", "987654321"], ""),
        "assign figure 3",
    );
    assert!(pam_accepts(&pam, "bob", &hotp(FIGURE_SECRET, 0, 8)));
    let totp = files
        .tokens("plain-totp.pskc")
        .into_iter()
        .find(|t| t["period"] == 60 && t["algorithm"] == "SHA1" && t["drift"] == 0)
        .expect("a 60 s SHA1 token");
    let serial = totp["serial"].as_str().expect("serial");
    assert_success(&env.otpctl(&["assign", "carol", serial], ""), "assign TOTP");
    let output = Command::new("oathtool")
        .args(["--totp", "-s", "60s", "-d", "6"])
        .arg(totp["secret_hex"].as_str().expect("secret"))
        .output()
        .expect("oathtool");
    assert_success(&output, "oathtool --totp");
    let code = stdout(&output).trim().to_owned();
    assert!(radius_accepts(port, "carol", &code), "TOTP over RADIUS");

    let audit = env.otpctl(&["audit", "--json"], "");
    let text = stdout(&audit);
    assert!(text.contains("assigned, active") && text.contains("loaded, unassigned"));
    assert!(!text.contains(secret));
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_wrong_key_a_damaged_mac_or_a_taken_serial_loads_nothing() {
    require_root_and_peers();
    let env = TestEnv::start();
    let files = Generated::new();
    let figure = env.root().join("figure-3.pskc");
    std::fs::write(&figure, FIGURE_3).expect("write");
    assert_success(&import(&env, &figure, None), "figure 3");
    let before = unassigned(&env);

    let wrong_key = env.root().join("wrong.hex");
    std::fs::write(&wrong_key, "00112233445566778899aabbccddeeff\n").expect("write");
    refused(
        &import(&env, &files.path("psk-hotp.pskc"), Some(&wrong_key)),
        "wrong pre-shared key or damaged file",
    );
    refused(
        &import(&env, &files.path("psk-hotp.pskc"), None),
        "none was given",
    );
    // One MAC damaged: the file is refused as a whole.
    let text = std::fs::read_to_string(files.path("psk-hotp.pskc")).expect("read");
    let start = text.find("<pskc:ValueMAC>").expect("a ValueMAC") + "<pskc:ValueMAC>".len();
    let mut damaged = text.clone();
    let flipped = if &text[start..=start] == "A" {
        "B"
    } else {
        "A"
    };
    damaged.replace_range(start..=start, flipped);
    let damaged_file = env.root().join("damaged.pskc");
    std::fs::write(&damaged_file, damaged).expect("write");
    refused(
        &import(&env, &damaged_file, Some(&files.path("psk.hex"))),
        "wrong pre-shared key or damaged file",
    );
    for garbage in ["not a key\n", "", "0011223344556677889", &"ab".repeat(5000)] {
        let bad = env.root().join("garbage.hex");
        std::fs::write(&bad, garbage).expect("write");
        refused(
            &import(&env, &files.path("psk-hotp.pskc"), Some(&bad)),
            "32 hexadecimal digits",
        );
    }
    // Figure 6 is figure 3's token again: its serial is taken.
    let figure_6 = env.root().join("figure-6.pskc");
    std::fs::write(&figure_6, FIGURE_6).expect("write");
    let psk = env.root().join("figure-6.hex");
    std::fs::write(&psk, FIGURE_6_PSK).expect("write");
    refused(
        &import(&env, &figure_6, Some(&psk)),
        "serial \"987654321\" is already in the store",
    );
    assert_eq!(unassigned(&env), before, "nothing was loaded");

    // Usage errors: exit 2.
    for args in [
        &["import", "--format", "pskc", "--user", "x", "f"][..],
        &["import", "--format", "pskc", "--replace", "f"],
        &["import", "--format", "pskc", "f", "g"],
        &["import", "--format", "csv", "--psk-file", "k", "f"],
    ] {
        let output = env.otpctl(args, "");
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            describe(&output)
        );
    }
    assert_eq!(unassigned(&env), before);
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn hostile_seed_files_and_bad_assignments_change_nothing() {
    require_root_and_peers();
    let env = TestEnv::start();
    let figure = env.root().join("figure-3.pskc");
    std::fs::write(&figure, FIGURE_3).expect("write");
    assert_success(&import(&env, &figure, None), "figure 3");
    let before = unassigned(&env);
    let laughs = format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE KeyContainer [\n<!ENTITY lol \"lol\">\n{}]>\n\
         <KeyContainer Version=\"1.0\" xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\">&lol9;</KeyContainer>",
        (1..10)
            .map(|i| format!(
                "<!ENTITY lol{i} \"{}\">\n",
                format!("&lol{};", if i == 1 { String::new() } else { (i - 1).to_string() })
                    .repeat(10)
            ))
            .collect::<String>()
    );
    let external = "<?xml version=\"1.0\"?>\n<!DOCTYPE KeyContainer [<!ENTITY x SYSTEM \"file:///etc/shadow\">]>\n\
        <KeyContainer Version=\"1.0\" xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\">&x;</KeyContainer>";
    let huge = format!(
        "<?xml version=\"1.0\"?><KeyContainer Version=\"1.0\" xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\">{}</KeyContainer>",
        " ".repeat(9 * 1024 * 1024)
    );
    let truncated = &FIGURE_3[..FIGURE_3.len() / 2];
    for (name, text, what) in [
        ("laughs.pskc", laughs.as_str(), "nothing imported"),
        ("external.pskc", external, "nothing imported"),
        ("huge.pskc", huge.as_str(), "larger than 8 MiB"),
        ("truncated.pskc", truncated, "nothing imported"),
        ("empty.pskc", "", "nothing imported"),
    ] {
        let path = env.root().join(name);
        std::fs::write(&path, text).expect("write");
        let output = import(&env, &path, None);
        refused(&output, what);
        assert!(!stderr(&output).contains("root:"), "{}", describe(&output));
    }
    refused(
        &import(&env, &env.root().join("missing.pskc"), None),
        "nothing imported",
    );
    assert_eq!(unassigned(&env), before, "nothing was loaded");

    refused(
        &env.otpctl(&["assign", "alice", "NO-SUCH-SERIAL"], ""),
        "no token has serial",
    );
    refused(
        &env.otpctl(&["assign", "bad user", "987654321"], ""),
        "user name",
    );
    assert_eq!(unassigned(&env), before);
    // Alice gets it; then nobody else can, and she cannot get a second one
    // without --replace.
    assert_success(&env.otpctl(&["assign", "alice", "987654321"], ""), "assign");
    refused(
        &env.otpctl(&["assign", "bob", "987654321"], ""),
        "already assigned (to alice)",
    );
    let other = FIGURE_3.replace("987654321", "987654322");
    std::fs::write(&figure, other).expect("write");
    assert_success(&import(&env, &figure, None), "a second token");
    refused(
        &env.otpctl(&["assign", "alice", "987654322"], ""),
        "already has an active token",
    );
    assert_eq!(unassigned(&env), ["987654322"]);
    assert_success(
        &env.otpctl(&["assign", "--replace", "alice", "987654322"], ""),
        "assign --replace",
    );
    let shown = stdout_json(&env.otpctl(&["show", "alice", "--json"], ""));
    assert_eq!(shown["serial"], "987654322", "{shown}");
    assert!(unassigned(&env).is_empty());
    let listed = stdout(&env.otpctl(&["list"], ""));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("alice ") && l.contains(" active ") && l.contains(" hotp ")),
        "{listed}"
    );
}
