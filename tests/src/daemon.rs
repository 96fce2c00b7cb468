//! otpd on a store of its own, without a [`TestEnv`](crate::TestEnv): users
//! imported straight into a fresh store, and the built otpd started on it
//! with only the listener a caller asks for. The benchmarks start their
//! otpd this way, and so does the test that serves a restored backup.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use otpcore::totp::TokenParams;
use otpstore::{ImportedToken, Store};

use crate::codes::now_unix;
use crate::env::write_private_file;
use crate::process::otpd_bin;

/// The service ID of these stores and configs.
const SERVICE: &str = "BENCH";

/// Imports an active token for each of `names`, its secret at the same place
/// in `secrets`, all with `params`, into the store in `state` (created when
/// missing).
pub fn import_active_tokens(
    state: &Path,
    names: &[String],
    secrets: &[Vec<u8>],
    params: TokenParams,
) {
    let store = Store::open(state).expect("store");
    let tokens: Vec<ImportedToken<'_>> = names
        .iter()
        .zip(secrets)
        .map(|(user, secret)| ImportedToken {
            user,
            secret,
            params,
            last_step: None,
        })
        .collect();
    store
        .import_tokens(&tokens, SERVICE, false, now_unix())
        .expect("import");
}

/// A server started without a test environment, with the file its log goes
/// to; killed on drop.
pub struct Server {
    child: Child,
    log: PathBuf,
}

/// What [`start_socket_otpd`] returns.
pub type SocketDaemon = Server;

impl Server {
    /// Takes charge of `child`, which logs to `log`.
    pub fn new(child: Child, log: PathBuf) -> Server {
        Server { child, log }
    }

    /// The process ID.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once the server has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the built otpd on the store in `state`, with `sqlite_synchronous
/// = synchronous` and the TOML tables `listeners` (e.g. a `[socket]` or
/// `[radius]` section) in its config `dir/otpd.toml` (mode 0600). It logs
/// warnings and errors only, to `dir/otpd.log`: a line per decision would
/// measure the terminal. Returns at once; the caller waits for its listener.
pub fn start_otpd_on(dir: &Path, state: &Path, synchronous: &str, listeners: &str) -> Server {
    let config = dir.join("otpd.toml");
    let text = format!(
        "service_id = \"{SERVICE}\"\nissuer = \"bench\"\nstate_dir = \"{}\"\n\
         sqlite_synchronous = \"{synchronous}\"\n{listeners}",
        state.display()
    );
    write_private_file(&config, &text);
    let log = dir.join("otpd.log");
    let child = Command::new(otpd_bin())
        .arg("--config")
        .arg(&config)
        .env("OTPD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("otpd log file"))
        .spawn()
        .expect("start otpd");
    Server::new(child, log)
}

/// Starts the built `otpd` on `state` with only a `[socket]` section, its
/// socket at `socket` (root may ask) and the given `sqlite_synchronous`, and
/// waits until the socket accepts connections.
pub fn start_socket_otpd(
    dir: &Path,
    state: &Path,
    socket: &Path,
    synchronous: &str,
) -> SocketDaemon {
    let listener = format!(
        "[socket]\npath = \"{}\"\nallowed_uids = [0]\n",
        socket.display()
    );
    let mut daemon = start_otpd_on(dir, state, synchronous, &listener);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if let Some(status) = daemon.exited() {
            panic!("otpd exited at start-up: {status}\n{}", daemon.log());
        }
        assert!(
            Instant::now() < deadline,
            "otpd did not open its socket:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon
}
