//! `otpd.toml` (SPEC §3.1): types, defaults and validation. Unknown keys and
//! bad values are errors that name the key and line; values are checked while
//! they are parsed, so the TOML parser's error carries the position.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::totp::{Algorithm, TokenParams};

/// A configuration that failed to load.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Shown to users and typed into the activation page.
    #[serde(deserialize_with = "service_id")]
    pub service_id: String,
    /// Shown by authenticator apps above the code.
    #[serde(deserialize_with = "non_empty")]
    pub issuer: String,
    /// Holds the SQLite database and the key file.
    pub state_dir: PathBuf,
    /// How far each commit is flushed: `normal` survives a crash of otpd,
    /// `full` a power loss too (an fsync per commit).
    #[serde(default = "default_synchronous")]
    pub sqlite_synchronous: Synchronous,
    #[serde(default)]
    pub token: TokenConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    pub socket: Option<SocketConfig>,
    pub http: Option<HttpConfig>,
    pub radius: Option<RadiusConfig>,
    pub mail: Option<MailConfig>,
}

/// SQLite's `synchronous` setting for the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Normal,
    Full,
}

fn default_synchronous() -> Synchronous {
    Synchronous::Normal
}

/// `[token]`: how new tokens are made and codes checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    #[serde(deserialize_with = "period")]
    pub period: u64,
    #[serde(deserialize_with = "digits")]
    pub digits: u32,
    pub algorithm: Algorithm,
    #[serde(deserialize_with = "window")]
    pub window: u64,
    pub adapt_period: bool,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            period: 60,
            digits: 6,
            algorithm: Algorithm::Sha1,
            window: 1,
            adapt_period: true,
        }
    }
}

impl TokenConfig {
    /// Parameters of a token issued now.
    pub fn params(&self) -> TokenParams {
        TokenParams {
            algorithm: self.algorithm,
            digits: self.digits,
            period: self.period,
        }
    }
}

/// `[policy]`: limits on failures and links.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    #[serde(deserialize_with = "positive_u32")]
    pub max_failures: u32,
    pub lockout_seconds: u64,
    #[serde(deserialize_with = "positive_u32")]
    pub activation_attempts: u32,
    #[serde(deserialize_with = "positive_u64")]
    pub link_ttl_hours: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            max_failures: 5,
            lockout_seconds: 900,
            activation_attempts: 5,
            link_ttl_hours: 72,
        }
    }
}

/// `[socket]`: the Unix socket that the PAM module and `otpctl test` use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketConfig {
    pub path: PathBuf,
    #[serde(default = "default_socket_mode", deserialize_with = "file_mode")]
    pub mode: u32,
    #[serde(default = "default_allowed_uids")]
    pub allowed_uids: Vec<u32>,
    #[serde(default)]
    pub allowed_groups: Vec<String>,
}

fn default_socket_mode() -> u32 {
    0o660
}

fn default_allowed_uids() -> Vec<u32> {
    vec![0]
}

/// `[http]`: the activation page and its JSON API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Base of the setup URL in mails, without the trailing `/setup`.
    #[serde(deserialize_with = "public_url")]
    pub public_url: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Activation and confirmation requests allowed per client address and
    /// minute; further ones get 429.
    #[serde(default = "default_rate_limit", deserialize_with = "positive_u32")]
    pub rate_limit_per_minute: u32,
}

fn default_rate_limit() -> u32 {
    20
}

/// `[radius]`: the RADIUS listener for VPN gateways.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadiusConfig {
    pub listen: SocketAddr,
    /// Where Accounting-Requests (RFC 2866) are answered; none when absent.
    #[serde(default)]
    pub accounting_listen: Option<SocketAddr>,
    #[serde(default = "yes")]
    pub require_message_authenticator: bool,
    #[serde(default)]
    pub client: Vec<RadiusClient>,
}

fn yes() -> bool {
    true
}

/// `[[radius.client]]`: one NAS or network of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadiusClient {
    pub name: String,
    #[serde(deserialize_with = "cidr")]
    pub address: Cidr,
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub require_message_authenticator: Option<bool>,
}

/// An address block: `192.0.2.10/32`, `2001:db8::/32`, or a bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `ADDRESS[/PREFIX]`.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: std::net::IpAddr = addr.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { network, prefix })
    }

    /// Whether `addr` lies in this block.
    pub fn contains(&self, addr: std::net::IpAddr) -> bool {
        let addr = match addr {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(std::net::IpAddr::V4)
                .unwrap_or(addr),
            v4 => v4,
        };
        match (self.network, addr) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Mail transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Smtp,
    Sendmail,
    Outbox,
}

/// STARTTLS policy for the `smtp` transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    Required,
    Opportunistic,
    None,
}

/// Languages of mails and pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Ja,
    En,
}

impl Language {
    /// Parses `ja` or `en`.
    pub fn parse(text: &str) -> Option<Language> {
        match text {
            "ja" => Some(Language::Ja),
            "en" => Some(Language::En),
            _ => None,
        }
    }

    /// `ja` or `en`.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Ja => "ja",
            Language::En => "en",
        }
    }
}

/// `[mail]`: how setup mails leave.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// `Name <address>` or a bare address.
    #[serde(deserialize_with = "non_empty")]
    pub from: String,
    pub transport: Transport,
    #[serde(default = "default_smtp_host")]
    pub smtp_host: String,
    #[serde(default = "default_smtp_port")]
    pub smtp_port: u16,
    #[serde(default = "default_starttls")]
    pub starttls: StartTls,
    /// SMTP AUTH user name; the password is read from `smtp_password_file`.
    pub smtp_user: Option<String>,
    pub smtp_password_file: Option<PathBuf>,
    #[serde(default = "default_smtp_timeout", deserialize_with = "positive_u64")]
    pub smtp_timeout_seconds: u64,
    #[serde(default = "default_sendmail")]
    pub sendmail_command: PathBuf,
    /// Where `transport = "outbox"` writes one `.eml` file per mail.
    pub outbox_dir: Option<PathBuf>,
    /// Directory with `LANG.txt` templates replacing the built-in ones.
    pub template_dir: Option<PathBuf>,
    #[serde(default = "default_language")]
    pub language: Language,
}

fn default_smtp_host() -> String {
    "localhost".to_owned()
}
fn default_smtp_port() -> u16 {
    25
}
fn default_starttls() -> StartTls {
    StartTls::Opportunistic
}
fn default_smtp_timeout() -> u64 {
    30
}
fn default_sendmail() -> PathBuf {
    PathBuf::from("/usr/sbin/sendmail")
}
fn default_language() -> Language {
    Language::Ja
}

fn invalid<E: serde::de::Error>(message: impl fmt::Display) -> E {
    E::custom(message)
}

fn service_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty()
        || s.len() > 32
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            "service_id must be 1 to 32 ASCII letters, digits, '-' or '_'",
        ));
    }
    Ok(s)
}

fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Err(invalid("must not be empty"));
    }
    Ok(s)
}

fn period<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if !(15..=300).contains(&v) {
        return Err(invalid(format!(
            "period must be 15 to 300 seconds, not {v}"
        )));
    }
    Ok(v)
}

fn digits<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if !(6..=8).contains(&v) {
        return Err(invalid(format!("digits must be 6, 7 or 8, not {v}")));
    }
    Ok(v)
}

fn window<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v > 10 {
        return Err(invalid(format!("window must be 0 to 10 steps, not {v}")));
    }
    Ok(v)
}

fn positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v == 0 {
        return Err(invalid("must be at least 1"));
    }
    Ok(v)
}

fn positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v == 0 {
        return Err(invalid("must be at least 1"));
    }
    Ok(v)
}

fn file_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = String::deserialize(d)?;
    let mode = u32::from_str_radix(&s, 8)
        .ok()
        .filter(|m| *m <= 0o777 && s.len() >= 3 && s.len() <= 4)
        .ok_or_else(|| {
            invalid(format!(
                "mode must be an octal permission string like \"0660\", not {s:?}"
            ))
        })?;
    if mode & 0o007 != 0 {
        return Err(invalid(format!(
            "mode {s} would let any local user talk to the socket; drop the last digit to 0"
        )));
    }
    Ok(mode)
}

fn public_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| invalid("public_url must start with https:// or http://"))?;
    if rest.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(invalid(
            "public_url must be a plain base URL like https://otp.example.com",
        ));
    }
    Ok(s.trim_end_matches('/').to_owned())
}

fn cidr<'de, D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
    let s = String::deserialize(d)?;
    Cidr::parse(&s).ok_or_else(|| {
        invalid(format!(
            "address must be an IP address or CIDR block, not {s:?}"
        ))
    })
}

/// Finds the 1-based line of `[[radius.client]]` number `index` in `text`.
fn client_line(text: &str, index: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[radius.client]]"))
        .nth(index)
        .map(|(n, _)| n + 1)
        .unwrap_or(0)
}

impl Config {
    /// Parses and checks a configuration. `path` names the file in errors;
    /// `world_readable` tells whether others than owner and group may read
    /// it, which is refused when it holds RADIUS secrets.
    pub fn parse(text: &str, path: &Path, world_readable: bool) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let config: Config =
            toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_owned()))?;
        if let Some(radius) = &config.radius {
            for (i, client) in radius.client.iter().enumerate() {
                let line = client_line(text, i);
                match (&client.secret, &client.secret_file) {
                    (Some(_), Some(_)) | (None, None) => {
                        return Err(err(format!(
                            "line {line}: radius.client {:?} needs exactly one of `secret` and `secret_file`",
                            client.name
                        )))
                    }
                    (Some(secret), None) if secret.is_empty() => {
                        return Err(err(format!(
                            "line {line}: radius.client {:?}: `secret` must not be empty",
                            client.name
                        )))
                    }
                    (Some(_), None) if world_readable => {
                        return Err(err(format!(
                            "line {line}: radius.client {:?}: `secret` is in a world-readable file; \
                             chmod o-r the file or move the secret to `secret_file`",
                            client.name
                        )))
                    }
                    _ => {}
                }
            }
        }
        if let Some(http) = &config.http {
            if http.tls_cert.is_some() != http.tls_key.is_some() {
                return Err(err(
                    "[http]: `tls_cert` and `tls_key` go together; set both or neither".to_owned(),
                ));
            }
        }
        if let Some(mail) = &config.mail {
            if mail.transport == Transport::Outbox && mail.outbox_dir.is_none() {
                return Err(err(
                    "[mail]: transport = \"outbox\" needs `outbox_dir`".to_owned()
                ));
            }
            if mail.smtp_user.is_some() != mail.smtp_password_file.is_some() {
                return Err(err(
                    "[mail]: `smtp_user` and `smtp_password_file` go together".to_owned(),
                ));
            }
        }
        Ok(config)
    }

    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        let read = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(read)?;
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode();
        Config::parse(&text, path, mode & 0o004 != 0)
    }

    /// The embedded defaults: state, socket and outbox under `base`, the
    /// activation page on 127.0.0.1:8080, no RADIUS.
    pub fn embedded_defaults(base: &Path) -> Config {
        Config {
            service_id: "OTPD".to_owned(),
            issuer: "otpd".to_owned(),
            state_dir: base.to_owned(),
            sqlite_synchronous: default_synchronous(),
            token: TokenConfig::default(),
            policy: PolicyConfig::default(),
            socket: Some(SocketConfig {
                path: base.join("otpd.sock"),
                mode: default_socket_mode(),
                allowed_uids: default_allowed_uids(),
                allowed_groups: Vec::new(),
            }),
            http: Some(HttpConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
                public_url: "http://127.0.0.1:8080".to_owned(),
                tls_cert: None,
                tls_key: None,
                rate_limit_per_minute: default_rate_limit(),
            }),
            radius: None,
            mail: Some(MailConfig {
                from: "otpd <otpd@localhost.localdomain>".to_owned(),
                transport: Transport::Outbox,
                smtp_host: default_smtp_host(),
                smtp_port: default_smtp_port(),
                starttls: default_starttls(),
                smtp_user: None,
                smtp_password_file: None,
                smtp_timeout_seconds: default_smtp_timeout(),
                sendmail_command: default_sendmail(),
                outbox_dir: Some(base.join("outbox")),
                template_dir: None,
                language: Language::En,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §3.1 as written.
    pub(crate) const SPEC_EXAMPLE: &str = include_str!("../../conf/otpd.toml");

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("otpd.toml"), false).map_err(|e| e.to_string())
    }

    #[test]
    fn spec_example_loads() {
        let c = parse(SPEC_EXAMPLE).expect("the shipped example loads");
        assert_eq!(c.service_id, "EXAMPLE");
        assert_eq!(c.token.period, 60);
        assert_eq!(c.token.algorithm, Algorithm::Sha1);
        assert_eq!(c.policy.activation_attempts, 5);
        assert_eq!(c.socket.as_ref().map(|s| s.mode), Some(0o660));
        let radius = c.radius.as_ref().expect("radius section");
        assert_eq!(radius.client.len(), 1);
        assert!(radius.client[0]
            .address
            .contains("192.0.2.10".parse().expect("ip")));
        let mail = c.mail.as_ref().expect("mail section");
        assert_eq!(mail.transport, Transport::Smtp);
        assert_eq!(mail.language, Language::Ja);
        assert_eq!(
            c.http.as_ref().map(|h| h.public_url.as_str()),
            Some("https://otp.example.com")
        );
    }

    #[test]
    fn minimal_config_uses_defaults() {
        let c =
            parse("service_id = \"X\"\nissuer = \"I\"\nstate_dir = \"/tmp/x\"\n").expect("loads");
        assert_eq!(c.token.window, 1);
        assert!(c.token.adapt_period);
        assert_eq!(c.sqlite_synchronous, Synchronous::Normal);
        assert_eq!(c.policy.link_ttl_hours, 72);
        assert!(c.http.is_none() && c.radius.is_none() && c.socket.is_none() && c.mail.is_none());
    }

    fn replace(from: &str, to: &str) -> String {
        assert!(SPEC_EXAMPLE.contains(from), "example holds {from:?}");
        SPEC_EXAMPLE.replacen(from, to, 1)
    }

    fn line_of(text: &str, needle: &str) -> usize {
        text.lines()
            .position(|l| l.contains(needle))
            .expect("needle present")
            + 1
    }

    #[test]
    fn bad_values_name_key_and_line() {
        let cases = [
            ("period = 60", "period = 0", "period must be 15 to 300"),
            ("digits = 6", "digits = 10", "digits must be 6, 7 or 8"),
            (
                "algorithm = \"SHA1\"",
                "algorithm = \"MD5\"",
                "unknown variant `MD5`",
            ),
            ("window = 1", "window = 99", "window must be 0 to 10"),
            ("max_failures = 5", "max_failures = 0", "at least 1"),
            ("mode = \"0660\"", "mode = \"0666\"", "any local user"),
            ("mode = \"0660\"", "mode = \"rw\"", "octal permission"),
            (
                "listen = \"127.0.0.1:8080\"",
                "listen = \"localhost\"",
                "invalid socket address",
            ),
            (
                "public_url = \"https://otp.example.com\"",
                "public_url = \"otp.example.com\"",
                "https://",
            ),
            (
                "address = \"192.0.2.10/32\"",
                "address = \"192.0.2.10/33\"",
                "CIDR",
            ),
            (
                "transport = \"smtp\"",
                "transport = \"pigeon\"",
                "unknown variant `pigeon`",
            ),
            (
                "starttls = \"opportunistic\"",
                "starttls = \"maybe\"",
                "unknown variant `maybe`",
            ),
            (
                "language = \"ja\"",
                "language = \"fr\"",
                "unknown variant `fr`",
            ),
            (
                "sqlite_synchronous = \"normal\"",
                "sqlite_synchronous = \"off\"",
                "unknown variant `off`",
            ),
            (
                "service_id = \"EXAMPLE\"",
                "service_id = \"has space\"",
                "service_id must be",
            ),
            ("smtp_port = 25", "smtp_port = 70000", "smtp_port"),
        ];
        for (from, to, expected) in cases {
            let text = replace(from, to);
            let message = parse(&text).expect_err(to);
            assert!(message.contains(expected), "{to}: {message}");
            let line = line_of(&text, to);
            assert!(
                message.contains(&format!("line {line}")),
                "{to}: no line {line} in {message}"
            );
        }
    }

    #[test]
    fn accounting_listen_is_optional_and_checked() {
        let c = parse(SPEC_EXAMPLE).expect("example");
        assert_eq!(c.radius.as_ref().and_then(|r| r.accounting_listen), None);
        let on = "listen = \"0.0.0.0:1812\"\naccounting_listen = \"0.0.0.0:1813\"";
        let c = parse(&replace("listen = \"0.0.0.0:1812\"", on)).expect("with accounting");
        assert_eq!(
            c.radius.as_ref().and_then(|r| r.accounting_listen),
            Some("0.0.0.0:1813".parse().expect("addr"))
        );
        let bad = "accounting_listen = \"0.0.0.0\"";
        let text = replace(
            "listen = \"0.0.0.0:1812\"",
            &format!("listen = \"0.0.0.0:1812\"\n{bad}"),
        );
        let message = parse(&text).expect_err(bad);
        assert!(message.contains("invalid socket address"), "{message}");
        assert!(message.contains("accounting_listen"), "{message}");
        let line = line_of(&text, bad);
        assert!(message.contains(&format!("line {line}")), "{message}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = replace("window = 1", "window = 1\nwindwo = 2");
        let message = parse(&text).expect_err("unknown key");
        assert!(message.contains("unknown field `windwo`"), "{message}");
        assert!(
            message.contains(&format!("line {}", line_of(&text, "windwo"))),
            "{message}"
        );
        let message =
            parse(&format!("{SPEC_EXAMPLE}\n[extra]\nx = 1\n")).expect_err("unknown section");
        assert!(message.contains("unknown field `extra`"), "{message}");
    }

    #[test]
    fn broken_toml_is_an_error_with_a_line() {
        let message = parse("service_id = \"X\nissuer = 1").expect_err("broken");
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn world_readable_secrets_are_refused() {
        let message = Config::parse(SPEC_EXAMPLE, Path::new("otpd.toml"), true)
            .expect_err("world-readable with secret")
            .to_string();
        assert!(message.contains("world-readable"), "{message}");
        assert!(message.contains(&format!(
            "line {}",
            line_of(SPEC_EXAMPLE, "[[radius.client]]")
        )));
        let with_file = replace(
            "secret = \"change-me\"",
            "secret_file = \"/etc/otpd/vpn1.secret\"",
        );
        assert!(Config::parse(&with_file, Path::new("otpd.toml"), true).is_ok());
    }

    #[test]
    fn client_needs_one_secret() {
        let both = replace(
            "secret = \"change-me\"",
            "secret = \"a\"\nsecret_file = \"/x\"",
        );
        assert!(parse(&both).expect_err("both").contains("exactly one"));
    }

    #[test]
    fn cidr_matching() {
        let net = Cidr::parse("10.1.0.0/16").expect("cidr");
        assert!(net.contains("10.1.200.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.0.9".parse().expect("ip")));
        let v6 = Cidr::parse("2001:db8::/32").expect("cidr");
        assert!(v6.contains("2001:db8:1::5".parse().expect("ip")));
        assert!(!v6.contains("10.1.0.1".parse().expect("ip")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("cidr")
            .contains("8.8.8.8".parse().expect("ip")));
        assert!(Cidr::parse("nonsense").is_none());
    }
}
