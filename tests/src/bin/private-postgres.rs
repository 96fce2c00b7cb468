//! A private PostgreSQL server for shell scripts, run as root.
//!
//! private-postgres start DIR   creates a cluster in DIR (created if missing,
//!                              must be empty), starts its server and prints
//!                              the superuser's URL over the Unix socket; the
//!                              server runs until `stop`
//! private-postgres stop DIR    stops that server (DIR stays)
//!
//! The server belongs to the system user otpd-pgtest; it listens on the
//! socket in DIR and, TLS and password only, on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::ExitCode;

use e2e::postgres::{start_detached, stop_detached};

const USAGE: &str = "usage: private-postgres start DIR | private-postgres stop DIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["start", dir] => println!("{}", start_detached(Path::new(dir))),
        ["stop", dir] => stop_detached(Path::new(dir)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
