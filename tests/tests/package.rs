//! The Debian package (packaging/, `[package.metadata.deb]` of otpd/Cargo.toml)
//! end to end, on this machine: build the .deb with cargo-deb, `dpkg -i` it,
//! check the installed files, owners and modes, start the installed otpd as
//! the package's `otpd` user with the installed configuration (socket and
//! HTTP port moved into the test's own directory: there is no systemd PID 1
//! here), import a token with the installed otpctl, log in with pamtester
//! through the installed pam_otp.so (oathtool plays the phone),
//! `systemd-analyze verify` the installed unit, and `dpkg --purge` it all
//! away again. lintian's findings are printed, not judged.
//!
//! Root only, and slow (a release build): one test. `OTPD_DEB=PATH` uses an
//! already built package instead of building one. Peers: dpkg-dev, cargo-deb
//! (`cargo install cargo-deb --locked`), pamtester, oathtool, systemd
//! (systemd-analyze), man-db, lintian (optional); tests/run-all.sh installs
//! them. The machine must not have the otpd package or an `otpd` user yet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::{
    assert_success, describe, free_port, oathtool_code, require_root_and_peers, run_with_input,
    said, stdout, wrong_code,
};

const PACKAGE: &str = "otpd";
const CONFIG: &str = "/etc/otpd/otpd.toml";
const STATE_DIR: &str = "/var/lib/otpd";
const OTPD: &str = "/usr/sbin/otpd";
const OTPCTL: &str = "/usr/sbin/otpctl";
const UNIT: &str = "/usr/lib/systemd/system/otpd.service";
const PAM_PROFILE: &str = "/usr/share/pam-configs/otpd";
const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const USER: &str = "pkguser";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert_success(&output, &format!("{program} {}", args.join(" ")));
    stdout(&output)
}

fn installed(package: &str) -> bool {
    let output = run("dpkg-query", &["-W", "-f=${Status}", package]);
    stdout(&output).contains("install ok installed") || stdout(&output).contains("config-files")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// Debian's multiarch triplet of this machine (x86_64-linux-gnu).
fn multiarch() -> String {
    let output = run("dpkg-architecture", &["-qDEB_HOST_MULTIARCH"]);
    if output.status.success() {
        return stdout(&output).trim().to_owned();
    }
    run_ok("gcc", &["-print-multiarch"]).trim().to_owned()
}

/// `$OTPD_DEB`, or a package built now: release build of the three crates,
/// then `cargo deb -p otpd --no-build`.
fn build_deb(out: &Path) -> PathBuf {
    if let Some(path) = std::env::var_os("OTPD_DEB") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "OTPD_DEB={} is not a file", path.display());
        return path;
    }
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let cargo_deb = Command::new(cargo)
        .args(["deb", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        cargo_deb,
        "cargo-deb is missing: `cargo install cargo-deb --locked` (tests/run-all.sh does)"
    );
    let root = workspace_root();
    let build = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "otpd",
            "-p",
            "otpctl",
            "-p",
            "pam_otp",
        ])
        .output()
        .expect("run cargo build --release");
    assert_success(&build, "cargo build --release");
    let deb = Command::new(cargo)
        .current_dir(&root)
        .args(["deb", "-p", PACKAGE, "--no-build", "--output"])
        .arg(out)
        .output()
        .expect("run cargo deb");
    assert_success(&deb, "cargo deb");
    let built: Vec<PathBuf> = fs::read_dir(out)
        .expect("read the output dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(built.len(), 1, "cargo deb made {built:?}");
    built[0].clone()
}

/// Undoes what the test did to the machine, also when it fails halfway:
/// stops the otpd it started (by its PID), removes its PAM service file and
/// purges the package.
struct Cleanup {
    otpd: Option<Child>,
    pam_service: Option<PathBuf>,
}

impl Cleanup {
    fn stop_otpd(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.otpd.take()?;
        let pid = child.id().to_string();
        let _ = run("kill", &["-TERM", &pid]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.stop_otpd();
        if let Some(path) = self.pam_service.take() {
            let _ = fs::remove_file(path);
        }
        if installed(PACKAGE) {
            let _ = run("dpkg", &["--purge", PACKAGE]);
        }
    }
}

fn getent(db: &str, key: &str) -> Option<Vec<String>> {
    let output = run("getent", &[db, key]);
    output.status.success().then(|| {
        stdout(&output)
            .trim()
            .split(':')
            .map(str::to_owned)
            .collect()
    })
}

#[track_caller]
fn assert_owner_mode(path: &str, uid: u32, gid: u32, mode: u32) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (uid, gid, mode),
        "{path}: (uid, gid, mode) = ({}, {}, {:04o}), expected ({uid}, {gid}, {mode:04o})",
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o7777
    );
}

/// pamtester SERVICE USER authenticate with `code` typed at the prompt.
fn pamtester(service: &str, code: &str) -> Output {
    run_with_input(
        Command::new("pamtester").args([service, USER, "authenticate"]),
        &format!("{code}\n"),
    )
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn debian_package_builds_installs_logs_in_and_purges() {
    require_root_and_peers();
    for (tool, flag) in [
        ("dpkg-deb", "--version"),
        ("pamtester", "-v"),
        ("oathtool", "--version"),
        ("systemd-analyze", "--version"),
        ("setpriv", "--version"),
    ] {
        let found = Command::new(tool)
            .arg(flag)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(found, "{tool} is missing (tests/run-all.sh installs it)");
    }
    assert!(
        !installed(PACKAGE),
        "the otpd package is installed on this machine already; the test installs and \
         purges its own (dpkg --purge otpd first)"
    );
    assert!(
        getent("passwd", "otpd").is_none(),
        "a user otpd exists already; the test checks that the package creates and removes it"
    );
    let triplet = multiarch();
    let pam_module = format!("/usr/lib/{triplet}/security/pam_otp.so");
    let common_auth_before = fs::read_to_string("/etc/pam.d/common-auth").ok();

    // --- Build ---------------------------------------------------------
    let out = tempfile::tempdir().expect("tempdir");
    let deb = build_deb(out.path());
    let deb_str = deb.to_str().expect("utf-8 path");
    let contents = run_ok("dpkg-deb", &["-c", deb_str]);
    let root = workspace_root();
    let mut expected = vec![
        "./usr/sbin/otpd".to_owned(),
        "./usr/sbin/otpctl".to_owned(),
        format!(".{pam_module}"),
        "./etc/otpd/otpd.toml".to_owned(),
        "./usr/share/pam-configs/otpd".to_owned(),
        "./usr/lib/systemd/system/otpd.service".to_owned(),
    ];
    // The man pages under packaging/man, compressed.
    if let Ok(pages) = fs::read_dir(root.join("packaging/man")) {
        for page in pages.filter_map(Result::ok) {
            let name = page.file_name().to_string_lossy().into_owned();
            if let Some((_, section)) = name.rsplit_once('.') {
                expected.push(format!("./usr/share/man/man{section}/{name}.gz"));
            }
        }
    }
    for path in &expected {
        assert!(
            contents.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} is not in the package:\n{contents}"
        );
    }

    // --- Install -------------------------------------------------------
    let mut cleanup = Cleanup {
        otpd: None,
        pam_service: None,
    };
    let install = run("dpkg", &["-i", deb_str]);
    assert_success(&install, "dpkg -i");

    // The system user: home /var/lib/otpd, no login shell, its own group.
    let passwd = getent("passwd", "otpd").expect("postinst created the user otpd");
    let uid: u32 = passwd[2].parse().expect("uid");
    let gid: u32 = passwd[3].parse().expect("gid");
    assert!(uid < 1000, "otpd is not a system user: {passwd:?}");
    assert_eq!(passwd[5], STATE_DIR, "{passwd:?}");
    assert!(passwd[6].ends_with("nologin"), "{passwd:?}");
    let group = getent("group", "otpd").expect("postinst created the group otpd");
    assert_eq!(group[2], gid.to_string(), "{group:?}");

    assert_owner_mode(OTPD, 0, 0, 0o755);
    assert_owner_mode(OTPCTL, 0, 0, 0o755);
    assert_owner_mode(&pam_module, 0, 0, 0o644);
    assert_owner_mode("/etc/otpd", 0, gid, 0o750);
    assert_owner_mode(CONFIG, 0, gid, 0o640);
    assert_owner_mode(STATE_DIR, uid, gid, 0o700);
    let conffiles = fs::read_to_string("/var/lib/dpkg/info/otpd.conffiles").unwrap_or_default();
    assert!(
        conffiles.lines().any(|l| l.trim() == CONFIG),
        "{CONFIG} is not a conffile: {conffiles:?}"
    );

    // The pam-auth-update profile exists and is off: installing did not
    // put the fail-closed module into the common stacks.
    let profile = fs::read_to_string(PAM_PROFILE).expect("the pam-configs profile");
    assert!(
        profile.lines().any(|l| l.trim() == "Default: no"),
        "{profile}"
    );
    assert!(profile.contains("pam_otp.so"), "{profile}");
    assert_eq!(
        fs::read_to_string("/etc/pam.d/common-auth").ok(),
        common_auth_before,
        "installing changed /etc/pam.d/common-auth"
    );

    // The installed config loads as installed, for root and for otpd.
    let check = run(OTPD, &["--check-config"]);
    assert_success(&check, "otpd --check-config (root, default path)");
    let check = run(
        "setpriv",
        &[
            "--reuid=otpd",
            "--regid=otpd",
            "--init-groups",
            "--",
            OTPD,
            "--config",
            CONFIG,
            "--check-config",
        ],
    );
    assert_success(&check, "otpd --check-config as otpd");

    // --- The unit ------------------------------------------------------
    let unit = fs::read_to_string(UNIT).expect("the installed unit");
    for line in [
        "ExecStart=/usr/sbin/otpd --config /etc/otpd/otpd.toml",
        "User=otpd",
        "Group=otpd",
        "StateDirectory=otpd",
        "RuntimeDirectory=otpd",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.lines().any(|l| l == line), "{UNIT} lacks {line:?}");
    }
    // Documentation=man:... is checked by verify; images that exclude
    // /usr/share/man from dpkg (some Docker images) cannot have the pages.
    let pages_installed = run("dpkg-query", &["-L", PACKAGE])
        .stdout
        .split(|&b| b == b'\n')
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .filter(|l| l.starts_with("/usr/share/man/") && l.ends_with(".gz"))
        .all(|l| Path::new(&l).exists());
    let mut verify = Command::new("systemd-analyze");
    verify.arg("verify");
    if !pages_installed {
        eprintln!("package: man pages not on disk (dpkg path-exclude?); verify --man=no");
        verify.arg("--man=no");
    }
    let verify = verify.arg(UNIT).output().expect("run systemd-analyze");
    let verify_said = said(&verify);
    assert!(
        verify.status.success()
            && !verify_said
                .lines()
                .any(|l| l.contains("otpd.service") && !l.starts_with("Created symlink")),
        "systemd-analyze verify {UNIT}: {}",
        describe(&verify)
    );

    // The exposure systemd rates the unit at (printed, not judged).
    if let Ok(security) = Command::new("systemd-analyze")
        .args(["security", "--offline=true", UNIT])
        .output()
    {
        let text = stdout(&security);
        let overall = text.lines().last().unwrap_or_default();
        eprintln!("package: systemd-analyze security: {overall}");
    }

    // --- Run the installed otpd as otpd ----------------------------------
    // No systemd here: a directory of the test's own stands in for
    // RuntimeDirectory=/run/otpd, and the HTTP port is a free one.
    let run_dir = tempfile::Builder::new()
        .prefix("otpd-package-")
        .tempdir()
        .expect("tempdir");
    std::os::unix::fs::chown(run_dir.path(), Some(uid), Some(gid)).expect("chown run dir");
    fs::set_permissions(run_dir.path(), fs::Permissions::from_mode(0o750)).expect("chmod");
    let socket = run_dir.path().join("otpd.sock");
    let port = free_port();
    let installed_config = fs::read_to_string(CONFIG).expect("read the installed config");
    let mut replaced = 0;
    let adapted: String = installed_config
        .lines()
        .map(|line| {
            if line.starts_with("path = \"/run/otpd/otpd.sock\"") {
                replaced += 1;
                format!("path = \"{}\"", socket.display())
            } else if line.starts_with("listen = \"127.0.0.1:8080\"") {
                replaced += 1;
                format!("listen = \"127.0.0.1:{port}\"")
            } else {
                line.to_owned()
            }
        })
        .map(|line| line + "\n")
        .collect();
    assert_eq!(
        replaced, 2,
        "the installed config changed shape:\n{installed_config}"
    );
    let config = run_dir.path().join("otpd.toml");
    fs::write(&config, adapted).expect("write the adapted config");
    std::os::unix::fs::chown(&config, Some(0), Some(gid)).expect("chown config");
    fs::set_permissions(&config, fs::Permissions::from_mode(0o640)).expect("chmod config");
    let config_str = config.to_str().expect("utf-8 path").to_owned();

    let log_path = run_dir.path().join("otpd.log");
    let log = fs::File::create(&log_path).expect("log file");
    let child = Command::new("setpriv")
        .args(["--reuid=otpd", "--regid=otpd", "--init-groups", "--"])
        .args([OTPD, "--config", &config_str])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start the installed otpd");
    cleanup.otpd = Some(child);
    let otpd_log = || fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        if let Some(child) = cleanup.otpd.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the installed otpd exited ({status}):\n{}", otpd_log());
            }
        }
        assert!(
            Instant::now() < deadline,
            "otpd made no socket:\n{}",
            otpd_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let socket_meta = fs::metadata(&socket).expect("socket");
    assert_eq!(
        (socket_meta.uid(), socket_meta.mode() & 0o777),
        (uid, 0o660),
        "socket owner and mode"
    );
    for entry in fs::read_dir(STATE_DIR)
        .expect("read the state dir")
        .filter_map(Result::ok)
    {
        let meta = entry.metadata().expect("metadata");
        assert_eq!(meta.uid(), uid, "{:?} is not owned by otpd", entry.path());
    }

    // --- A token through the installed otpctl (as root) ------------------
    let csv = run_dir.path().join("import.csv");
    fs::write(&csv, format!("{USER},{SECRET},60,6,SHA1\n")).expect("write csv");
    std::os::unix::fs::chown(&csv, Some(uid), Some(gid)).expect("chown csv");
    let import = run(
        OTPCTL,
        &[
            "--config",
            &config_str,
            "import",
            "--format",
            "csv",
            csv.to_str().expect("utf-8"),
        ],
    );
    assert_success(&import, "otpctl import (installed, as root)");
    // What root's otpctl wrote stays usable by otpd.
    for entry in fs::read_dir(STATE_DIR)
        .expect("read the state dir")
        .filter_map(Result::ok)
    {
        let meta = entry.metadata().expect("metadata");
        assert_eq!(
            meta.uid(),
            uid,
            "after otpctl as root, {:?} is not owned by otpd",
            entry.path()
        );
    }

    // --- Login through the installed module ------------------------------
    // The bare module name: libpam finds it in the multiarch directory.
    let service = format!("otpd-package-{}", std::process::id());
    let service_path = PathBuf::from("/etc/pam.d").join(&service);
    fs::write(
        &service_path,
        format!(
            "auth required pam_otp.so socket={}\naccount required pam_permit.so\n",
            socket.display()
        ),
    )
    .expect("write the PAM service file");
    cleanup.pam_service = Some(service_path);

    let refused = pamtester(&service, &wrong_code(SECRET));
    assert!(
        !refused.status.success() && said(&refused).contains("Authentication failure"),
        "a wrong code: {}\n--- otpd ---\n{}",
        describe(&refused),
        otpd_log()
    );
    e2e::wait_for_fresh_step(60);
    let accepted = pamtester(&service, &oathtool_code(SECRET, 60));
    assert!(
        accepted.status.success() && said(&accepted).contains("successfully authenticated"),
        "login with oathtool's code: {}\n--- otpd ---\n{}",
        describe(&accepted),
        otpd_log()
    );
    assert!(
        otpd_log().contains(&format!("pam ok user={USER}")),
        "otpd did not log the login:\n{}",
        otpd_log()
    );

    let status = cleanup.stop_otpd().expect("otpd was running");
    assert!(
        status.success(),
        "otpd on SIGTERM: {status}\n{}",
        otpd_log()
    );
    if let Some(path) = cleanup.pam_service.take() {
        let _ = fs::remove_file(path);
    }

    // --- lintian (reported, not judged) ----------------------------------
    match Command::new("lintian")
        .args(["--tag-display-limit", "0", "-I", deb_str])
        .output()
    {
        Ok(output) => eprintln!(
            "package: lintian findings:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(e) => eprintln!("package: lintian not run ({e})"),
    }

    // --- Purge -----------------------------------------------------------
    let purge = run("dpkg", &["--purge", PACKAGE]);
    assert_success(&purge, "dpkg --purge otpd");
    assert!(
        !installed(PACKAGE),
        "otpd is still known to dpkg after purge"
    );
    for path in [
        OTPD,
        OTPCTL,
        pam_module.as_str(),
        CONFIG,
        "/etc/otpd",
        STATE_DIR,
        PAM_PROFILE,
        UNIT,
    ] {
        assert!(!Path::new(path).exists(), "{path} survived dpkg --purge");
    }
    assert!(
        getent("passwd", "otpd").is_none(),
        "the user otpd survived purge"
    );
    assert!(
        getent("group", "otpd").is_none(),
        "the group otpd survived purge"
    );
    let overrides = stdout(&run("dpkg-statoverride", &["--list"]));
    assert!(
        !overrides.contains("/etc/otpd"),
        "statoverrides survived purge:\n{overrides}"
    );
    assert_eq!(
        fs::read_to_string("/etc/pam.d/common-auth").ok(),
        common_auth_before,
        "install and purge changed /etc/pam.d/common-auth"
    );
    drop(cleanup);
}
