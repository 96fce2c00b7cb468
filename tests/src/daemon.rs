//! otpd on a store of its own, without a [`TestEnv`](crate::TestEnv): users
//! imported straight into a fresh store, and the built otpd started on it
//! with only the listener a caller asks for. The benchmarks start their
//! otpd this way, and so does the test that serves a restored backup.
//!
//! The store is SQLite in the state directory, or, given a `[store]` table
//! (e.g. [`Cluster::store_toml`](crate::cluster::Cluster::store_toml)), the
//! PostgreSQL database it names; several otpd started with the same table
//! are nodes of one cluster.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use otpcore::config::Config;
use otpcore::totp::TokenParams;
use otpstore::{ImportedToken, Store};

use crate::cluster::Cluster;
use crate::codes::now_unix;
use crate::env::write_private_file;
use crate::postgres::PrivatePostgres;
use crate::process::otpd_bin;

/// The service ID of these stores and configs.
const SERVICE: &str = "BENCH";

/// How many tokens one import transaction holds: few enough for a
/// PostgreSQL store's deadline of a call.
const IMPORT_CHUNK: usize = 200;

/// The config text of otpd on `state` with `sqlite_synchronous =
/// synchronous`, then the TOML tables `tables` (listeners, `[store]`).
fn config_text(state: &Path, synchronous: &str, tables: &str) -> String {
    format!(
        "service_id = \"{SERVICE}\"\nissuer = \"bench\"\nstate_dir = \"{}\"\n\
         sqlite_synchronous = \"{synchronous}\"\n{tables}",
        state.display()
    )
}

/// Imports an active token for each of `names`, its secret at the same place
/// in `secrets`, all with `params`, into the store of `state` and `store`
/// (a `[store]` table, or empty for SQLite in `state`; created when
/// missing), [`IMPORT_CHUNK`] tokens a transaction.
pub fn import_active_tokens(
    state: &Path,
    store: &str,
    names: &[String],
    secrets: &[Vec<u8>],
    params: TokenParams,
) {
    let config = Config::parse(
        &config_text(state, "normal", store),
        Path::new("import.toml"),
        false,
    )
    .expect("store config");
    let store = Store::from_config(&config).expect("store");
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
    for chunk in tokens.chunks(IMPORT_CHUNK) {
        store
            .import_tokens(chunk, SERVICE, false, now_unix())
            .expect("import");
    }
}

/// The store of a benchmark's otpd nodes: SQLite (one node), or a fresh
/// database on a private PostgreSQL server that every node shares.
pub struct BenchStore {
    table: String,
    /// Declared first, so dropped before the server it lives on.
    cluster: Option<Cluster>,
    server: Option<PrivatePostgres>,
}

impl BenchStore {
    /// The store a `--store` option names: `sqlite` or `postgresql` (a
    /// private server is started, on the CPUs `db_cpus` lists when given;
    /// panics when it cannot be).
    pub fn new(backend: &str, db_cpus: Option<&str>) -> BenchStore {
        match backend {
            "sqlite" => BenchStore {
                table: String::new(),
                cluster: None,
                server: None,
            },
            "postgresql" => {
                let server = PrivatePostgres::start_on(db_cpus);
                let cluster = Cluster::new(&server, "bench");
                BenchStore {
                    table: cluster.store_toml(false),
                    cluster: Some(cluster),
                    server: Some(server),
                }
            }
            other => panic!("--store {other}: use sqlite or postgresql"),
        }
    }

    /// `sqlite` or `postgresql`.
    pub fn backend(&self) -> &'static str {
        if self.server.is_some() {
            "postgresql"
        } else {
            "sqlite"
        }
    }

    /// The `[store]` table of a node's config (empty for SQLite).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The PostgreSQL server and the nodes' database on it.
    pub fn postgres(&self) -> Option<(&PrivatePostgres, &Cluster)> {
        self.server.as_ref().zip(self.cluster.as_ref())
    }
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

/// Starts the built otpd on `state`, with `sqlite_synchronous =
/// synchronous` and the TOML tables `tables` (a `[socket]` or `[radius]`
/// section; a `[store]` table) in its config `dir/otpd.toml` (mode 0600). It logs
/// warnings and errors only, to `dir/otpd.log`: a line per decision would
/// measure the terminal. Returns at once; the caller waits for its listener.
pub fn start_otpd_on(dir: &Path, state: &Path, synchronous: &str, tables: &str) -> Server {
    let config = dir.join("otpd.toml");
    write_private_file(&config, &config_text(state, synchronous, tables));
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
    start_socket_otpd_on_store(dir, state, "", socket, synchronous)
}

/// [`start_socket_otpd`] on the store of `state` and `store` (a `[store]`
/// table, or empty for SQLite in `state`).
pub fn start_socket_otpd_on_store(
    dir: &Path,
    state: &Path,
    store: &str,
    socket: &Path,
    synchronous: &str,
) -> SocketDaemon {
    let tables = format!(
        "[socket]\npath = \"{}\"\nallowed_uids = [0]\n{store}",
        socket.display()
    );
    let mut daemon = start_otpd_on(dir, state, synchronous, &tables);
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
