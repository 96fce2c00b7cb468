//! The environment of one test: a temp dir, free loopback ports, a config
//! file, an SMTP server and a running otpd.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::http::http_request;
use crate::mail::SmtpServer;
use crate::process::{
    assert_success, otpctl_bin, otpd_bin, run_with_input, stdout, wait_or_kill, START_TIMEOUT,
};

/// The service ID written into every test config.
pub const SERVICE_ID: &str = "TESTSVC";

/// A loopback port, free a moment ago for both TCP and UDP, that no other
/// test of this process has been given. It lies below the kernel's range of
/// ephemeral ports (32768 and up on Debian), so that the source port of some
/// client's connection or datagram cannot take it between now and the
/// moment a server binds it.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    const FIRST: u16 = 20_000;
    const COUNT: u16 = 12_000;
    loop {
        let port = FIRST + (rand::random::<u16>() % COUNT);
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.contains(&port) {
            continue;
        }
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            given.push(port);
            return port;
        }
    }
}

/// Writes `text` to a new file `path` with mode 0600: a config may hold
/// secrets, and otpd refuses secrets in a file others can read; keys too.
pub fn write_private_file(path: &Path, text: &str) {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

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
    /// `Some(lines)`: a `[self_service]` table with its socket at
    /// [`TestEnv::self_socket_path`] and these lines (e.g.
    /// `allowed_groups = ["staff"]`); the temp dir is then open for
    /// other users to pass through (mode 0711), so local users reach the
    /// socket. `None` by default.
    pub self_service: Option<String>,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            smtp: true,
            language: None,
            extra_toml: String::new(),
            socket_toml: String::new(),
            self_service: None,
        }
    }
}

/// A temp dir with a config, an SMTP server (aiosmtpd into a Maildir) and a
/// running `otpd`; both servers are killed on drop.
///
/// Here: starting, stopping and restarting otpd, `otpctl`, the database.
/// Beside their peers: the enrolment flow (`enrol`), HTTP requests (`http`),
/// the mails (`mail`) and the Unix socket (`pam`).
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
        let self_service = match &options.self_service {
            Some(lines) => {
                fs::set_permissions(&root, fs::Permissions::from_mode(0o711))
                    .expect("chmod the temp dir");
                format!(
                    "[self_service]\nsocket = \"{}\"\n{lines}\n",
                    root.join("self.sock").display()
                )
            }
            None => String::new(),
        };
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
{self_service}
{extra}
"#,
            state = state_dir.display(),
            socket = root.join("otpd.sock").display(),
            extra = options.extra_toml,
            socket_extra = options.socket_toml,
        );
        write_private_file(&config, &text);

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

    /// `[self_service] socket` of the config, when
    /// [`EnvOptions::self_service`] asked for one.
    pub fn self_socket_path(&self) -> PathBuf {
        self.root.join("self.sock")
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
        run_with_input(
            Command::new(otpctl_bin())
                .arg("--config")
                .arg(&self.config)
                .args(args),
            stdin,
        )
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
        wait_or_kill(&mut otpd, Duration::from_secs(20), "otpd, after SIGTERM,");
    }

    /// Stops the SMTP server; its port is free for another listener.
    pub fn stop_smtp(&mut self) {
        drop(self.smtp.take());
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
