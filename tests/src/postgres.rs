//! A private PostgreSQL server for tests: its own cluster in a temp dir,
//! never the system's service or clusters.
//!
//! PostgreSQL refuses to run as root, so the cluster belongs to an
//! unprivileged system user, [`OS_USER`], created on first use. The server
//! listens on a Unix socket in its directory (the superuser `postgres` logs
//! in there without a password) and on 127.0.0.1 at a free port, where it
//! takes only TLS connections with a password (SCRAM): its certificate names
//! `localhost` and 127.0.0.1 and is signed by a CA made for this cluster.
//! The login role `otpd` has a random password; [`PrivatePostgres::create_database`]
//! makes databases it owns and says how to reach them.
//!
//! Durability is PostgreSQL's default (fsync on): a crash test with
//! [`PrivatePostgres::kill`] sees what a real crash leaves.
//!
//! Starting a cluster costs about a second, so a test binary shares one:
//! [`PrivatePostgres::shared`]. A watcher process stops each server and
//! removes its directory once its owner is gone, by drop or by the test
//! process exiting in any way, so no server outlives its tests.
//! [`start_detached`] and [`stop_detached`] are for shell scripts (the
//! `private-postgres` program): that server runs until stopped.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::env::{free_port, write_private_file};
use crate::process::{describe, run_with_input, wait_or_kill};

/// The unprivileged system user that owns the clusters and runs the servers.
pub const OS_USER: &str = "otpd-pgtest";
/// The superuser, reachable over the Unix socket without a password.
pub const SUPERUSER: &str = "postgres";
/// The login role that owns the databases of [`PrivatePostgres::create_database`].
pub const ROLE: &str = "otpd";

/// How long a server may take to be ready or to stop, on a loaded machine.
const SERVER_TIMEOUT: Duration = Duration::from_secs(60);

/// Stops the server of the cluster in `$1` and removes `$1`, once its stdin
/// closes: when the [`PrivatePostgres`] is dropped or its process has
/// exited, however it ended. Immediate shutdown (SIGQUIT) lets the server
/// release its shared memory; SIGKILL if it is still there after 10 s (its
/// processes then exit on their own). A PID counts as the server only while
/// its working directory is the data directory (a stale `postmaster.pid`
/// after a crash may name a reused PID). It ignores the terminal's SIGINT
/// and SIGHUP, so that Ctrl-C on a test run still cleans up.
const WATCHER: &str = r#"trap '' INT HUP
read -r _
data="$1/data"
alive() { [ "$(readlink "/proc/$1/cwd" 2>/dev/null)" = "$data" ]; }
pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ] && alive "$pid"; then
  kill -QUIT "$pid"
  i=0
  while alive "$pid" && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  if alive "$pid"; then kill -KILL "$pid"; fi
fi
rm -rf -- "$1"
"#;

/// A running private PostgreSQL server in a temp dir of its own.
///
/// Dropping it (or the end of the test process, for [`PrivatePostgres::shared`])
/// stops the server at once and removes the directory.
pub struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
    password_file: PathBuf,
    /// The running postmaster, this process's child; `None` while stopped.
    postmaster: Mutex<Option<Child>>,
    /// The CPUs the server runs on (a list for `taskset -c`), or all.
    cpus: Option<String>,
    watcher: Watcher,
}

/// A database owned by [`ROLE`], and how to reach it.
#[derive(Debug, Clone)]
pub struct Database {
    pub name: String,
    /// `postgresql://otpd@%2F...dir:PORT/NAME`: the Unix socket, where
    /// `otpd` logs in without a password.
    pub socket_url: String,
    /// `postgresql://otpd@localhost:PORT/NAME?sslmode=verify-full&sslrootcert=CA`:
    /// TCP with TLS, the password in [`Database::password_file`].
    pub tls_url: String,
    /// The password of `otpd` and a newline; root's, mode 0600.
    pub password_file: PathBuf,
    /// The CA certificate (PEM) that signed the server's certificate.
    pub ca_file: PathBuf,
}

impl PrivatePostgres {
    /// Creates a cluster in a new temp dir, starts its server, and creates
    /// the role `otpd` with a random password. Panics with the server log
    /// when the server does not come up.
    pub fn start() -> PrivatePostgres {
        PrivatePostgres::start_on(None)
    }

    /// [`PrivatePostgres::start`], the server and every process it starts
    /// kept on `cpus` (a CPU list as `taskset -c` reads it, e.g. `1` or
    /// `2-3`) when given: a benchmark's database on cores of its own, as
    /// when it runs on a host of its own.
    pub fn start_on(cpus: Option<&str>) -> PrivatePostgres {
        // Not $TMPDIR: /tmp is reachable by the server's user, and short
        // enough for the socket's path.
        let dir = tempfile::Builder::new()
            .prefix("otpd-pg.")
            .tempdir_in("/tmp")
            .expect("temp dir for PostgreSQL")
            .keep();
        // Watching from the start: a panic below still removes the dir.
        let watcher = Watcher::spawn(&dir);
        let port = free_port();
        create_cluster(&dir, port);
        let postmaster = spawn_postmaster(&dir, cpus);
        let server = PrivatePostgres {
            password_file: dir.join("otpd.password"),
            dir,
            port,
            postmaster: Mutex::new(Some(postmaster)),
            cpus: cpus.map(str::to_owned),
            watcher,
        };
        let password = random_password();
        // Terse errors: psql would otherwise quote the statement, password
        // and all, in the panic message.
        server.psql(
            "postgres",
            &format!("\\set VERBOSITY terse\nCREATE ROLE {ROLE} LOGIN PASSWORD '{password}';"),
        );
        write_private_file(&server.password_file, &format!("{password}\n"));
        server
    }

    /// The server of this test process, started on first use and stopped
    /// when the process exits. Tests that share it must not stop it.
    pub fn shared() -> &'static PrivatePostgres {
        static SHARED: OnceLock<PrivatePostgres> = OnceLock::new();
        SHARED.get_or_init(PrivatePostgres::start)
    }

    /// The TCP port (also in the name of the socket file).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory: the socket, the certificates, the log and
    /// `data/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        server_log(&self.dir)
    }

    /// The superuser's URL over the Unix socket, to the database `postgres`.
    pub fn admin_url(&self) -> String {
        admin_url(&self.dir, self.port)
    }

    /// Creates the database `name`, owned by `otpd`. `name` is a lowercase
    /// SQL identifier: letters, digits and `_`, at most 63 bytes.
    pub fn create_database(&self, name: &str) -> Database {
        assert!(
            !name.is_empty()
                && name.len() <= 63
                && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "database name {name:?}: use lowercase letters, digits and _ (at most 63)"
        );
        self.psql("postgres", &format!("CREATE DATABASE {name} OWNER {ROLE};"));
        let ca_file = self.dir.join("ca.pem");
        Database {
            name: name.to_owned(),
            socket_url: url(ROLE, &socket_host(&self.dir), self.port, name),
            tls_url: format!(
                "{}?sslmode=verify-full&sslrootcert={}",
                url(ROLE, "localhost", self.port, name),
                percent_encode(&ca_file.to_string_lossy(), "/")
            ),
            password_file: self.password_file.clone(),
            ca_file,
        }
    }

    /// Runs `sql` (one or more statements) with `psql -qAt` as the superuser
    /// in database `db` over the socket, stopping at the first error;
    /// returns its output without the final newline. Panics with psql's
    /// stderr when a statement fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let output = psql(&url(SUPERUSER, &socket_host(&self.dir), self.port, db), sql);
        assert!(
            output.status.success(),
            "psql in {db} failed: {}",
            describe(&output)
        );
        String::from_utf8_lossy(&output.stdout)
            .trim_end_matches('\n')
            .to_owned()
    }

    /// Stops the server the normal way (fast shutdown: sessions are ended,
    /// a checkpoint written) and waits until it is gone.
    pub fn stop(&self) {
        let mut postmaster = self.postmaster();
        let mut child = postmaster.take().expect("the server is not running");
        pg_ctl_stop(&self.dir, "fast");
        wait_or_kill(&mut child, SERVER_TIMEOUT, "the stopped postmaster");
    }

    /// Starts the server again on the same directory and port, after
    /// [`PrivatePostgres::stop`] or [`PrivatePostgres::kill`]; waits until it
    /// takes connections (after a kill, that includes crash recovery).
    pub fn start_again(&self) {
        let mut postmaster = self.postmaster();
        assert!(postmaster.is_none(), "the server is already running");
        *postmaster = Some(spawn_postmaster(&self.dir, self.cpus.as_deref()));
    }

    /// Crashes the server: SIGKILL to the postmaster and all its processes
    /// at once, and waits until none is left. No shutdown checkpoint is
    /// written; [`PrivatePostgres::start_again`] recovers from the WAL.
    pub fn kill(&self) {
        let mut postmaster = self.postmaster();
        let mut child = postmaster.take().expect("the server is not running");
        let pid = child.id();
        // Stopped, the postmaster starts no more processes; each of its
        // processes leads a session of its own, so they are found by parent.
        assert!(signal("STOP", &[pid]), "kill -STOP {pid}");
        let mut doomed = children_of(pid);
        doomed.push(pid);
        // Some may have exited meanwhile: kill's status does not matter.
        signal("KILL", &doomed);
        child.wait().expect("reap the killed postmaster");
        let deadline = Instant::now() + SERVER_TIMEOUT;
        while doomed.iter().any(|&p| alive(p)) {
            assert!(
                Instant::now() < deadline,
                "processes of the killed server {pid} are still alive"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn postmaster(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.postmaster.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // The watcher stops the server and removes the directory.
        self.watcher.finish();
        if let Some(mut child) = self.postmaster().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Creates a cluster in `dir` (created if missing; must be empty) and starts
/// its server, which runs until [`stop_detached`] (or a reboot): nothing
/// watches it. Returns the superuser's URL over the Unix socket.
pub fn start_detached(dir: &Path) -> String {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let dir = dir
        .canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let empty = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .next()
        .is_none();
    assert!(empty, "{} is not empty", dir.display());
    let port = free_port();
    create_cluster(&dir, port);
    // The postmaster outlives this process: it is not waited for.
    drop(spawn_postmaster(&dir, None));
    admin_url(&dir, port)
}

/// Stops (fast shutdown) the server that [`start_detached`] started in `dir`
/// and waits until it is gone; the directory stays.
pub fn stop_detached(dir: &Path) {
    pg_ctl_stop(dir, "fast");
}

/// Stops and removes the cluster in its directory when dropped, or when
/// this process exits: see [`WATCHER`].
struct Watcher {
    /// The write end of the watcher's stdin; closing it sets it off.
    trigger: Option<ChildStdin>,
    child: Child,
}

impl Watcher {
    fn spawn(dir: &Path) -> Watcher {
        let mut child = Command::new("sh")
            .args(["-c", WATCHER, "otpd-pg-watcher"])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Out of the test's process group: Ctrl-C does not reach it.
            .process_group(0)
            .spawn()
            .expect("start the PostgreSQL watcher");
        Watcher {
            trigger: child.stdin.take(),
            child,
        }
    }

    /// Sets the watcher off and waits until it has stopped the server and
    /// removed the directory.
    fn finish(&mut self) {
        if let Some(trigger) = self.trigger.take() {
            drop(trigger);
            let _ = self.child.wait();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The UID and GID of [`OS_USER`], which is created (a system user with no
/// home and no login shell) when missing.
fn owner() -> (u32, u32) {
    static OWNER: OnceLock<(u32, u32)> = OnceLock::new();
    *OWNER.get_or_init(|| {
        let id = |flag: &str| -> Option<u32> {
            let output = Command::new("id").args([flag, OS_USER]).output().ok()?;
            String::from_utf8_lossy(&output.stdout).trim().parse().ok()
        };
        if id("-u").is_none() {
            let output = Command::new("useradd")
                .args(["--system", "--user-group", "--no-create-home"])
                .args(["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"])
                .arg(OS_USER)
                .output()
                .expect("run useradd");
            // 9: created meanwhile by another test process.
            assert!(
                output.status.success() || output.status.code() == Some(9),
                "useradd {OS_USER}: {}",
                describe(&output)
            );
        }
        let uid = id("-u").unwrap_or_else(|| panic!("no user {OS_USER}"));
        let gid = id("-g").unwrap_or_else(|| panic!("no group of {OS_USER}"));
        (uid, gid)
    })
}

/// `program` of the newest PostgreSQL in /usr/lib/postgresql.
fn bin(program: &str) -> PathBuf {
    static BIN_DIR: OnceLock<PathBuf> = OnceLock::new();
    BIN_DIR
        .get_or_init(|| {
            let versions = fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|entry| {
                    let version: u32 = entry.file_name().to_str()?.parse().ok()?;
                    let bin = entry.path().join("bin");
                    bin.join("initdb").is_file().then_some((version, bin))
                });
            versions.max().map(|(_, bin)| bin).unwrap_or_else(|| {
                panic!(
                    "no PostgreSQL server in /usr/lib/postgresql/*/bin: install the Debian \
                     package postgresql"
                )
            })
        })
        .join(program)
}

/// `program` of PostgreSQL, to run as [`OS_USER`] with a clean environment.
fn as_owner(program: &str) -> Command {
    owned(Command::new(bin(program)))
}

/// `command`, to run as [`OS_USER`] with a clean environment.
fn owned(mut command: Command) -> Command {
    let (uid, gid) = owner();
    command
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LC_ALL", "C");
    command
}

/// Creates the cluster of a server on `port` in `dir` (which must exist):
/// the certificates, `initdb`, the configuration and `pg_hba.conf`.
fn create_cluster(dir: &Path, port: u16) {
    let (uid, gid) = owner();
    let text = dir.to_string_lossy();
    assert!(
        !text.contains(['\'', '\\', '\n']),
        "{}: quotes, backslashes and newlines do not fit in postgresql.conf",
        dir.display()
    );
    // The socket's path must fit in sockaddr_un (108 bytes with the NUL).
    assert!(
        text.len() + "/.s.PGSQL.65535".len() < 108,
        "{}: too long for a Unix socket path",
        dir.display()
    );
    for ancestor in dir.ancestors().skip(1) {
        let mode = fs::metadata(ancestor).map(|m| m.mode()).unwrap_or(0);
        assert!(
            mode & 0o001 != 0,
            "{} is not searchable by others, so {OS_USER} cannot reach {}",
            ancestor.display(),
            dir.display()
        );
    }
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", dir.display()));
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));

    write_certificates(dir, (uid, gid));

    let data = dir.join("data");
    let output = run_with_input(
        as_owner("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            // Skips only initdb's own flush of the new files to disk; the
            // server keeps fsync on.
            .arg("--no-sync"),
        "",
    );
    assert!(output.status.success(), "initdb: {}", describe(&output));

    append(
        &data.join("postgresql.conf"),
        &format!(
            "\n# The private test server\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{text}'\n\
             ssl = on\n\
             ssl_cert_file = '{text}/server.crt'\n\
             ssl_key_file = '{text}/server.key'\n\
             shared_buffers = 16MB\n\
             max_connections = 200\n"
        ),
    );
    // Over TCP: TLS and a password, or nothing.
    fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\n\
         hostssl all all 127.0.0.1/32 scram-sha-256\n\
         host all all 127.0.0.1/32 reject\n",
    )
    .expect("write pg_hba.conf");
}

/// A test CA (`ca.pem`) and the server's certificate for `localhost` and
/// 127.0.0.1 signed by it (`server.crt`, `server.key`), in `dir`; the
/// server's files belong to `owner`.
fn write_certificates(dir: &Path, owner: (u32, u32)) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "otpd test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");

    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &ca).expect("server certificate");

    fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca.pem");
    let (crt, key_file) = (dir.join("server.crt"), dir.join("server.key"));
    fs::write(&crt, cert.pem()).expect("write server.crt");
    write_private_file(&key_file, &key.serialize_pem());
    for file in [&crt, &key_file] {
        std::os::unix::fs::chown(file, Some(owner.0), Some(owner.1))
            .unwrap_or_else(|e| panic!("chown {}: {e}", file.display()));
    }
}

/// Starts the postmaster of the cluster in `dir` as this process's child,
/// in a process group of its own (so that Ctrl-C on the test does not
/// reach it: the watcher stops it), logging
/// to `dir/server.log`; waits until it takes connections. Panics with the
/// log when it exits or is not ready in time. `cpus`: through `taskset
/// -c`, which becomes the postmaster; the processes it starts inherit the
/// CPUs.
fn spawn_postmaster(dir: &Path, cpus: Option<&str>) -> Child {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("open server.log");
    let mut command = match cpus {
        None => as_owner("postgres"),
        Some(list) => {
            let mut taskset = owned(Command::new("/usr/bin/taskset"));
            taskset.arg("-c").arg(list).arg(bin("postgres"));
            taskset
        }
    };
    let mut child = command
        .arg("-D")
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup server.log"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start postgres");
    // postmaster.pid: its PID on the first line, "ready" on the eighth once
    // it takes connections; a file left by a killed server names another PID.
    let pid_file = dir.join("data/postmaster.pid");
    let deadline = Instant::now() + SERVER_TIMEOUT;
    loop {
        let status = fs::read_to_string(&pid_file).unwrap_or_default();
        let lines: Vec<&str> = status.lines().collect();
        if lines.first() == Some(&child.id().to_string().as_str())
            && lines.get(7).map(|s| s.trim()) == Some("ready")
        {
            return child;
        }
        if let Some(exit) = child.try_wait().expect("try_wait postgres") {
            panic!(
                "PostgreSQL in {} exited ({exit}) before it was ready; its log:\n{}",
                dir.display(),
                server_log(dir)
            );
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "PostgreSQL in {} was not ready within {SERVER_TIMEOUT:?}; its log:\n{}",
                dir.display(),
                server_log(dir)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `pg_ctl stop -m mode` on the cluster in `dir`, waiting until the server
/// is gone; panics with the log when it fails.
fn pg_ctl_stop(dir: &Path, mode: &str) {
    let output = run_with_input(
        as_owner("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-m", mode, "-w", "-t"])
            .arg(SERVER_TIMEOUT.as_secs().to_string()),
        "",
    );
    assert!(
        output.status.success(),
        "pg_ctl stop in {}: {}\nserver log:\n{}",
        dir.display(),
        describe(&output),
        server_log(dir)
    );
}

fn server_log(dir: &Path) -> String {
    fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

/// Runs `psql -X -q -At` on `url` (as root: the role is in the URL) with `sql`
/// on its stdin, stopping at the first error.
fn psql(url: &str, sql: &str) -> Output {
    run_with_input(
        Command::new(bin("psql"))
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", url])
            .env("PGCONNECT_TIMEOUT", "30"),
        sql,
    )
}

/// Sends `kill -s name` to `pids`; whether it reached them all.
fn signal(name: &str, pids: &[u32]) -> bool {
    Command::new("kill")
        .args(["-s", name, "--"])
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status()
        .expect("run kill")
        .success()
}

/// State, parent and the rest of `/proc/PID/stat` after the command name.
fn proc_stat(pid: &str) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold anything.
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Whether process `pid` runs (a zombie, waiting to be reaped, does not).
fn alive(pid: u32) -> bool {
    proc_stat(&pid.to_string()).is_some_and(|fields| fields[0] != "Z")
}

/// The live children of process `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let parent = parent.to_string();
    fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            proc_stat(&pid.to_string())
                .is_some_and(|fields| fields[0] != "Z" && fields.get(1) == Some(&parent))
        })
        .collect()
}

fn admin_url(dir: &Path, port: u16) -> String {
    url(SUPERUSER, &socket_host(dir), port, "postgres")
}

fn url(user: &str, host: &str, port: u16, db: &str) -> String {
    format!("postgresql://{user}@{host}:{port}/{db}")
}

/// The socket directory as a URL's host: percent-encoded, slashes too.
fn socket_host(dir: &Path) -> String {
    percent_encode(&dir.to_string_lossy(), "")
}

/// `text` with every byte but unreserved ones and those in `keep`
/// percent-encoded.
fn percent_encode(text: &str, keep: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.as_bytes().contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// 32 random hex digits from the kernel.
fn random_password() -> String {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    data_encoding::HEXLOWER.encode(&bytes)
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}
