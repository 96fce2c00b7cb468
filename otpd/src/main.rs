//! `otpd`: the daemon's program. It reads the arguments and the
//! configuration, sets up logging and runs the daemon ([`otpd::run`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use otpcore::config::Config;

const DEFAULT_CONFIG: &str = "/etc/otpd/otpd.toml";
const DEFAULTS_STATE_DIR: &str = "otpd-state";

/// One-time password daemon: verifies login codes for pam_otp.so (Unix
/// socket) and VPN gateways (RADIUS), and serves the activation page and
/// its JSON API (HTTP/HTTPS).
#[derive(Debug, Parser)]
#[command(name = "otpd", version, about)]
struct Args {
    /// Configuration file [default: /etc/otpd/otpd.toml].
    #[arg(long, value_name = "PATH", conflicts_with = "defaults")]
    config: Option<PathBuf>,
    /// Use the embedded defaults instead of a configuration file: state and
    /// socket in ./otpd-state, mail to ./otpd-state/outbox, HTTP on
    /// 127.0.0.1:8080, no RADIUS.
    #[arg(long)]
    defaults: bool,
    /// Parse and check the configuration, then exit.
    #[arg(long)]
    check_config: bool,
}

fn load_config(args: &Args) -> Result<(String, Config), String> {
    if args.defaults {
        return Ok((
            "embedded defaults".to_owned(),
            Config::embedded_defaults(Path::new(DEFAULTS_STATE_DIR)),
        ));
    }
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    otpstore::load_config(&path)
        .map(|c| (path.display().to_string(), c))
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    otpd::logging::init_logging();
    let (source, config) = match load_config(&args) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("otpd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.check_config {
        println!("config OK: {source}");
        return ExitCode::SUCCESS;
    }
    otpd::run(config)
}
