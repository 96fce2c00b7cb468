//! What the pool of directory connections saves: checks of a directory
//! password per second against a private slapd (`e2e::slapd`, ldaps://,
//! bind by DN template), one check at a time, with one `Directory` for
//! every check (its idle connections reused) and with a new `Directory`
//! per check (a new TCP and TLS connection each, as without a pool). The
//! two alternate over three rounds; every verdict is checked.
//!
//! cargo build --release -p e2e --bin bench-ldap
//! target/release/bench-ldap [--checks N]

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Instant;

use e2e::slapd::{Bind, PrivateSlapd, User};
use otpcore::config::Config;
use otpldap::{Directory, Verdict};

fn main() {
    let mut checks: usize = 500;
    e2e::bench_args("bench-ldap", |flag, value| {
        match flag {
            "--checks" => checks = e2e::bench_value(value, "--checks N"),
            _ => return false,
        }
        true
    });
    assert!(checks > 0, "--checks must be > 0");
    let slapd = PrivateSlapd::start();
    let text = format!(
        "service_id = \"X\"\nissuer = \"I\"\nstate_dir = \"/tmp/x\"\n{}",
        slapd.ldap_table(Bind::Template)
    );
    let config = Config::parse(&text, Path::new("otpd.toml"), false)
        .expect("config")
        .ldap
        .expect("[ldap]");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let alice = slapd.password(User::Alice).as_bytes();
    let pooled = Directory::open(&config).expect("the directory opens");
    for round in 1..=3 {
        for reuse in [true, false] {
            let started = Instant::now();
            runtime.block_on(async {
                for _ in 0..checks {
                    let verdict = if reuse {
                        pooled.check_password("alice", alice).await
                    } else {
                        let fresh = Directory::open(&config).expect("the directory opens");
                        fresh.check_password("alice", alice).await
                    };
                    assert_eq!(verdict.expect("an answer"), Verdict::Right);
                }
            });
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "round {round} {:<13} {checks} checks in {seconds:.2} s: {:.0} checks/s",
                if reuse { "pooled" } else { "no pool" },
                checks as f64 / seconds
            );
        }
    }
}
