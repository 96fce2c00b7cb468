//! RADIUS: otpd answering RADIUS beside its other listeners, and a private
//! FreeRADIUS configuration.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{free_port, EnvOptions, TestEnv};

/// A [`TestEnv`] whose otpd also answers RADIUS on a free 127.0.0.1 port,
/// for one client at 127.0.0.1 named `client` with `secret` and
/// Message-Authenticator required; the port comes back too.
pub fn start_with_radius(client: &str, secret: &str) -> (TestEnv, u16) {
    let port = free_port();
    let env = TestEnv::start_with(EnvOptions {
        extra_toml: crate::cluster::radius_toml(port, client, secret),
        ..EnvOptions::default()
    });
    (env, port)
}

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
