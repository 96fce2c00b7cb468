//! Harness of the end-to-end tests: the built `otpd` and `otpctl` binaries
//! against real peers (aiosmtpd as the mail server, oathtool as the phone,
//! the sqlite3 CLI to age a link).
//!
//! Each test builds its own [`TestEnv`]: a temp dir, free loopback ports, a
//! config file, an SMTP server and a daemon, all torn down on drop, so tests
//! run in parallel. The tests run as root only (CI runs them as root through
//! `tests/run-all.sh`); elsewhere [`e2e_enabled`] prints "skipped: not root".
//! As root, a missing peer is a failure, not a skip.

// A failed expectation in a test harness is a test failure: panicking with a
// message is the point here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// The service ID written into every test config.
pub const SERVICE_ID: &str = "TESTSVC";
/// Debian's python3, which has python3-aiosmtpd (not a pyenv shim on PATH).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";
/// Debian packages the peers come from, for error messages.
const PEER_PACKAGES: &str = "python3-aiosmtpd oathtool sqlite3 expect chromium chromium-driver";

/// How long a started server may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one otpctl run or HTTP request may take (argon2id is slow by
/// design, and tests run in parallel on two cores).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Whether to run, and with what

/// Whether the end-to-end tests run here: only as root (they start servers
/// and, in later suites, touch /etc/pam.d). Not root: prints
/// "skipped: not root" and returns false. Root: the peers must be installed,
/// and their absence panics with the packages to install.
pub fn e2e_enabled() -> bool {
    let uid = fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    if uid != 0 {
        eprintln!("skipped: not root (run tests/run-all.sh as root for the end-to-end tests)");
        return false;
    }
    require_peers();
    true
}

fn require_peers() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        let mut missing = Vec::new();
        let aiosmtpd = Command::new(SYSTEM_PYTHON)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(aiosmtpd, Ok(s) if s.success()) {
            missing.push(format!("aiosmtpd for {SYSTEM_PYTHON} (python3-aiosmtpd)"));
        }
        for (tool, flag) in [
            ("oathtool", "--version"),
            ("sqlite3", "--version"),
            ("expect", "-v"),
            ("chromedriver", "--version"),
            ("chromium", "--version"),
        ] {
            let ok = Command::new(tool)
                .arg(flag)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                missing.push(tool.to_owned());
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "end-to-end tests run as root need their peers, missing: {}; \
                 install them with `apt-get install {PEER_PACKAGES}` (tests/run-all.sh does)",
                missing.join(", ")
            ))
        }
    });
    if let Err(message) = result {
        panic!("{message}");
    }
}

/// The `otpd` binary: `$OTPD_BIN`, or `target/debug/otpd` beside this test.
pub fn otpd_bin() -> PathBuf {
    built_binary("OTPD_BIN", "otpd")
}

/// The `otpctl` binary: `$OTPCTL_BIN`, or `target/debug/otpctl`.
pub fn otpctl_bin() -> PathBuf {
    built_binary("OTPCTL_BIN", "otpctl")
}

fn built_binary(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{var}={} is not a file", path.display());
        return path;
    }
    // The test runs as <target>/debug/deps/enrolment-HASH; the programs are
    // <target>/debug/otpd and <target>/debug/otpctl.
    let exe = std::env::current_exe().expect("current_exe");
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} is not built (looked at {candidates:?}); run `cargo build --workspace` \
                 first or set {var}"
            )
        })
}

// ---------------------------------------------------------------------------
// Ports and processes

/// A loopback TCP port that was free a moment ago and that no other test of
/// this process has been given.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Waits for `child` at most `timeout`; kills it and panics past that.
fn wait_or_kill(child: &mut Child, timeout: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stdout and stderr of a finished command, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Panics unless `output` exited 0.
pub fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        describe(output)
    );
}

/// Stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Stdout parsed as one JSON value.
pub fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", describe(output)))
}

// ---------------------------------------------------------------------------
// HTTP client (raw HTTP/1.1 over TcpStream, one request per connection)

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, or the body text as a JSON string when it is not
    /// JSON (so assertions show what came).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| Value::String(self.text()))
    }

    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request to 127.0.0.1:`port` and reads the whole answer.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(RUN_TIMEOUT))?;
    stream.set_write_timeout(Some(RUN_TIMEOUT))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Accept: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_http_response(&raw)
}

fn bad(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

fn parse_http_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            bad(format!(
                "no end of headers in {:?}",
                String::from_utf8_lossy(raw)
            ))
        })?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body =
        if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            dechunk(rest)?
        } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
            rest.get(..len)
                .ok_or_else(|| bad(format!("body shorter than Content-Length {len}")))?
                .to_vec()
        } else {
            rest.to_vec()
        };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("unterminated chunk size".to_owned()))?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| bad(format!("bad chunk size {size_text:?}")))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data
            .get(..size)
            .ok_or_else(|| bad("truncated chunk".to_owned()))?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

// ---------------------------------------------------------------------------
// Mail

/// One mail that the SMTP server stored, with headers and text decoded.
#[derive(Debug, Clone)]
pub struct Mail {
    /// File name in the Maildir.
    pub file: String,
    /// Subject with RFC 2047 words decoded.
    pub subject: String,
    /// Headers in order, values decoded.
    pub headers: Vec<(String, String)>,
    /// All text parts, transfer-decoded (quoted-printable, base64) and
    /// charset-decoded, joined by newlines.
    pub body: String,
    /// Charsets of the text parts.
    pub charsets: Vec<String>,
    /// The message as stored (UTF-8, lossily).
    pub raw: String,
}

impl Mail {
    /// A header's decoded value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Subject, decoded body and raw text together, for "appears anywhere"
    /// and "appears nowhere" checks.
    pub fn everything(&self) -> String {
        format!("{}\n{}\n{}", self.subject, self.body, self.raw)
    }
}

const READ_MAILDIR_PY: &str = r#"
import email, email.policy, json, os, sys
root = sys.argv[1]
out = []
for sub in ("new", "cur"):
    d = os.path.join(root, sub)
    if not os.path.isdir(d):
        continue
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb") as f:
            raw = f.read()
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        texts, charsets = [], []
        for part in msg.walk():
            if part.get_content_maintype() == "text" and not part.is_multipart():
                texts.append(part.get_content())
                charsets.append(part.get_content_charset() or "")
        headers = []
        for k, v in msg.raw_items():
            try:
                v = str(msg.policy.header_factory(k, v))
            except Exception:
                pass
            headers.append([k, v])
        out.append({
            "file": name,
            "subject": str(msg.get("subject", "")),
            "headers": headers,
            "body": "\n".join(texts),
            "charsets": charsets,
            "raw": raw.decode("utf-8", "replace"),
        })
json.dump(out, sys.stdout)
"#;

/// Reads every mail of a Maildir (decoded by Python's `email` package).
pub fn read_maildir(maildir: &Path) -> Vec<Mail> {
    let output = Command::new(SYSTEM_PYTHON)
        .arg("-c")
        .arg(READ_MAILDIR_PY)
        .arg(maildir)
        .output()
        .expect("run python3 to read the Maildir");
    assert_success(&output, "reading the Maildir");
    let value = stdout_json(&output);
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_owned();
    value
        .as_array()
        .expect("array of mails")
        .iter()
        .map(|m| Mail {
            file: text(m, "file"),
            subject: text(m, "subject"),
            headers: m["headers"]
                .as_array()
                .map(|hs| hs.iter().map(|h| (text_at(h, 0), text_at(h, 1))).collect())
                .unwrap_or_default(),
            body: text(m, "body"),
            charsets: m["charsets"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .map(|c| c.as_str().unwrap_or_default().to_owned())
                        .collect()
                })
                .unwrap_or_default(),
            raw: text(m, "raw"),
        })
        .collect()
}

fn text_at(v: &Value, i: usize) -> String {
    v[i].as_str().unwrap_or_default().to_owned()
}

// ---------------------------------------------------------------------------
// The SMTP server

/// aiosmtpd on a loopback port, storing every mail in a Maildir; killed on
/// drop.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    pub maildir: PathBuf,
}

impl SmtpServer {
    /// Starts `/usr/bin/python3 -m aiosmtpd -n -l 127.0.0.1:PORT -c
    /// aiosmtpd.handlers.Mailbox MAILDIR`, its stderr to `log`, and waits
    /// until it greets with 220.
    pub fn start(port: u16, maildir: &Path, log: &Path) -> SmtpServer {
        let child = Command::new(SYSTEM_PYTHON)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log).expect("aiosmtpd log file"))
            .spawn()
            .expect("start aiosmtpd");
        let mut server = SmtpServer {
            child,
            port,
            maildir: maildir.to_owned(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut banner = [0u8; 3];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"220" {
                    let _ = stream.write_all(b"QUIT\r\n");
                    return server;
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "aiosmtpd exited with {status} before accepting connections:\n{}",
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not accept connections on port {port} within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The mails stored so far.
    pub fn mails(&self) -> Vec<Mail> {
        if !self.maildir.exists() {
            return Vec::new();
        }
        read_maildir(&self.maildir)
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// TOTP through oathtool (the phone)

/// Normalises a base32 secret for oathtool: no spaces or hyphens, upper
/// case, padded to a multiple of eight characters.
pub fn normalize_base32(secret: &str) -> String {
    let mut s: String = secret
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '='))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let padding = (8 - s.len() % 8) % 8;
    for _ in 0..padding {
        s.push('=');
    }
    s
}

/// The current TOTP code (SHA1, 6 digits) for `secret` with a `period` of
/// 60 or 30 seconds, as `oathtool --totp=SHA1 -s PERIOD -b SECRET` prints it.
pub fn oathtool_code(secret: &str, period: u64) -> String {
    oathtool_code_at(secret, period, now_unix())
}

/// A 6-digit code that is neither the current 60-second nor the current
/// 30-second code of `secret`.
pub fn wrong_code(secret: &str) -> String {
    let right60 = oathtool_code(secret, 60);
    let right30 = oathtool_code(secret, 30);
    (1..10u8)
        .map(|shift| {
            right60
                .bytes()
                .map(|b| char::from(b'0' + (b - b'0' + shift) % 10))
                .collect::<String>()
        })
        .find(|c| *c != right60 && *c != right30)
        .expect("some shifted code differs")
}

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sleeps into the next time step when fewer than 4 seconds of the current
/// `period`-second step remain, so a code computed now is still current
/// when the daemon checks it.
pub fn wait_for_fresh_step(period: u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let into = now % period as f64;
    if into > period as f64 - 4.0 {
        std::thread::sleep(Duration::from_secs_f64(period as f64 - into + 0.5));
    }
}

/// Parses an RFC 3339 UTC time (`2026-11-27T20:00:00Z`, optionally with
/// fractional seconds or `+00:00`) into seconds since the epoch.
pub fn parse_rfc3339_utc(text: &str) -> Option<i64> {
    let (date, time) = text.split_once(['T', 't'])?;
    let time = time
        .strip_suffix(['Z', 'z'])
        .or_else(|| time.strip_suffix("+00:00"))?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

// ---------------------------------------------------------------------------
// Text checks

/// A user ID in groups of four digits joined by `sep`.
pub fn grouped(user_id: &str, sep: &str) -> String {
    user_id
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(sep)
}

/// Whether `text` shows the user ID, plain or in groups of four.
pub fn shows_user_id(text: &str, user_id: &str) -> bool {
    text.contains(user_id)
        || text.contains(&grouped(user_id, "-"))
        || text.contains(&grouped(user_id, " "))
}

/// Whether `digits` occurs in `text` as a run of digits of its own (not
/// inside a longer number), once the user ID's forms are taken out.
pub fn shows_digits(text: &str, digits: &str, user_id: &str) -> bool {
    let mut text = text.to_owned();
    for form in [
        grouped(user_id, "-"),
        grouped(user_id, " "),
        user_id.to_owned(),
    ] {
        text = text.replace(&form, " ");
    }
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(pos) = text[start..].find(digits) {
        let at = start + pos;
        let end = at + digits.len();
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(end).copied();
        if !before.is_some_and(|b| b.is_ascii_digit()) && !after.is_some_and(|b| b.is_ascii_digit())
        {
            return true;
        }
        start = at + 1;
    }
    false
}

/// Panics if an HTTP answer carries a secret.
pub fn assert_no_secret(body: &Value, what: &str) {
    assert!(
        body.get("secret").is_none() && body.get("otpauth_uri").is_none(),
        "{what} must not carry a secret: {body}"
    );
    assert!(
        !body.to_string().contains("otpauth://"),
        "{what} must not carry a secret: {body}"
    );
}

/// The enrolments of `otpctl list --json`, whether it prints an array or
/// an object holding one.
pub fn enrolment_array(value: &Value) -> Vec<Value> {
    if let Some(items) = value.as_array() {
        return items.clone();
    }
    if let Some(object) = value.as_object() {
        if let Some(items) = object.values().find_map(|v| v.as_array()) {
            return items.clone();
        }
        if object.is_empty() {
            return Vec::new();
        }
    }
    panic!("otpctl list --json printed neither an array nor an object holding one: {value}");
}

// ---------------------------------------------------------------------------
// The environment of one test

/// What to start.
#[derive(Debug, Clone)]
pub struct EnvOptions {
    /// Start aiosmtpd; false leaves the mail port closed ("SMTP down").
    pub smtp: bool,
    /// `[mail] language`; `None` keeps the default.
    pub language: Option<&'static str>,
    /// TOML appended to the config (whole tables, e.g. `[policy]`).
    pub extra_toml: String,
    /// Lines added to the config's `[socket]` table (e.g.
    /// `allowed_groups = ["wheel"]`); empty by default.
    pub socket_toml: String,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            smtp: true,
            language: None,
            extra_toml: String::new(),
            socket_toml: String::new(),
        }
    }
}

/// What `otpctl issue --json` answered.
#[derive(Debug, Clone)]
pub struct Issued {
    pub user: String,
    pub email: String,
    pub user_id: String,
    pub setup_url: String,
    pub json: Value,
}

/// What a successful activation delivered.
#[derive(Debug, Clone)]
pub struct Token {
    pub otpauth_uri: String,
    pub secret: String,
    pub json: Value,
}

/// A temp dir with a config, an SMTP server (aiosmtpd into a Maildir) and a
/// running `otpd`; both servers are killed on drop.
pub struct TestEnv {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    /// The config file (mode 0600).
    pub config: PathBuf,
    /// `state_dir` of the config.
    pub state_dir: PathBuf,
    /// Where aiosmtpd stores mails.
    pub maildir: PathBuf,
    pub http_port: u16,
    pub smtp_port: u16,
    smtp: Option<SmtpServer>,
    otpd: Option<Child>,
    runs: AtomicU32,
}

impl TestEnv {
    /// SMTP server and daemon with the default options.
    pub fn start() -> TestEnv {
        TestEnv::start_with(EnvOptions::default())
    }

    /// SMTP server (unless `options.smtp` is false) and daemon.
    pub fn start_with(options: EnvOptions) -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("otpd-e2e-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().to_owned();
        let state_dir = root.join("state");
        fs::create_dir(&state_dir).expect("state dir");
        let maildir = root.join("maildir");
        let http_port = free_port();
        let smtp_port = free_port();
        let config = root.join("otpd.toml");
        let language = options
            .language
            .map(|l| format!("language = \"{l}\"\n"))
            .unwrap_or_default();
        let text = format!(
            r#"service_id = "{SERVICE_ID}"
issuer = "otpd e2e"
state_dir = "{state}"

[socket]
path = "{socket}"
mode = "0660"
{socket_extra}
[http]
listen = "127.0.0.1:{http_port}"
public_url = "http://127.0.0.1:{http_port}"

[mail]
from = "OTP <no-reply@otp-auth.example>"
transport = "smtp"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
starttls = "none"
smtp_timeout_seconds = 10
{language}
{extra}
"#,
            state = state_dir.display(),
            socket = root.join("otpd.sock").display(),
            extra = options.extra_toml,
            socket_extra = options.socket_toml,
        );
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&config)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("write otpd.toml");

        let mut env = TestEnv {
            dir: Some(dir),
            root,
            config,
            state_dir,
            maildir,
            http_port,
            smtp_port,
            smtp: None,
            otpd: None,
            runs: AtomicU32::new(0),
        };
        if options.smtp {
            env.smtp = Some(SmtpServer::start(
                env.smtp_port,
                &env.maildir,
                &env.root.join("smtp.err"),
            ));
        }
        env.start_otpd();
        env
    }

    /// The temp dir everything lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `http://127.0.0.1:PORT`, as in the config's `public_url`.
    pub fn public_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn log_file(&self, name: &str) -> File {
        File::create(self.root.join(name)).expect("log file")
    }

    fn start_otpd(&mut self) {
        let child = Command::new(otpd_bin())
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(self.log_file("otpd.out"))
            .stderr(self.log_file("otpd.log"))
            .spawn()
            .expect("start otpd");
        self.otpd = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(response) = http_request(self.http_port, "GET", "/healthz", None, b"") {
                if response.status == 200 {
                    return;
                }
            }
            if let Some(status) = self.otpd.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "otpd exited with {status} before answering /healthz:\n{}",
                    self.otpd_log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "otpd did not answer GET /healthz on port {} within {START_TIMEOUT:?}:\n{}",
                self.http_port,
                self.otpd_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn read_log(&self, name: &str) -> String {
        fs::read_to_string(self.root.join(name)).unwrap_or_default()
    }

    /// What otpd wrote to stderr so far.
    pub fn otpd_log(&self) -> String {
        self.read_log("otpd.log")
    }

    /// Runs `otpctl --config CONFIG ARGS...` with `stdin` as its standard
    /// input (not a terminal).
    pub fn otpctl(&self, args: &[&str], stdin: &str) -> Output {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let out_path = self.root.join(format!("otpctl-{n}.out"));
        let err_path = self.root.join(format!("otpctl-{n}.err"));
        let mut child = Command::new(otpctl_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(File::create(&out_path).expect("otpctl stdout file"))
            .stderr(File::create(&err_path).expect("otpctl stderr file"))
            .spawn()
            .expect("start otpctl");
        if let Some(mut input) = child.stdin.take() {
            // otpctl may exit before reading (a usage error): ignore EPIPE.
            let _ = input.write_all(stdin.as_bytes());
        }
        let status = wait_or_kill(&mut child, RUN_TIMEOUT, &format!("otpctl {args:?}"));
        Output {
            status,
            stdout: fs::read(&out_path).unwrap_or_default(),
            stderr: fs::read(&err_path).unwrap_or_default(),
        }
    }

    /// `otpctl issue USER --email EMAIL --json --no-wait` with the activation
    /// password on stdin; checks the JSON contract and that neither output
    /// shows the password.
    pub fn issue(&self, user: &str, email: &str, password: &str) -> Issued {
        let output = self.otpctl(
            &["issue", user, "--email", email, "--json", "--no-wait"],
            &format!("{password}\n"),
        );
        assert_success(&output, "otpctl issue");
        let json = stdout_json(&output);
        let field = |key: &str| -> String {
            json[key]
                .as_str()
                .unwrap_or_else(|| panic!("issue --json lacks string {key:?}: {json}"))
                .to_owned()
        };
        assert_eq!(field("user"), user, "{json}");
        assert_eq!(field("email"), email, "{json}");
        assert_eq!(field("service_id"), SERVICE_ID, "{json}");
        assert_eq!(field("state"), "issued", "{json}");
        let user_id = field("user_id");
        assert!(
            user_id.len() == 14 && user_id.bytes().all(|b| b.is_ascii_digit()),
            "user_id must be 14 digits without hyphens: {json}"
        );
        let setup_url = field("setup_url");
        assert_eq!(
            setup_url,
            format!("{}/setup?sid={SERVICE_ID}&uid={user_id}", self.public_url()),
            "{json}"
        );
        let expires_at = field("expires_at");
        let expires = parse_rfc3339_utc(&expires_at)
            .unwrap_or_else(|| panic!("expires_at is not RFC 3339 UTC: {json}"));
        let expected = now_unix() as i64 + 72 * 3600;
        assert!(
            (expires - expected).abs() < 600,
            "expires_at should be about 72 hours from now: {json}"
        );
        for (name, text) in [("stdout", stdout(&output)), ("stderr", stderr(&output))] {
            assert!(
                !shows_digits(&text, password, &user_id),
                "otpctl issue printed the activation password on {name}: {}",
                describe(&output)
            );
        }
        Issued {
            user: user.to_owned(),
            email: email.to_owned(),
            user_id,
            setup_url,
            json,
        }
    }

    /// `otpctl show USER --json`.
    pub fn show(&self, user: &str) -> Value {
        let output = self.otpctl(&["show", user, "--json"], "");
        assert_success(&output, "otpctl show");
        stdout_json(&output)
    }

    /// The enrolments of `otpctl list --json`.
    pub fn list(&self) -> Vec<Value> {
        let output = self.otpctl(&["list", "--json"], "");
        assert_success(&output, "otpctl list");
        enrolment_array(&stdout_json(&output))
    }

    /// GET `path`; status and body text.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let r = http_request(self.http_port, "GET", path, None, b"")
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.otpd_log()));
        (r.status, r.text())
    }

    /// POST `body` with `content_type` to `path`; status and body text.
    pub fn http_post_raw(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        let r = http_request(self.http_port, "POST", path, Some(content_type), body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", self.otpd_log()));
        (r.status, r.text())
    }

    /// POST `json` to `path`; status and JSON body (a JSON string holding
    /// the text when the body is not JSON).
    pub fn http_post_json(&self, path: &str, json: &Value) -> (u16, Value) {
        let r = http_request(
            self.http_port,
            "POST",
            path,
            Some("application/json"),
            json.to_string().as_bytes(),
        )
        .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", self.otpd_log()));
        (r.status, r.json())
    }

    /// POST /api/v1/activate for this deployment's service ID.
    pub fn activate(&self, user_id: &str, password: &str) -> (u16, Value) {
        self.http_post_json(
            "/api/v1/activate",
            &json!({
                "service_id": SERVICE_ID,
                "user_id": user_id,
                "activation_password": password,
            }),
        )
    }

    /// A successful activation: 200 and a token with `period=60` (SPEC §2.2).
    pub fn activate_ok(&self, user_id: &str, password: &str) -> Token {
        let (status, json) = self.activate(user_id, password);
        assert_eq!(status, 200, "activation with the right password: {json}");
        let uri = json["otpauth_uri"]
            .as_str()
            .unwrap_or_else(|| panic!("no otpauth_uri: {json}"))
            .to_owned();
        let secret = json["secret"]
            .as_str()
            .unwrap_or_else(|| panic!("no secret: {json}"))
            .to_owned();
        assert!(uri.starts_with("otpauth://totp/"), "otpauth_uri: {uri}");
        let query = uri.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
        };
        assert_eq!(param("period").as_deref(), Some("60"), "otpauth_uri: {uri}");
        assert!(param("issuer").is_some(), "otpauth_uri lacks issuer: {uri}");
        let uri_secret =
            param("secret").unwrap_or_else(|| panic!("otpauth_uri lacks secret: {uri}"));
        assert_eq!(
            normalize_base32(&uri_secret),
            normalize_base32(&secret),
            "the secret of the otpauth_uri and the secret field differ"
        );
        assert!(
            normalize_base32(&secret).trim_end_matches('=').len() >= 26,
            "secret shorter than 128 bits"
        );
        assert_eq!(json["period"], 60, "{json}");
        assert_eq!(json["digits"], 6, "{json}");
        assert_eq!(
            json["algorithm"]
                .as_str()
                .map(str::to_ascii_uppercase)
                .as_deref(),
            Some("SHA1"),
            "{json}"
        );
        Token {
            otpauth_uri: uri,
            secret,
            json,
        }
    }

    /// POST /api/v1/confirm for this deployment's service ID.
    pub fn confirm_api(&self, user_id: &str, otp: &str) -> (u16, Value) {
        self.http_post_json(
            "/api/v1/confirm",
            &json!({"service_id": SERVICE_ID, "user_id": user_id, "otp": otp}),
        )
    }

    /// The mails stored so far.
    pub fn mails(&self) -> Vec<Mail> {
        if !self.maildir.exists() {
            return Vec::new();
        }
        read_maildir(&self.maildir)
    }

    /// Waits (a few seconds at most) until `count` mails are stored.
    pub fn wait_for_mails(&self, count: usize) -> Vec<Mail> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mails = self.mails();
            if mails.len() >= count || Instant::now() >= deadline {
                return mails;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The one setup mail of `issued`, checked for what it must carry:
    /// recipient, service ID, user ID (plain or grouped), setup URL, UTF-8
    /// MIME.
    pub fn setup_mail(&self, issued: &Issued) -> Mail {
        let mails = self.wait_for_mails(1);
        assert_eq!(
            mails.len(),
            1,
            "expected exactly one setup mail: {mails:#?}"
        );
        let mail = mails.into_iter().next().expect("one mail");
        let to = format!(
            "{} {}",
            mail.header("To").unwrap_or_default(),
            mail.header("X-RcptTo").unwrap_or_default()
        );
        assert!(
            to.contains(&issued.email),
            "mail not addressed to {}: {mail:#?}",
            issued.email
        );
        assert!(
            mail.header("MIME-Version").is_some(),
            "no MIME-Version: {}",
            mail.raw
        );
        assert!(!mail.subject.trim().is_empty(), "no subject: {}", mail.raw);
        assert!(!mail.body.trim().is_empty(), "no text body: {}", mail.raw);
        assert!(
            mail.charsets
                .iter()
                .all(|c| c.eq_ignore_ascii_case("utf-8") || c.eq_ignore_ascii_case("us-ascii")),
            "text parts must be UTF-8: {:?}",
            mail.charsets
        );
        assert!(
            mail.body.contains(SERVICE_ID),
            "mail lacks the service ID: {}",
            mail.body
        );
        assert!(
            shows_user_id(&mail.body, &issued.user_id),
            "mail lacks the user ID {}: {}",
            issued.user_id,
            mail.body
        );
        assert!(
            mail.body.contains(&issued.setup_url)
                || mail.body.contains(&issued.setup_url.replace('&', "&amp;")),
            "mail lacks the setup URL {}: {}",
            issued.setup_url,
            mail.body
        );
        mail
    }

    /// The SQLite database in `state_dir`.
    pub fn db_path(&self) -> PathBuf {
        let entries = fs::read_dir(&self.state_dir).expect("read state_dir");
        for entry in entries.flatten() {
            let path = entry.path();
            let mut magic = [0u8; 16];
            let is_sqlite = File::open(&path)
                .and_then(|mut f| f.read_exact(&mut magic))
                .is_ok()
                && &magic == b"SQLite format 3\0";
            if is_sqlite {
                return path;
            }
        }
        panic!("no SQLite database in {}", self.state_dir.display());
    }

    /// Runs SQL on the database with the sqlite3 CLI (waiting for locks).
    pub fn sqlite(&self, sql: &str) -> String {
        let output = Command::new("sqlite3")
            .arg("-cmd")
            .arg(".timeout 10000")
            .arg(self.db_path())
            .arg(sql)
            .output()
            .expect("run sqlite3");
        assert_success(&output, &format!("sqlite3 {sql:?}"));
        stdout(&output)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(mut otpd) = self.otpd.take() {
            let _ = otpd.kill();
            let _ = otpd.wait();
        }
        drop(self.smtp.take());
        if std::thread::panicking() {
            eprintln!(
                "--- otpd stderr ({}) ---\n{}\n--- aiosmtpd stderr ---\n{}",
                self.root.display(),
                self.otpd_log(),
                self.read_log("smtp.err")
            );
        }
        if std::env::var_os("E2E_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("kept {}", dir.keep().display());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Login helpers

/// The PAM module that sshd and sudo load: `$PAM_OTP_SO`, or
/// `target/debug/libpam_otp.so` beside this test.
pub fn pam_module_path() -> PathBuf {
    built_binary("PAM_OTP_SO", "libpam_otp.so")
}

/// The TOTP code (SHA1, 6 digits) of `secret` at `at` seconds since the
/// epoch, as `oathtool --totp=SHA1 -s PERIOD -N @AT -b SECRET` prints it.
pub fn oathtool_code_at(secret: &str, period: u64, at: u64) -> String {
    let output = Command::new("oathtool")
        .arg("--totp=SHA1")
        .arg("-s")
        .arg(period.to_string())
        .arg("-N")
        .arg(format!("@{at}"))
        .arg("-b")
        .arg(normalize_base32(secret))
        .output()
        .expect("run oathtool");
    assert_success(&output, "oathtool");
    let code = stdout(&output).trim().to_owned();
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "oathtool printed {code:?}"
    );
    code
}

/// Sends `requests` (one JSON object a line) on one connection to the
/// socket at `path` and reads one answer line per request.
pub fn socket_exchange(path: &Path, requests: &[Value]) -> std::io::Result<Vec<Value>> {
    use std::io::BufRead;
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(RUN_TIMEOUT))?;
    stream.set_write_timeout(Some(RUN_TIMEOUT))?;
    let mut text = String::new();
    for request in requests {
        text.push_str(&request.to_string());
        text.push('\n');
    }
    stream.write_all(text.as_bytes())?;
    let mut reader = std::io::BufReader::new(stream);
    let mut answers = Vec::new();
    for _ in requests {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "otpd closed the connection after {} answer(s)",
                    answers.len()
                ),
            ));
        }
        answers.push(
            serde_json::from_str(&line)
                .map_err(|e| bad(format!("answer is not JSON ({e}): {line:?}")))?,
        );
    }
    Ok(answers)
}

impl TestEnv {
    /// `[socket].path` of the config.
    pub fn socket_path(&self) -> PathBuf {
        self.root.join("otpd.sock")
    }

    /// One request over the socket, one answer; panics when otpd does not
    /// answer.
    pub fn socket_request(&self, request: &Value) -> Value {
        socket_exchange(&self.socket_path(), std::slice::from_ref(request))
            .unwrap_or_else(|e| panic!("socket request: {e}\n{}", self.otpd_log()))
            .remove(0)
    }

    /// Issues, activates and confirms a 60-second token for `user` (mail
    /// `USER@example.jp`, activation password 4321) and returns its base32
    /// secret. The confirmation uses the previous step's code, so the codes
    /// of the current step and of every later step are still unused.
    pub fn enrol_active(&self, user: &str) -> String {
        let password = "4321";
        let issued = self.issue(user, &format!("{user}@example.jp"), password);
        let token = self.activate_ok(&issued.user_id, password);
        wait_for_fresh_step(60);
        let previous = oathtool_code_at(&token.secret, 60, now_unix().saturating_sub(60));
        let output = self.otpctl(&["confirm", user, "--json"], &format!("{previous}\n"));
        assert_success(&output, "otpctl confirm with the previous step's code");
        let confirmed = stdout_json(&output);
        assert_eq!(confirmed["state"], "active", "{confirmed}");
        assert_eq!(confirmed["period"], 60, "{confirmed}");
        token.secret
    }

    /// `otpctl test USER` with `code` on stdin: true when otpd accepted it
    /// (exit 0), false when it refused (exit 1); panics on anything else.
    pub fn otpctl_test(&self, user: &str, code: &str) -> bool {
        let output = self.otpctl(&["test", user], &format!("{code}\n"));
        match output.status.code() {
            Some(0) => true,
            Some(1) if stderr(&output).contains("reject") => false,
            _ => panic!(
                "otpctl test neither accepted nor rejected: {}\n{}",
                describe(&output),
                self.otpd_log()
            ),
        }
    }

    /// The process ID of the running otpd.
    pub fn otpd_pid(&self) -> Option<u32> {
        self.otpd.as_ref().map(Child::id)
    }

    /// Stops otpd with SIGTERM and waits for it (SIGKILL after 20 s).
    pub fn stop_otpd(&mut self) {
        let Some(mut otpd) = self.otpd.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(otpd.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while otpd.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = otpd.kill();
                let _ = otpd.wait();
                panic!("otpd did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills otpd with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill_otpd_9(&mut self) {
        if let Some(mut otpd) = self.otpd.take() {
            otpd.kill().expect("SIGKILL otpd");
            let _ = otpd.wait();
        }
    }

    /// Starts otpd again on the same config and state dir, after
    /// [`TestEnv::stop_otpd`] or [`TestEnv::kill_otpd_9`]; waits until
    /// both /healthz and the socket answer. The previous run's log is kept
    /// as `otpd-run-N.log`; [`TestEnv::otpd_log`] shows the new run's.
    pub fn start_otpd_again(&mut self) {
        assert!(self.otpd.is_none(), "otpd is still running");
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let _ = fs::rename(
            self.root.join("otpd.log"),
            self.root.join(format!("otpd-run-{n}.log")),
        );
        self.start_otpd();
        self.wait_for_socket();
    }

    /// Waits until otpd answers `{"op":"status"}` on the socket.
    pub fn wait_for_socket(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let answer = socket_exchange(&self.socket_path(), &[json!({"op": "status"})]);
            if matches!(&answer, Ok(a) if a[0]["result"] == "ok") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "otpd did not answer on its socket within {START_TIMEOUT:?} ({answer:?}):\n{}",
                self.otpd_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------------------------
// PAM

/// Runs `command` with `input` on its stdin and collects its output; kills
/// it and panics after [`RUN_TIMEOUT`].
///
/// Nothing polls: threads feed stdin and drain stdout and stderr while the
/// child runs (a chatty child never fills a pipe), and the caller sleeps
/// until both pipes close. Then the child is reaped at once, so the time
/// this takes is the child's own.
pub fn run_with_input(command: &mut Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        let input = input.to_owned();
        // It may exit before reading: ignore EPIPE. Dropping stdin closes it.
        std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
    }
    let (done, finished) = std::sync::mpsc::channel();
    drain(child.stdout.take(), 0, &done);
    drain(child.stderr.take(), 1, &done);
    drop(done);
    let mut streams = [Vec::new(), Vec::new()];
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut open = 2;
    while open > 0 {
        match finished.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((which, bytes)) => {
                streams[which] = bytes;
                open -= 1;
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().expect("reap the killed child");
                // The pipes close with the child: collect what it said.
                while let Ok((which, bytes)) = finished.recv_timeout(Duration::from_secs(2)) {
                    streams[which] = bytes;
                }
                let [stdout, stderr] = streams;
                panic!(
                    "{command:?} did not finish within {RUN_TIMEOUT:?}: {}",
                    describe(&Output {
                        status,
                        stdout,
                        stderr
                    })
                );
            }
        }
    }
    let status = child.wait().expect("reap the child");
    let [stdout, stderr] = streams;
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Reads `pipe` to its end on a thread of its own and sends the bytes, tagged
/// `which`, to `done`.
fn drain(
    pipe: Option<impl Read + Send + 'static>,
    which: usize,
    done: &std::sync::mpsc::Sender<(usize, Vec<u8>)>,
) {
    let done = done.clone();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = done.send((which, bytes));
    });
}

/// stdout and stderr together, as a person at the terminal reads them.
pub fn said(output: &Output) -> String {
    format!("{}{}", stdout(output), stderr(output))
}

/// A PAM service file `/etc/pam.d/NAME` for pamtester, removed on drop.
pub struct PamService {
    name: String,
    path: PathBuf,
}

impl PamService {
    /// `auth required <built module> ARGS` followed by the `extra` lines.
    pub fn new(args: &str, extra: &[&str]) -> PamService {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "otpd-e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = Path::new("/etc/pam.d").join(&name);
        let mut text = format!("auth required {} {args}\n", pam_module_path().display());
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        fs::write(&path, text).expect("write the /etc/pam.d service file");
        PamService { name, path }
    }

    /// The service name, as pamtester takes it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `pamtester SERVICE USER authenticate` with `input` typed at the prompts.
    pub fn authenticate(&self, user: &str, input: &str) -> Output {
        run_with_input(
            Command::new("pamtester").args([self.name.as_str(), user, "authenticate"]),
            input,
        )
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------
// RADIUS

/// A [`TestEnv`] whose otpd also answers RADIUS on a free 127.0.0.1 port,
/// for one client at 127.0.0.1 named `client` with `secret` and
/// Message-Authenticator required; the port comes back too.
pub fn start_with_radius(client: &str, secret: &str) -> (TestEnv, u16) {
    let port = free_port();
    let env = TestEnv::start_with(EnvOptions {
        extra_toml: format!(
            "\n[radius]\nlisten = \"127.0.0.1:{port}\"\nrequire_message_authenticator = true\n\n\
             [[radius.client]]\nname = \"{client}\"\naddress = \"127.0.0.1/32\"\nsecret = \"{secret}\"\n"
        ),
        ..EnvOptions::default()
    });
    (env, port)
}

// ---------------------------------------------------------------------------
// FreeRADIUS

/// A private copy of Debian's FreeRADIUS configuration in `dir/raddb`: its
/// own run and log directories, running as root (the copy is in a 0700
/// directory), no sites and no EAP (which needs certificates), so the caller
/// adds exactly the site it needs. The system's /etc/freeradius is untouched.
pub fn private_raddb(dir: &Path) -> PathBuf {
    let raddb = dir.join("raddb");
    let status = Command::new("cp")
        .args(["-a", "/etc/freeradius/3.0"])
        .arg(&raddb)
        .status()
        .expect("cp");
    assert!(status.success(), "cannot copy /etc/freeradius/3.0");
    let conf = raddb.join("radiusd.conf");
    let text = fs::read_to_string(&conf).expect("radiusd.conf");
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        if line.starts_with("raddbdir = ") {
            out.push_str(&format!("raddbdir = {}", raddb.display()));
        } else if line.starts_with("run_dir = ") {
            out.push_str(&format!("run_dir = {}", raddb.join("run").display()));
        } else if line.starts_with("logdir = ") {
            out.push_str(&format!("logdir = {}", raddb.join("log").display()));
        } else if trimmed.starts_with("user = ") || trimmed.starts_with("group = ") {
            out.push('#');
            out.push_str(line);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    fs::write(&conf, out).expect("radiusd.conf");
    fs::create_dir_all(raddb.join("run")).expect("run");
    fs::create_dir_all(raddb.join("log")).expect("log");
    for entry in fs::read_dir(raddb.join("sites-enabled")).expect("sites-enabled") {
        fs::remove_file(entry.expect("entry").path()).expect("rm site");
    }
    let _ = fs::remove_file(raddb.join("mods-enabled/eap"));
    raddb
}

// ---------------------------------------------------------------------------
// Benchmark helpers

/// An `otpd` with only a `[socket]` section, for the benchmarks; killed on
/// drop.
pub struct SocketDaemon {
    child: Child,
}

impl Drop for SocketDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the built `otpd` on `state` with its socket at `socket` and the
/// given `sqlite_synchronous`, and waits until the socket answers.
pub fn start_socket_otpd(
    dir: &Path,
    state: &Path,
    socket: &Path,
    synchronous: &str,
) -> SocketDaemon {
    let config = dir.join("otpd.toml");
    fs::write(
        &config,
        format!(
            "service_id = \"BENCH\"\nissuer = \"bench\"\nstate_dir = \"{}\"\n\
             sqlite_synchronous = \"{synchronous}\"\n[socket]\npath = \"{}\"\nallowed_uids = [0]\n",
            state.display(),
            socket.display()
        ),
    )
    .expect("config");
    let child = Command::new(otpd_bin())
        .arg("--config")
        .arg(&config)
        // One log line per decision would measure the terminal.
        .env("OTPD_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start otpd");
    let mut daemon = SocketDaemon { child };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if let Some(status) = daemon.child.try_wait().expect("try_wait") {
            panic!("otpd exited at start-up: {status}");
        }
        assert!(Instant::now() < deadline, "otpd did not open its socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness's own peers: aiosmtpd receives a Japanese MIME mail sent
    /// by Python's smtplib, and the Maildir reader decodes it.
    #[test]
    fn smtp_server_and_maildir_decoding() {
        if !e2e_enabled() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("maildir");
        let server = SmtpServer::start(free_port(), &maildir, &dir.path().join("smtp.err"));
        let send = format!(
            r#"
import smtplib
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "OTP <no-reply@otp-auth.example>"
m["To"] = "alice@example.jp"
m["Subject"] = "ワンタイムパスワードの設定"
m.set_content("サービスID: TESTSVC\nユーザーID: 1234-5678-9012-34\n" + "x" * 100, cte="base64")
with smtplib.SMTP("127.0.0.1", {}) as s:
    s.send_message(m)
"#,
            server.port
        );
        let output = Command::new(SYSTEM_PYTHON)
            .args(["-c", &send])
            .output()
            .unwrap();
        assert_success(&output, "sending a mail with smtplib");
        let mails = server.mails();
        assert_eq!(mails.len(), 1, "{mails:#?}");
        let mail = &mails[0];
        assert_eq!(mail.subject, "ワンタイムパスワードの設定");
        assert!(mail.body.contains("サービスID: TESTSVC"), "{mail:#?}");
        assert!(shows_user_id(&mail.body, "12345678901234"), "{mail:#?}");
        assert!(
            !mail.raw.contains("TESTSVC"),
            "body should be base64 on the wire"
        );
        assert_eq!(mail.header("X-RcptTo"), Some("alice@example.jp"));
        assert_eq!(mail.charsets, vec!["utf-8".to_owned()]);
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_utc("2026-11-27T20:00:00Z"),
            Some(1_795_809_600)
        );
        assert_eq!(
            parse_rfc3339_utc("2000-03-01T00:00:00.5+00:00"),
            Some(951_868_800)
        );
        assert_eq!(parse_rfc3339_utc("2026-11-27 20:00"), None);
    }

    #[test]
    fn digits_runs() {
        let uid = "12345678432190";
        assert!(!shows_digits(
            "id 1234-5678-4321-90 and 543210",
            "4321",
            uid
        ));
        assert!(shows_digits("password: 4321.", "4321", uid));
        assert!(!shows_digits(&format!("uid={uid}"), "4321", uid));
    }

    #[test]
    fn base32_padding() {
        assert_eq!(normalize_base32("jbsw y3dp"), "JBSWY3DP");
        assert_eq!(
            normalize_base32("JBSWY3DPEHPK3PXPJBSWY3DPEH"),
            "JBSWY3DPEHPK3PXPJBSWY3DPEH======"
        );
    }

    #[test]
    fn http_parsing() {
        let r = parse_http_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n1\r\n!\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok!"));
        let r = parse_http_response(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}")
            .unwrap();
        assert_eq!((r.status, r.json()), (401, json!({})));
    }
}
