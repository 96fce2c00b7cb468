//! Peers of the login tests: local test users (useradd/userdel), a real
//! sshd and sudo that load `libpam_otp.so` from a PAM file bound over the
//! system's one in a private mount namespace (the system's /etc/pam.d and
//! /etc/sudoers are never changed), ssh driven by expect(1), and a "phone"
//! that hands out each time step's code once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use e2e::{assert_success, describe, free_port, now_unix, oathtool_code_at, stdout};

/// Debian packages these tests need beyond the harness's own peers.
pub const LOGIN_PACKAGES: &str =
    "openssh-server openssh-client sudo expect util-linux mount passwd";

/// The period of the tokens these tests enrol.
const PERIOD: u64 = 60;

/// Panics (naming the packages) unless the login peers are installed.
pub fn require_login_peers() {
    let missing: Vec<&str> = [
        "/usr/sbin/sshd",
        "/usr/bin/ssh",
        "/usr/bin/ssh-keygen",
        "/usr/bin/sudo",
        "/usr/bin/expect",
        "/usr/bin/unshare",
        "/usr/sbin/runuser",
        "/usr/sbin/useradd",
        "/usr/sbin/userdel",
        "/usr/bin/mount",
    ]
    .into_iter()
    .filter(|p| !Path::new(p).exists())
    .collect();
    assert!(
        missing.is_empty(),
        "the login tests need {missing:?}; install them with `apt-get install {LOGIN_PACKAGES}`"
    );
}

// ---------------------------------------------------------------------------
// The phone

/// oathtool as the user's phone, keeping track of the steps whose codes
/// were already typed, so that no test trips over the replay rule.
pub struct Phone {
    secret: String,
    last_step: u64,
}

impl Phone {
    /// A phone for a token from [`e2e::TestEnv::enrol_active`], which
    /// confirmed with a code of a step before now.
    pub fn new(secret: &str) -> Phone {
        Phone {
            secret: secret.to_owned(),
            last_step: now_step().saturating_sub(1),
        }
    }

    /// The code of `step`.
    pub fn code_for_step(&self, step: u64) -> String {
        oathtool_code_at(&self.secret, PERIOD, step * PERIOD)
    }

    /// The code of the earliest step not handed out yet and not behind now
    /// (the window is one step either side, so it is accepted at once or
    /// after a short wait, which this does).
    pub fn next_code(&mut self) -> String {
        let step = (self.last_step + 1).max(now_step());
        // A code of step s is accepted from the start of step s - 1.
        let from = (step - 1) * PERIOD + 1;
        let now = now_unix();
        if now < from {
            std::thread::sleep(Duration::from_secs(from - now));
        }
        self.last_step = step;
        self.code_for_step(step)
    }

    /// `n` distinct well-formed codes that match no step near now.
    pub fn wrong_codes(&self, n: usize) -> Vec<String> {
        let here = now_step();
        let near: Vec<String> = (here.saturating_sub(4)..=here + 4)
            .map(|s| self.code_for_step(s))
            .collect();
        (0u64..)
            .map(|i| format!("{:06}", (i * 137_911 + 24_681) % 1_000_000))
            .filter(|c| !near.contains(c))
            .take(n)
            .collect()
    }
}

/// The current 60-second time step.
pub fn now_step() -> u64 {
    now_unix() / PERIOD
}

// ---------------------------------------------------------------------------
// Local users

/// A local user made with `useradd -m` for one test; `userdel -r` on drop.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The user's own group (Debian's user private group).
    pub group: String,
    pub home: PathBuf,
    /// The Unix password, made up for the test (sudo asks for it).
    pub password: String,
}

/// useradd and userdel lock /etc/passwd: one at a time in this process.
static ACCOUNTS: Mutex<()> = Mutex::new(());

fn accounts(args: &[&str], what: &str) -> Output {
    let _lock = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut last = None;
    for _ in 0..20 {
        let output = Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", args[0]));
        if output.status.success() {
            return output;
        }
        // Another program (the PAM tests' own users?) holds the lock.
        if String::from_utf8_lossy(&output.stderr).contains("lock") {
            std::thread::sleep(Duration::from_millis(250));
            last = Some(output);
            continue;
        }
        return output;
    }
    panic!("{what}: {}", describe(&last.expect("some attempt")));
}

fn id_of(name: &str, flag: &str) -> String {
    let output = Command::new("id").arg(flag).arg(name).output().expect("id");
    assert_success(&output, &format!("id {flag} {name}"));
    stdout(&output).trim().to_owned()
}

impl TestUser {
    /// `useradd -m -s /bin/sh otpe2e<pid>u<n>`.
    pub fn create() -> TestUser {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("otpe2e{}u{n}", std::process::id());
        let output = accounts(&["useradd", "-m", "-U", "-s", "/bin/sh", &name], "useradd");
        assert_success(&output, &format!("useradd {name}"));
        let password = format!("pw-{}-{n}", std::process::id());
        let script = format!("echo '{name}:{password}' | chpasswd");
        let output = accounts(&["sh", "-c", &script], "chpasswd");
        assert_success(&output, &format!("chpasswd {name}"));
        let user = TestUser {
            password,
            uid: id_of(&name, "-u").parse().expect("uid"),
            gid: id_of(&name, "-g").parse().expect("gid"),
            group: id_of(&name, "-gn"),
            home: PathBuf::from(format!("/home/{name}")),
            name,
        };
        assert!(
            user.home.is_dir(),
            "useradd -m made no {}",
            user.home.display()
        );
        user
    }

    /// Runs `program args...` as this user with `runuser`.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new("runuser")
            .args(["-u", &self.name, "--", program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run runuser")
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let output = accounts(&["userdel", "-r", "-f", &self.name], "userdel");
        if !output.status.success() {
            eprintln!("userdel {}: {}", self.name, describe(&output));
        }
        // sudo's time stamp for the user, if sudo wrote one.
        let _ = fs::remove_file(format!("/run/sudo/ts/{}", self.name));
    }
}

// ---------------------------------------------------------------------------
// PAM files and the mount namespace

/// The shipped PAM stack `conf/pam.d/NAME`, pointed at the built module and
/// the test's socket, so the tests log in through what we ship.
pub fn write_pam_file(path: &Path, socket: &Path, name: &str) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../conf/pam.d")
        .join(name);
    let text = fs::read_to_string(&shipped).expect("the shipped PAM stack");
    assert!(
        text.contains(" pam_otp.so socket=/run/otpd/otpd.sock"),
        "{text}"
    );
    let module = e2e::pam_module_path();
    let text = text
        .replace(" pam_otp.so ", &format!(" {} ", module.display()))
        .replace("/run/otpd/otpd.sock", &socket.display().to_string());
    fs::write(path, text).expect("write the PAM file");
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod the PAM file");
}

pub fn in_private_mounts(binds: &[(&Path, &str)], command: &[&str]) -> Command {
    let mut script = String::new();
    let mut args: Vec<String> = Vec::new();
    for (i, (from, to)) in binds.iter().enumerate() {
        script.push_str(&format!(
            "mount --bind \"${a}\" \"${b}\" && ",
            a = 2 * i + 1,
            b = 2 * i + 2
        ));
        args.push(from.display().to_string());
        args.push((*to).to_owned());
    }
    script.push_str(&format!("shift {} && exec \"$@\"", 2 * binds.len()));
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ])
    .args(&args)
    .args(command);
    cmd
}

// ---------------------------------------------------------------------------
// sshd and ssh

/// A real sshd on 127.0.0.1 with pam_otp as its PAM auth stack, in its own
/// mount namespace; killed on drop.
pub struct Sshd {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    log: PathBuf,
    /// The private key that `user` logs in with.
    pub client_key: PathBuf,
}

fn ssh_keygen(path: &Path) {
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "otpd-e2e", "-f"])
        .arg(path)
        .output()
        .expect("run ssh-keygen");
    assert_success(&output, "ssh-keygen");
}

impl Sshd {
    /// Starts sshd for `user` only, with publickey then keyboard-interactive
    /// (pam_otp asking otpd at `socket`); waits for its banner.
    pub fn start(dir: &Path, socket: &Path, user: &TestUser) -> Sshd {
        let dir = dir.join("sshd");
        fs::create_dir_all(&dir).expect("sshd dir");
        // Privilege separation chroots into /run/sshd.
        fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755)).expect("chmod");

        let host_key = dir.join("ssh_host_ed25519_key");
        ssh_keygen(&host_key);
        let client_key = dir.join("client_key");
        ssh_keygen(&client_key);
        let ssh_dir = user.home.join(".ssh");
        fs::create_dir_all(&ssh_dir).expect("~/.ssh");
        fs::copy(
            client_key.with_extension("pub"),
            ssh_dir.join("authorized_keys"),
        )
        .expect("authorized_keys");
        let output = Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", user.uid, user.gid))
            .arg(&ssh_dir)
            .output()
            .expect("chown");
        assert_success(&output, "chown ~/.ssh");

        let pam_file = dir.join("pam-sshd");
        write_pam_file(&pam_file, socket, "sshd");
        let port = free_port();
        let config = dir.join("sshd_config");
        let text = format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             Include {shipped}\n\
             PubkeyAuthentication yes\n\
             AuthorizedKeysFile .ssh/authorized_keys\n\
             StrictModes no\n\
             PermitRootLogin no\n\
             AllowUsers {user}\n\
             UseDNS no\n\
             PrintMotd no\n\
             LogLevel VERBOSE\n",
            host_key = host_key.display(),
            pid = dir.join("sshd.pid").display(),
            shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../conf/sshd_config.d/otpd.conf")
                .display(),
            user = user.name,
        );
        fs::write(&config, text).expect("sshd_config");

        let log = dir.join("sshd.log");
        let config_arg = config.display().to_string();
        let child = in_private_mounts(
            &[(&pam_file, "/etc/pam.d/sshd")],
            &["/usr/sbin/sshd", "-D", "-e", "-f", &config_arg],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("sshd log"))
        .spawn()
        .expect("start unshare ... sshd");
        let mut sshd = Sshd {
            child,
            port,
            dir,
            log,
            client_key,
        };
        sshd.wait_for_banner();
        sshd
    }

    fn wait_for_banner(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut banner = [0u8; 4];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "sshd exited with {status} before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on port {} within 30 s:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What sshd wrote so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `ssh ... user@127.0.0.1 echo LOGGED-IN` under expect(1), answering
    /// the "One-time password:" prompt with `code`. Exit status and the
    /// terminal transcript.
    pub fn login(&self, user: &TestUser, code: &str) -> (Option<i32>, String) {
        let script = self.dir.join("ssh-login.exp");
        fs::write(&script, SSH_EXPECT).expect("write the expect script");
        let port = self.port.to_string();
        let output = Command::new("expect")
            .arg("-f")
            .arg(&script)
            .arg("ssh")
            .args(["-F", "/dev/null", "-i"])
            .arg(&self.client_key)
            .args(["-p", &port])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "PreferredAuthentications=publickey,keyboard-interactive",
                "-o",
                "NumberOfPasswordPrompts=1",
                "-o",
                "ConnectTimeout=20",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("{}@127.0.0.1", user.name))
            .args(["echo", "LOGGED-IN"])
            .env("OTP_CODE", code)
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .output()
            .expect("expect(1) runs (Debian package expect)");
        let transcript = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code(), transcript)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- sshd log ---\n{}", self.log());
        }
    }
}

/// Spawns the command of its arguments, answers the one-time password
/// prompt with $OTP_CODE (no echo: the code never shows in the
/// transcript), and exits with the command's status. 97-99: the dialogue
/// went wrong.
const SSH_EXPECT: &str = r#"
set timeout 40
spawn -noecho {*}$argv
expect {
    -re "One-time password: ?" { send -- "$env(OTP_CODE)\r" }
    timeout { puts "\nE2E: no one-time password prompt within $timeout s"; exit 97 }
    eof {
        puts "\nE2E: ssh ended before the one-time password prompt"
        lassign [wait] pid spawnid oserr status
        exit $status
    }
}
expect {
    -re "One-time password: ?" { puts "\nE2E: asked for the one-time password again"; exit 98 }
    timeout { puts "\nE2E: ssh did not finish within $timeout s"; exit 99 }
    eof
}
lassign [wait] pid spawnid oserr status
exit $status
"#;

/// Whether the transcript has a line that is exactly `LOGGED-IN` (the
/// remote command's output, not an echo of the command line).
pub fn logged_in(transcript: &str) -> bool {
    transcript
        .lines()
        .any(|l| l.trim_end_matches('\r') == "LOGGED-IN")
}

// ---------------------------------------------------------------------------
// sudo

/// sudo with pam_otp as its PAM auth stack and a sudoers granting `user`
/// everything, both bound over the system's files in a private mount
/// namespace.
pub struct Sudo {
    pam_file: PathBuf,
    sudoers: PathBuf,
}

impl Sudo {
    pub fn new(dir: &Path, socket: &Path, user: &TestUser) -> Sudo {
        let dir = dir.join("sudo");
        fs::create_dir_all(&dir).expect("sudo dir");
        let pam_file = dir.join("pam-sudo");
        write_pam_file(&pam_file, socket, "sudo");
        let sudoers = dir.join("sudoers");
        fs::write(
            &sudoers,
            format!(
                "Defaults env_reset\n\
                 Defaults lecture=never\n\
                 Defaults passwd_tries=1\n\
                 root ALL=(ALL:ALL) ALL\n\
                 {} ALL=(ALL:ALL) ALL\n",
                user.name
            ),
        )
        .expect("write sudoers");
        fs::set_permissions(&sudoers, fs::Permissions::from_mode(0o440)).expect("chmod sudoers");
        Sudo { pam_file, sudoers }
    }

    /// `runuser -u USER -- sudo -k -S id -u` with the user's password and
    /// then `code` on stdin (the shipped stack asks for both).
    pub fn id_u(&self, user: &TestUser, code: &str) -> Output {
        e2e::run_with_input(
            &mut in_private_mounts(
                &[
                    (&self.pam_file, "/etc/pam.d/sudo"),
                    (&self.sudoers, "/etc/sudoers"),
                ],
                &[
                    "runuser", "-u", &user.name, "--", "sudo", "-k", "-S", "id", "-u",
                ],
            ),
            &format!("{}\n{code}\n", user.password),
        )
    }
}
