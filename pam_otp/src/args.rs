//! The module's arguments. An unknown or malformed argument is
//! an error: the module logs it and fails with PAM_SERVICE_ERR.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Where otpd listens unless `socket=PATH` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/otpd/otpd.sock";
/// The prompt unless `prompt=...` says otherwise.
pub const DEFAULT_PROMPT: &str = "One-time password: ";
/// Connect and read/write deadline unless `timeout_ms=N` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5000);
/// The largest `timeout_ms` accepted with the socket (ten minutes).
const MAX_TIMEOUT_MS: u64 = 600_000;
/// How long each RADIUS server gets unless `timeout_ms=N` says otherwise.
pub const DEFAULT_RADIUS_TIMEOUT: Duration = Duration::from_millis(3000);
/// The `timeout_ms` accepted with `radius=`: each server gets it, so the
/// whole wait is bounded by the number of servers times the largest.
const RADIUS_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=30_000;
/// The RADIUS authentication port unless `HOST:PORT` says otherwise.
pub const RADIUS_PORT: u16 = 1812;
/// The most servers `radius=` may list.
pub const MAX_RADIUS_SERVERS: usize = 8;

/// Where the code comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPass {
    /// Always prompt (the default).
    Prompt,
    /// `try_first_pass`: PAM_AUTHTOK when an earlier module set it,
    /// otherwise prompt.
    Try,
    /// `use_first_pass`: PAM_AUTHTOK only, never prompt.
    Use,
}

/// Who checks the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// otpd on this host, over its Unix socket (`socket=PATH`, the default).
    Socket(PathBuf),
    /// otpd nodes elsewhere, over RADIUS (`radius=` and `secret_file=`),
    /// tried in order.
    Radius {
        servers: Vec<SocketAddr>,
        secret_file: PathBuf,
    },
}

/// The parsed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub backend: Backend,
    pub nullok: bool,
    pub prompt: String,
    pub first_pass: FirstPass,
    /// The socket's whole deadline, or each RADIUS server's.
    pub timeout: Duration,
    pub debug: bool,
}

/// What is wrong with the arguments, for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("{name}: {problem} (got {value:?})")]
    BadValue {
        name: &'static str,
        value: String,
        problem: &'static str,
    },
    #[error("prompt=[... is not closed by a ']'")]
    UnclosedPrompt,
    #[error("{0}")]
    Combination(&'static str),
}

fn bad(name: &'static str, value: &str, problem: &'static str) -> ArgError {
    ArgError::BadValue {
        name,
        value: value.to_owned(),
        problem,
    }
}

/// An absolute path, or an error naming the argument.
fn absolute(name: &'static str, path: &str) -> Result<PathBuf, ArgError> {
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(bad(name, path, "must be an absolute path"))
    }
}

/// One server of `radius=`: `IPv4[:PORT]` or `[IPv6][:PORT]`. Host names
/// are not resolved, so a login never waits for DNS beyond the deadline,
/// and an IPv6 address needs its brackets, so `::1:1812` cannot be taken
/// for a port.
fn radius_server(entry: &str) -> Result<SocketAddr, ArgError> {
    const FORM: &str = "each server must be IPv4[:PORT] or [IPv6][:PORT], PORT 1 to 65535";
    let address = if let Ok(address) = entry.parse::<SocketAddr>() {
        address
    } else if let Ok(v4) = entry.parse::<Ipv4Addr>() {
        SocketAddr::new(IpAddr::V4(v4), RADIUS_PORT)
    } else if let Some(v6) = entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
    {
        SocketAddr::new(IpAddr::V6(v6), RADIUS_PORT)
    } else {
        return Err(bad("radius", entry, FORM));
    };
    if address.port() == 0 || address.ip().is_unspecified() || address.ip().is_multicast() {
        return Err(bad("radius", entry, FORM));
    }
    Ok(address)
}

/// `radius=HOST[:PORT][,HOST[:PORT]...]`.
fn radius_servers(value: &str) -> Result<Vec<SocketAddr>, ArgError> {
    let servers = value
        .split(',')
        .map(radius_server)
        .collect::<Result<Vec<_>, _>>()?;
    if servers.len() > MAX_RADIUS_SERVERS {
        return Err(bad("radius", value, "at most 8 servers"));
    }
    Ok(servers)
}

impl Options {
    /// Parses the arguments of the PAM configuration line.
    ///
    /// `prompt=` takes PAM's bracket syntax: written as
    /// `[prompt=Code please: ]` libpam hands over one argument
    /// `prompt=Code please: `; written as `prompt=[Code please: ]` the text
    /// arrives split on spaces (`prompt=[Code`, `please:`, `]`) and is
    /// joined again with single spaces. `use_first_pass` wins over
    /// `try_first_pass`.
    ///
    /// `radius=` and `secret_file=` come together and exclude `socket=`;
    /// `nullok` is refused with them, since a RADIUS answer does not tell a
    /// user without a token from a wrong code. `timeout_ms` is 1 to 600000
    /// (default 5000) with the socket and 100 to 30000 per server (default
    /// 3000) with RADIUS.
    pub fn parse(args: &[&str]) -> Result<Options, ArgError> {
        let mut socket = None;
        let mut servers = None;
        let mut secret_file = None;
        let mut timeout_ms: Option<(&str, u64)> = None;
        let mut nullok = false;
        let mut debug = false;
        let mut first_pass = FirstPass::Prompt;
        let mut prompt = DEFAULT_PROMPT.to_owned();
        let mut args = args.iter();
        while let Some(&arg) = args.next() {
            if let Some(path) = arg.strip_prefix("socket=") {
                socket = Some(absolute("socket", path)?);
            } else if let Some(value) = arg.strip_prefix("radius=") {
                servers = Some(radius_servers(value)?);
            } else if let Some(path) = arg.strip_prefix("secret_file=") {
                secret_file = Some(absolute("secret_file", path)?);
            } else if let Some(text) = arg.strip_prefix("prompt=") {
                let text = match text.strip_prefix('[') {
                    Some(first) => {
                        let mut text = first.to_owned();
                        loop {
                            if let Some(closed) = text.strip_suffix(']') {
                                text.truncate(closed.len());
                                break;
                            }
                            let next = args.next().ok_or(ArgError::UnclosedPrompt)?;
                            text.push(' ');
                            text.push_str(next);
                        }
                        text
                    }
                    None => text.to_owned(),
                };
                if text.trim().is_empty() {
                    return Err(bad("prompt", &text, "must not be empty"));
                }
                prompt = text;
            } else if let Some(value) = arg.strip_prefix("timeout_ms=") {
                let ms: u64 = value
                    .parse()
                    .map_err(|_| bad("timeout_ms", value, "must be a number of milliseconds"))?;
                timeout_ms = Some((value, ms));
            } else {
                match arg {
                    "nullok" => nullok = true,
                    "debug" => debug = true,
                    "use_first_pass" => first_pass = FirstPass::Use,
                    "try_first_pass" => {
                        if first_pass != FirstPass::Use {
                            first_pass = FirstPass::Try;
                        }
                    }
                    _ => return Err(ArgError::Unknown(arg.to_owned())),
                }
            }
        }
        let (backend, timeout) = match (socket, servers, secret_file) {
            (Some(_), Some(_), _) => {
                return Err(ArgError::Combination(
                    "socket= and radius= exclude each other",
                ))
            }
            (_, Some(_), None) => return Err(ArgError::Combination("radius= needs secret_file=")),
            (_, None, Some(_)) => return Err(ArgError::Combination("secret_file= needs radius=")),
            (_, Some(_), Some(_)) if nullok => {
                return Err(ArgError::Combination(
                    "nullok does not work with radius=: a RADIUS answer does not tell \
                     a user without a token from a wrong code",
                ))
            }
            (_, Some(servers), Some(secret_file)) => {
                let timeout = match timeout_ms {
                    None => DEFAULT_RADIUS_TIMEOUT,
                    Some((_, ms)) if RADIUS_TIMEOUT_MS.contains(&ms) => Duration::from_millis(ms),
                    Some((value, _)) => {
                        return Err(bad(
                            "timeout_ms",
                            value,
                            "must be 100 to 30000 with radius=",
                        ))
                    }
                };
                let backend = Backend::Radius {
                    servers,
                    secret_file,
                };
                (backend, timeout)
            }
            (socket, None, None) => {
                let timeout = match timeout_ms {
                    None => DEFAULT_TIMEOUT,
                    Some((_, ms)) if (1..=MAX_TIMEOUT_MS).contains(&ms) => {
                        Duration::from_millis(ms)
                    }
                    Some((value, _)) => {
                        return Err(bad("timeout_ms", value, "must be 1 to 600000"))
                    }
                };
                let socket = socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
                (Backend::Socket(socket), timeout)
            }
        };
        Ok(Options {
            backend,
            nullok,
            prompt,
            first_pass,
            timeout,
            debug,
        })
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let o = Options::parse(&[]).unwrap();
        assert_eq!(
            o.backend,
            Backend::Socket(PathBuf::from("/run/otpd/otpd.sock"))
        );
        assert_eq!(o.prompt, "One-time password: ");
        assert_eq!(o.timeout, Duration::from_millis(5000));
        assert_eq!(o.first_pass, FirstPass::Prompt);
        assert!(!o.nullok && !o.debug);
    }

    #[test]
    fn every_option() {
        let o = Options::parse(&[
            "socket=/tmp/x.sock",
            "nullok",
            "debug",
            "try_first_pass",
            "timeout_ms=250",
        ])
        .unwrap();
        assert_eq!(o.backend, Backend::Socket(PathBuf::from("/tmp/x.sock")));
        assert!(o.nullok && o.debug);
        assert_eq!(o.first_pass, FirstPass::Try);
        assert_eq!(o.timeout, Duration::from_millis(250));
        for args in [
            ["use_first_pass", "try_first_pass"],
            ["try_first_pass", "use_first_pass"],
        ] {
            assert_eq!(Options::parse(&args).unwrap().first_pass, FirstPass::Use);
        }
    }

    #[allow(clippy::panic)] // the test fails when the mode is not RADIUS
    fn radius(args: &[&str]) -> Result<(Vec<SocketAddr>, PathBuf, Duration), ArgError> {
        let o = Options::parse(args)?;
        match o.backend {
            Backend::Radius {
                servers,
                secret_file,
            } => Ok((servers, secret_file, o.timeout)),
            Backend::Socket(path) => panic!("socket {path:?} from {args:?}"),
        }
    }

    #[test]
    fn radius_servers_and_defaults() {
        let (servers, file, timeout) =
            radius(&["radius=192.0.2.10", "secret_file=/etc/security/otp.secret"]).unwrap();
        assert_eq!(servers, vec!["192.0.2.10:1812".parse().unwrap()]);
        assert_eq!(file, PathBuf::from("/etc/security/otp.secret"));
        assert_eq!(timeout, Duration::from_millis(3000));

        let (servers, _, timeout) = radius(&[
            "secret_file=/s",
            "radius=127.0.0.1:1645,[::1]:18120,[2001:db8::7],10.0.0.1:1812",
            "timeout_ms=100",
            "debug",
            "use_first_pass",
        ])
        .unwrap();
        let expected: Vec<SocketAddr> = [
            "127.0.0.1:1645",
            "[::1]:18120",
            "[2001:db8::7]:1812",
            "10.0.0.1:1812",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(servers, expected);
        assert_eq!(timeout, Duration::from_millis(100));
        let message = Options::parse(&["radius=::1", "secret_file=/s"])
            .unwrap_err()
            .to_string();
        assert!(message.contains("[IPv6]"), "{message}");
        let (_, _, timeout) =
            radius(&["radius=[::1]", "secret_file=/s", "timeout_ms=30000"]).unwrap();
        assert_eq!(timeout, Duration::from_millis(30000));
        let eight = ["127.0.0.1"; 8].join(",");
        assert_eq!(
            radius(&[&format!("radius={eight}"), "secret_file=/s"])
                .unwrap()
                .0
                .len(),
            8
        );
    }

    #[test]
    fn bad_radius_arguments() {
        let nine = format!("radius={}", ["127.0.0.1"; 9].join(","));
        for server in [
            "radius=",
            "radius=,127.0.0.1",
            "radius=127.0.0.1,",
            "radius=127.0.0.1,,127.0.0.2",
            "radius=otp.example.jp",
            "radius=otp.example.jp:1812",
            "radius=127.0.0.1:",
            "radius=127.0.0.1:0",
            "radius=127.0.0.1:65536",
            "radius=127.0.0.1:-1",
            "radius=127.0.0.1:18x",
            "radius=127.0.0.1 :1812",
            "radius=256.0.0.1",
            "radius=::1",
            "radius=::1:1812",
            "radius=[::1",
            "radius=[::1]:",
            "radius=[::1]:0",
            "radius=[127.0.0.1]",
            "radius=0.0.0.0",
            "radius=[::]:1812",
            "radius=224.0.0.1",
            &nine,
        ] {
            let error = Options::parse(&[server, "secret_file=/s"]).unwrap_err();
            assert!(
                matches!(error, ArgError::BadValue { name: "radius", .. }),
                "{server}: {error}"
            );
        }
        for timeout in [
            "timeout_ms=99",
            "timeout_ms=0",
            "timeout_ms=30001",
            "timeout_ms=600000",
            "timeout_ms=1s",
            "timeout_ms=",
            "timeout_ms=-100",
        ] {
            let error =
                Options::parse(&["radius=127.0.0.1", "secret_file=/s", timeout]).unwrap_err();
            assert!(
                matches!(
                    error,
                    ArgError::BadValue {
                        name: "timeout_ms",
                        ..
                    }
                ),
                "{timeout}: {error}"
            );
        }
        // A timeout fine for the socket is not for a RADIUS server.
        assert!(Options::parse(&["timeout_ms=50"]).is_ok());
        let message = Options::parse(&["radius=127.0.0.1", "secret_file=/s", "timeout_ms=50"])
            .unwrap_err()
            .to_string();
        assert!(message.contains("100 to 30000"), "{message}");

        for args in [
            &["radius=127.0.0.1"][..],
            &["secret_file=/s"],
            &[
                "socket=/run/otpd/otpd.sock",
                "radius=127.0.0.1",
                "secret_file=/s",
            ],
            &["radius=127.0.0.1", "secret_file=/s", "nullok"],
        ] {
            let error = Options::parse(args).unwrap_err();
            assert!(
                matches!(error, ArgError::Combination(_)),
                "{args:?}: {error}"
            );
        }
        assert!(matches!(
            Options::parse(&["radius=127.0.0.1", "secret_file=relative"]),
            Err(ArgError::BadValue {
                name: "secret_file",
                ..
            })
        ));
        assert!(Options::parse(&["radius=127.0.0.1", "secret_file="]).is_err());
    }

    #[test]
    fn prompt_forms() {
        let prompt = |args: &[&str]| Options::parse(args).map(|o| o.prompt);
        // Split by libpam on spaces: joined again.
        assert_eq!(
            prompt(&["prompt=[Code", "please:]", "nullok"]).unwrap(),
            "Code please:"
        );
        assert_eq!(
            prompt(&["prompt=[Code", "please:", "]"]).unwrap(),
            "Code please: "
        );
        assert_eq!(prompt(&["prompt=[Code:]"]).unwrap(), "Code:");
        // `[prompt=Code please: ]` arrives as one argument.
        assert_eq!(prompt(&["prompt=Code please: "]).unwrap(), "Code please: ");
        assert_eq!(prompt(&["prompt=Code:"]).unwrap(), "Code:");
        assert_eq!(
            prompt(&["prompt=[ワンタイム", "パスワード:", "]"]).unwrap(),
            "ワンタイム パスワード: "
        );
        // The argument after the closing bracket is parsed as usual.
        let o = Options::parse(&["prompt=[A", "b]", "nullok"]).unwrap();
        assert!(o.nullok);
        assert_eq!(
            prompt(&["prompt=[Code", "please:"]),
            Err(ArgError::UnclosedPrompt)
        );
        assert!(prompt(&["prompt=[]"]).is_err());
        assert!(prompt(&["prompt="]).is_err());
    }

    #[test]
    fn errors() {
        assert_eq!(
            Options::parse(&["nullok", "bogus"]),
            Err(ArgError::Unknown("bogus".to_owned()))
        );
        for bad_args in [
            ["socket=relative.sock"],
            ["socket="],
            ["timeout_ms=0"],
            ["timeout_ms=-5"],
            ["timeout_ms=5s"],
            ["timeout_ms=600001"],
            ["Nullok"],
            ["nullok=1"],
            ["use_first_pass=yes"],
        ] {
            assert!(Options::parse(&bad_args).is_err(), "{bad_args:?}");
        }
        let message = Options::parse(&["timeout_ms=abc"]).unwrap_err().to_string();
        assert!(
            message.contains("timeout_ms") && message.contains("abc"),
            "{message}"
        );
    }
}
