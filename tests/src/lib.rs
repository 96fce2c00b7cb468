//! Harness of the end-to-end tests: the built `otpd`, `otpctl` and
//! `pam_otp.so` against real peers (aiosmtpd as the mail server, oathtool as
//! the phone, the sqlite3 CLI to age a link, pamtester, radclient, ...).
//!
//! Each test builds its own [`TestEnv`]: a temp dir, free loopback ports, a
//! config file, an SMTP server and a daemon, all torn down on drop, so tests
//! run in parallel. The end-to-end tests need root and the real peers: they
//! are `#[ignore]`d with a reason, `tests/run-all.sh` runs them as root with
//! `--include-ignored`, and [`require_root_and_peers`] at the top of each
//! panics when not root or when a peer is missing.
//!
//! Modules, one per peer or concern; everything is re-exported here, so
//! tests name it `e2e::TestEnv`, `e2e::free_port`, ...:
//! - `peers`: whether the end-to-end tier can run (root, installed peers);
//! - `process`: the built programs, child processes and their output;
//! - `env`: [`TestEnv`] and [`EnvOptions`], free ports;
//! - `enrol`: the enrolment flow through a [`TestEnv`];
//! - `http`: a raw HTTP/1.1 client;
//! - `mail`: aiosmtpd and the Maildir;
//! - `codes`: TOTP codes from oathtool, the clock;
//! - `checks`: user IDs, codes and secrets in what the programs say;
//! - `pam`: the Unix socket and PAM service files;
//! - `radius`: otpd with RADIUS, its RADIUS audit trail, a private
//!   FreeRADIUS configuration;
//! - `daemon`: otpd on a store of its own, for the benchmarks and a
//!   restored backup;
//! - `bench`: a benchmark's command line, the start-up of its otpd nodes
//!   and its statistics;
//! - `postgres`: a private PostgreSQL server (not re-exported: tests name
//!   it `e2e::postgres::PrivatePostgres`);
//! - `cluster`: several otpd nodes on one PostgreSQL database (not
//!   re-exported: `e2e::cluster::Cluster`).

// A failed expectation in a test harness is a test failure: panicking with a
// message is the point here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bench;
mod checks;
pub mod cluster;
mod codes;
mod daemon;
mod enrol;
mod env;
mod http;
mod mail;
mod pam;
mod peers;
mod process;
mod radius;

pub mod postgres;
pub mod slapd;

pub use bench::{
    bench_args, bench_value, median, percentile, usage_error, wait_for_room_in_step, BenchNode,
    BenchNodes, NodeOptions,
};
pub use checks::{
    assert_no_secret, assert_prompted_without_echo, enrolment_array, grouped, shows_digits,
    shows_user_id,
};
pub use codes::{
    google_authenticator_file, normalize_base32, now_unix, oathtool_code, oathtool_code_at,
    parse_rfc3339_utc, wait_for_fresh_step, wrong_code,
};
pub use daemon::{
    import_active_tokens, start_otpd_on, start_socket_otpd, start_socket_otpd_on_store, BenchStore,
    Server, SocketDaemon,
};
pub use enrol::{Issued, Token};
pub use env::{free_port, write_private_file, EnvOptions, TestEnv, SERVICE_ID};
pub use http::{http_request, HttpResponse};
pub use mail::{
    addressed_to, assert_notice_keeps_secrets, is_notice, read_maildir, Mail, SmtpServer,
};
pub use pam::{pam_module_path, pamtester, socket_exchange, PamService};
pub use peers::{require_root_and_peers, require_tools, SYSTEM_PYTHON};
pub use process::{
    assert_success, describe, otpctl_bin, otpd_bin, run_with_input, run_with_input_within, said,
    stderr, stdout, stdout_json, stdout_json_lines,
};
pub use radius::{
    assert_radius_decisions, private_raddb, radius_audit, start_with_radius, FreeRadiusProxy,
};
