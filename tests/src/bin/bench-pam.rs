//! Wall time of pamtester logins through pam_otp (otpd) against the same
//! logins through Debian's pam_google_authenticator, with the same secrets
//! and codes.
//!
//! The machine is shared and noisy, so the figure is a ratio of runs made
//! in one sitting: each round runs N logins through one module, then N
//! logins through the other (the order alternates between rounds), and the
//! result is the median of the per-round ratios otpd / google-authenticator
//! (goal: at most 1.1). A benchmark, not a test: it prints figures and
//! asserts nothing about time. A failed login invalidates the figures and
//! is printed.
//!
//! Both sides refuse replays (otpd always, google-authenticator through
//! DISALLOW_REUSE) and accept one step either side of now, so every round
//! logs in fresh users, `bpam0` … `bpam{N*rounds-1}`, once on each side
//! with the code of the step current at that moment: no (user, step) pair
//! is ever used twice on one side, and a step boundary between computing
//! and checking a code stays inside the window. google-authenticator reads
//! `DIR/${USER}` as root (`user=root`), so the users need no passwd entry.
//!
//! Root only: writes /etc/pam.d/otpd-bench-otp and /etc/pam.d/otpd-bench-ga
//! (removed again on exit and on panic, not on SIGINT).
//!
//! apt-get install -y libpam-google-authenticator pamtester
//! cargo build --release -p otpd -p pam_otp && cargo build --release -p e2e --bin bench-pam
//! target/release/bench-pam [--logins 200] [--rounds 5] [--synchronous normal|full]
//!
//! google-authenticator fsyncs its secret file after every login
//! (DISALLOW_REUSE); otpd's default `sqlite_synchronous = "normal"` does
//! not fsync per commit, `--synchronous full` does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use otpcore::totp::{base32, Algorithm, TokenParams};

const GA_MODULE: &str = "/lib/x86_64-linux-gnu/security/pam_google_authenticator.so";
const OTP_SERVICE: &str = "otpd-bench-otp";
const GA_SERVICE: &str = "otpd-bench-ga";
const PARAMS: TokenParams = TokenParams {
    algorithm: Algorithm::Sha1,
    digits: 6,
    period: 60,
};
/// Logins per side before the rounds, on users of their own, not timed.
const WARM_UP: usize = 5;

struct Options {
    logins: usize,
    rounds: usize,
    synchronous: String,
}

fn options() -> Options {
    let mut o = Options {
        logins: 200,
        rounds: 5,
        synchronous: "normal".to_owned(),
    };
    e2e::bench_args("bench-pam", |flag, value| {
        match flag {
            "--logins" => o.logins = e2e::bench_value(value, "--logins N"),
            "--rounds" => o.rounds = e2e::bench_value(value, "--rounds N"),
            "--synchronous" => o.synchronous = value.to_owned(),
            _ => return false,
        }
        true
    });
    assert!(
        o.logins > 0 && o.rounds > 0,
        "--logins and --rounds must be > 0"
    );
    o
}

/// Exits with a message when this cannot run here.
fn check_prerequisites() {
    let uid = fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    let mut missing = Vec::new();
    if uid != 0 {
        missing.push("root (it writes /etc/pam.d service files)".to_owned());
    }
    if !Path::new(GA_MODULE).is_file() {
        missing.push(format!("{GA_MODULE} (libpam-google-authenticator)"));
    }
    // `pamtester -v` exits 255; only whether it starts matters.
    let pamtester = Command::new("pamtester")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if pamtester.is_err() {
        missing.push("pamtester".to_owned());
    }
    if !missing.is_empty() {
        eprintln!(
            "bench-pam needs {}; as root: apt-get install -y libpam-google-authenticator pamtester",
            missing.join(", ")
        );
        std::process::exit(2);
    }
}

/// A PAM service file, removed on drop.
struct PamService {
    name: &'static str,
    path: PathBuf,
}

impl PamService {
    fn new(name: &'static str, auth_line: &str) -> PamService {
        let path = Path::new("/etc/pam.d").join(name);
        fs::write(
            &path,
            format!("{auth_line}\naccount required pam_permit.so\n"),
        )
        .expect("write the /etc/pam.d service file");
        PamService { name, path }
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn random_secrets(count: usize) -> Vec<Vec<u8>> {
    let mut urandom = File::open("/dev/urandom").expect("/dev/urandom");
    (0..count)
        .map(|_| {
            let mut secret = vec![0u8; 20];
            urandom.read_exact(&mut secret).expect("read /dev/urandom");
            secret
        })
        .collect()
}

/// One google-authenticator secret file per user in `dir`, 0600 root.
fn write_ga_files(dir: &Path, names: &[String], secrets: &[Vec<u8>]) {
    fs::create_dir(dir).expect("mkdir ga");
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).expect("chmod ga");
    for (name, secret) in names.iter().zip(secrets) {
        let text = format!(
            "{}\n\" TOTP_AUTH\n\" STEP_SIZE 60\n\" WINDOW_SIZE 3\n\" DISALLOW_REUSE\n",
            base32(secret).as_str()
        );
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(name))
            .expect("create a secret file");
        file.write_all(text.as_bytes())
            .expect("write a secret file");
    }
}

/// What a run of logins left behind.
struct Run {
    seconds: f64,
    failures: Vec<String>,
}

/// `pamtester SERVICE USER authenticate` with `code` on stdin: None when
/// it succeeded, else what pamtester said.
fn login(service: &PamService, name: &str, code: &str) -> Option<String> {
    let output = e2e::run_with_input(
        Command::new("pamtester").args([service.name, name, "authenticate"]),
        &format!("{code}\n"),
    );
    (!output.status.success()).then(|| {
        format!(
            "{} {name}: {} {}",
            service.name,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })
}

/// One login for each of `names`, each fed the code current at that moment.
fn logins(service: &PamService, names: &[String], secrets: &[Vec<u8>]) -> Run {
    let mut failures = Vec::new();
    let started = Instant::now();
    for (name, secret) in names.iter().zip(secrets) {
        let code = PARAMS.code_at(secret, e2e::now_unix());
        failures.extend(login(service, name, code.as_str()));
    }
    Run {
        seconds: started.elapsed().as_secs_f64(),
        failures,
    }
}

/// That the service really checks codes: the current step's code logs in
/// once, then the same code (a replay) and a code far outside the window
/// are refused. Returns what went wrong.
fn controls(service: &PamService, name: &str, secret: &[u8]) -> Vec<String> {
    let step = PARAMS.step_at(e2e::now_unix());
    let code = PARAMS.code_for_step(secret, step);
    let far = PARAMS.code_for_step(secret, step + 10);
    let mut wrong = Vec::new();
    if let Some(failure) = login(service, name, code.as_str()) {
        wrong.push(format!("control login refused: {failure}"));
    }
    if login(service, name, code.as_str()).is_none() {
        wrong.push(format!("{}: a replayed code was accepted", service.name));
    }
    if far.as_str() != code.as_str() && login(service, name, far.as_str()).is_none() {
        wrong.push(format!(
            "{}: a code 10 steps ahead was accepted",
            service.name
        ));
    }
    wrong
}

fn main() {
    let o = options();
    check_prerequisites();
    // Returns after every guard has cleaned up.
    if !run(&o) {
        std::process::exit(1);
    }
}

/// Sets up both sides, runs the rounds, prints; false when a login failed.
fn run(o: &Options) -> bool {
    let module = e2e::pam_module_path();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let socket = dir.path().join("otpd.sock");
    let ga_dir = dir.path().join("ga");

    // Warm-up users, the rounds' users, one control user.
    let total = WARM_UP + o.logins * o.rounds + 1;
    let names: Vec<String> = (0..total).map(|i| format!("bpam{i}")).collect();
    let secrets = random_secrets(total);
    e2e::import_active_tokens(&state, "", &names, &secrets, PARAMS);
    write_ga_files(&ga_dir, &names, &secrets);
    let _daemon = e2e::start_socket_otpd(dir.path(), &state, &socket, &o.synchronous);
    let otp = PamService::new(
        OTP_SERVICE,
        &format!(
            "auth required {} socket={}",
            module.display(),
            socket.display()
        ),
    );
    let ga = PamService::new(
        GA_SERVICE,
        &format!(
            "auth required pam_google_authenticator.so secret={}/${{USER}} user=root",
            ga_dir.display()
        ),
    );

    let mut failures = Vec::new();
    let control = total - 1;
    for service in [&otp, &ga] {
        failures.extend(logins(service, &names[..WARM_UP], &secrets[..WARM_UP]).failures);
        failures.extend(controls(service, &names[control], &secrets[control]));
    }

    println!(
        "pamtester logins: pam_otp (otpd, synchronous={}) vs pam_google_authenticator, \
         {} logins per run, {} rounds",
        o.synchronous, o.logins, o.rounds
    );
    println!(
        "{:>5} {:>6} {:>9} {:>9} {:>7}",
        "round", "first", "otpd s", "ga s", "ratio"
    );
    let (mut otp_secs, mut ga_secs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..o.rounds {
        let users = WARM_UP + round * o.logins..WARM_UP + (round + 1) * o.logins;
        let (names, secrets) = (&names[users.clone()], &secrets[users]);
        // Alternate which side goes first, so a drift in the machine's load
        // does not favour one side.
        let otp_first = round % 2 == 0;
        let (otp_run, ga_run) = if otp_first {
            let a = logins(&otp, names, secrets);
            (a, logins(&ga, names, secrets))
        } else {
            let b = logins(&ga, names, secrets);
            (logins(&otp, names, secrets), b)
        };
        let ratio = otp_run.seconds / ga_run.seconds;
        println!(
            "{:>5} {:>6} {:>9.3} {:>9.3} {:>7.3}",
            round + 1,
            if otp_first { "otpd" } else { "ga" },
            otp_run.seconds,
            ga_run.seconds,
            ratio
        );
        otp_secs.push(otp_run.seconds);
        ga_secs.push(ga_run.seconds);
        ratios.push(ratio);
        failures.extend(otp_run.failures);
        failures.extend(ga_run.failures);
    }
    let per_login = |secs: &[f64]| e2e::median(secs) / o.logins as f64 * 1e3;
    println!(
        "median ratio otpd/ga {:.3} (goal <= 1.1); median per login: otpd {:.2} ms, ga {:.2} ms",
        e2e::median(&ratios),
        per_login(&otp_secs),
        per_login(&ga_secs)
    );
    if failures.is_empty() {
        println!("all logins succeeded; replays and wrong codes were refused on both sides");
    } else {
        println!(
            "{} FAILED LOGINS: the figures above are invalid",
            failures.len()
        );
        for failure in failures.iter().take(20) {
            println!("  {failure}");
        }
    }
    failures.is_empty()
}
