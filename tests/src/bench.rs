//! What the benchmarks in `src/bin` share: their command line (`--flag
//! value` pairs), the start-up of the otpd nodes they measure (a store,
//! a directory per node, users imported with active tokens), and the
//! statistics they print. The benchmarks print figures; they are not
//! tests.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use otpcore::totp::TokenParams;
use tempfile::TempDir;

use crate::codes::now_unix;
use crate::daemon::{import_active_tokens, BenchStore};

/// Hands each `--flag value` pair of the command line to `set`, which
/// answers false for a flag it does not know: that ends the program (exit
/// status 2; 0 for `--help`) with a pointer to the usage comment at the
/// top of `bench`'s source.
pub fn bench_args(bench: &str, mut set: impl FnMut(&str, &str) -> bool) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        if pair[0] == "--help" || pair[0] == "-h" {
            println!("usage: see the comment at the top of tests/src/bin/{bench}.rs");
            std::process::exit(0);
        }
        if !set(&pair[0], value) {
            usage_error(&format!(
                "unknown option {}; see the comment at the top of tests/src/bin/{bench}.rs",
                pair[0]
            ));
        }
    }
}

/// `value` parsed; the program ends (exit status 2) showing `usage` (e.g.
/// `--users N`) when it does not parse.
pub fn bench_value<T: FromStr>(value: &str, usage: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| usage_error(&format!("{usage}: cannot read {value:?}")))
}

/// Ends the program on a command line it cannot use: `message` on
/// standard error, exit status 2.
pub fn usage_error(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2)
}

/// The options of a benchmark of otpd nodes on a store of their own:
/// `--users N`, `--seconds S`, `--synchronous normal|full`, `--store
/// sqlite|postgresql`, `--nodes N`, `--db-cpus LIST`.
pub struct NodeOptions {
    pub users: usize,
    pub seconds: f64,
    pub synchronous: String,
    pub store: String,
    pub nodes: usize,
    /// The CPUs of the PostgreSQL server (`taskset -c`), or all.
    pub db_cpus: Option<String>,
}

impl NodeOptions {
    /// Reads the command line of `bench`: these options, starting from
    /// `users` users, 3 seconds, `synchronous = normal`, SQLite and one
    /// node, and those that `own` takes (it answers false for a flag it
    /// does not know). Ends the program (exit status 2) when the nodes and
    /// the store do not go together.
    pub fn from_args(
        bench: &str,
        users: usize,
        mut own: impl FnMut(&str, &str) -> bool,
    ) -> NodeOptions {
        let mut o = NodeOptions {
            users,
            seconds: 3.0,
            synchronous: "normal".to_owned(),
            store: "sqlite".to_owned(),
            nodes: 1,
            db_cpus: None,
        };
        bench_args(bench, |flag, value| {
            match flag {
                "--users" => o.users = bench_value(value, "--users N"),
                "--seconds" => o.seconds = bench_value(value, "--seconds S"),
                "--synchronous" => o.synchronous = value.to_owned(),
                "--store" => o.store = value.to_owned(),
                "--nodes" => o.nodes = bench_value(value, "--nodes N"),
                "--db-cpus" => o.db_cpus = Some(value.to_owned()),
                _ => return own(flag, value),
            }
            true
        });
        if !(o.nodes == 1 || (o.nodes > 1 && o.store == "postgresql")) {
            usage_error("--nodes above 1 needs --store postgresql; --nodes 0 serves nobody");
        }
        if o.db_cpus.is_some() && o.store != "postgresql" {
            usage_error("--db-cpus needs --store postgresql");
        }
        o
    }
}

/// A node of a benchmark: its directory (config, log, socket) and its
/// state directory.
pub struct BenchNode {
    pub dir: PathBuf,
    pub state: PathBuf,
}

/// The otpd side of a benchmark before its nodes start: the store that
/// `--store` names, a temp dir with a directory per node, and the users
/// `u0`, `u1`, ... imported into the store with active tokens.
pub struct BenchNodes {
    /// Declared first, so removed before the store's server stops.
    temp: TempDir,
    pub store: BenchStore,
    pub nodes: Vec<BenchNode>,
}

impl BenchNodes {
    /// Sets up the store and the nodes' directories of `o`, and imports
    /// `o.users` users with `params` and the secrets `secrets(o.users)`
    /// makes, saying on stderr how long that took. Returns the secrets too.
    pub fn prepare(
        o: &NodeOptions,
        params: TokenParams,
        secrets: impl FnOnce(usize) -> Vec<Vec<u8>>,
    ) -> (BenchNodes, Vec<Vec<u8>>) {
        let store = BenchStore::new(&o.store, o.db_cpus.as_deref());
        let temp = tempfile::tempdir().expect("tempdir");
        let nodes: Vec<BenchNode> = (0..o.nodes)
            .map(|i| {
                let dir = temp.path().join(format!("node{i}"));
                std::fs::create_dir(&dir).expect("node dir");
                let state = dir.join("state");
                BenchNode { dir, state }
            })
            .collect();
        eprintln!("generating and importing {} users", o.users);
        let started = Instant::now();
        let secrets = secrets(o.users);
        let names: Vec<String> = (0..o.users).map(|i| format!("u{i}")).collect();
        import_active_tokens(&nodes[0].state, store.table(), &names, &secrets, params);
        eprintln!("imported in {:.1} s", started.elapsed().as_secs_f64());
        let bench = BenchNodes { temp, store, nodes };
        (bench, secrets)
    }

    /// The temp dir the nodes' directories are in, for other servers'.
    pub fn dir(&self) -> &Path {
        self.temp.path()
    }

    /// `sqlite (1 node)`, `postgresql (3 nodes)`: what the figures are of.
    pub fn described(&self) -> String {
        let n = self.nodes.len();
        let plural = if n == 1 { "" } else { "s" };
        format!("{} ({n} node{plural})", self.store.backend())
    }
}

/// Sleeps into the next step of `period` seconds when fewer than `budget`
/// seconds are left of the current one, so that a run of `budget` seconds
/// stays inside one step.
pub fn wait_for_room_in_step(period: u64, budget: u64) {
    let left = period - now_unix() % period;
    if left < budget {
        eprintln!("waiting {left} s for a fresh {period}-second step");
        std::thread::sleep(Duration::from_secs(left + 1));
    }
}

/// The value at fraction `p` (0 to 1) of `sorted`; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

/// The median of `values`; zero when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}
