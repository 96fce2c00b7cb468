//! A real browser at a phone's size for the end-to-end tests of the
//! activation page: headless Chromium driven over WebDriver (chromedriver),
//! with screenshots kept in target/screenshots/ for a person to look at.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::free_port;
use serde_json::{json, Value};

pub const PHONE_WIDTH: u64 = 360;

/// One WebDriver request. chromedriver keeps connections open whatever the
/// request says, so the answer is read by its Content-Length.
fn webdriver(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut raw = vec![0; length];
    reader.read_exact(&mut raw)?;
    Ok((status, serde_json::from_slice(&raw).unwrap_or(Value::Null)))
}

/// A chromedriver process and one browser session.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start(accept_language: &str) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian package chromium-driver)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while webdriver(port, "GET", "/status", "").is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let created = browser.call(
            "POST",
            "/session",
            &json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": args,
                    "prefs": {"intl.accept_languages": accept_language},
                    "mobileEmulation": {"deviceMetrics": {
                        "width": PHONE_WIDTH, "height": 740, "pixelRatio": 2.0, "touch": true
                    }}
                }
            }}}),
        );
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        browser
    }

    pub fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let body = if method == "GET" {
            String::new()
        } else {
            body.to_string()
        };
        let (status, value) = webdriver(self.port, method, path, &body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        assert_eq!(status, 200, "WebDriver {method} {path}: {value}");
        value["value"].clone()
    }

    pub fn session_call(&self, method: &str, what: &str, body: &Value) -> Value {
        self.call(method, &format!("/session/{}/{what}", self.session), body)
    }

    pub fn open(&self, url: &str) {
        self.session_call("POST", "url", &json!({ "url": url }));
    }

    pub fn script(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "execute/sync",
            &json!({"script": script, "args": []}),
        )
    }

    pub fn text(&self) -> String {
        self.script("return document.body.innerText;")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Asserts the page fits the phone's width and keeps a screenshot.
    pub fn check_fits(&self, name: &str) {
        let sizes = self.script(
            "return [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth];",
        );
        let numbers: Vec<u64> = sizes
            .as_array()
            .expect("three numbers")
            .iter()
            .map(|v| v.as_u64().expect("number"))
            .collect();
        let path = screenshot_dir().join(format!("{name}.png"));
        let png = self.session_call("GET", "screenshot", &json!({}));
        let bytes = data_encoding::BASE64
            .decode(png.as_str().expect("base64 PNG").as_bytes())
            .expect("valid base64");
        std::fs::write(&path, bytes).expect("write screenshot");
        assert_eq!(numbers[2], PHONE_WIDTH, "the viewport is the phone's");
        assert!(
            numbers[0] <= numbers[2] && numbers[1] <= numbers[2],
            "{name}: the page scrolls sideways (scroll widths {numbers:?}); see {}",
            path.display()
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = webdriver(self.port, "DELETE", &path, "");
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}
