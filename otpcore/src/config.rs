//! `otpd.toml`: types, defaults and validation. Unknown keys and
//! bad values are errors that name the key, line and column; values are
//! checked while they are parsed, so the TOML parser's error carries the
//! position. Every integer has bounds ([`Bounds`]), so no value can make
//! time arithmetic overflow. An error never quotes the file: not the line
//! (it may hold a RADIUS secret), not a value.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::notice::Event as NoticeEvent;
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
    /// Holds the SQLite database and the key file (unless `[store]` puts
    /// them elsewhere), and the node's own files.
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
    /// The directory that checks a user's password for RADIUS.
    pub ldap: Option<LdapConfig>,
    /// Where enrolments live; without `[store]`, SQLite in `state_dir`.
    #[serde(default)]
    pub store: StoreConfig,
    /// The Prometheus metrics and health listener; none when absent.
    pub metrics: Option<MetricsConfig>,
    /// The socket on which local users enrol themselves; none when absent.
    pub self_service: Option<SelfServiceConfig>,
}

/// `[self_service]`: the Unix socket on which any local user (or the
/// members of `allowed_groups`) asks for a token for themselves with
/// `otpctl enrol`. The user is the one the peer runs as.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfServiceConfig {
    pub socket: PathBuf,
    /// Groups (by name, primary or supplementary) whose members may enrol;
    /// empty: every local user.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
}

/// `[metrics]`: `/metrics` (Prometheus text format) and `/healthz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

/// `[store]`: the database behind otpd, and the key that seals secrets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// `postgresql://USER@HOST:PORT/DATABASE?sslmode=verify-full`; checked
    /// in full when the store opens.
    #[serde(deserialize_with = "database_url")]
    pub url: Option<String>,
    /// The line of `url` in the file, for errors found when it is used.
    #[serde(skip)]
    pub url_line: usize,
    /// Holds the database password (owner-only file).
    pub password_file: Option<PathBuf>,
    #[serde(deserialize_with = "pool_size")]
    pub pool_size: u32,
    /// The deadline of connecting and of each database call.
    #[serde(deserialize_with = "store_timeout")]
    pub timeout_ms: u64,
    /// Default `state_dir/otpd.key`; every node of a cluster holds the same.
    pub key_file: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            backend: StoreBackend::Sqlite,
            url: None,
            url_line: 0,
            password_file: None,
            pool_size: 8,
            timeout_ms: 2000,
            key_file: None,
        }
    }
}

/// `[store] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Sqlite,
    Postgresql,
}

fn database_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    if !(s.starts_with("postgresql://") || s.starts_with("postgres://")) {
        return Err(invalid("must start with postgresql://"));
    }
    Ok(Some(s))
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
    /// Event-based (HOTP) tokens: codes accepted after the next expected one.
    #[serde(deserialize_with = "hotp_window")]
    pub hotp_window: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            period: 60,
            digits: 6,
            algorithm: Algorithm::Sha1,
            window: 1,
            adapt_period: true,
            hotp_window: crate::hotp::DEFAULT_WINDOW,
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
    #[serde(deserialize_with = "max_failures")]
    pub max_failures: u32,
    #[serde(deserialize_with = "lockout_seconds")]
    pub lockout_seconds: u64,
    #[serde(deserialize_with = "activation_attempts")]
    pub activation_attempts: u32,
    #[serde(deserialize_with = "link_ttl_hours")]
    pub link_ttl_hours: u64,
    /// Recovery codes handed out at confirmation; 0: none.
    #[serde(deserialize_with = "recovery_codes")]
    pub recovery_codes: u32,
    /// Days the audit trail keeps an entry; 0 keeps every entry.
    #[serde(deserialize_with = "audit_retention_days")]
    pub audit_retention_days: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            max_failures: 5,
            lockout_seconds: 900,
            activation_attempts: 5,
            link_ttl_hours: 72,
            recovery_codes: 10,
            audit_retention_days: 400,
        }
    }
}

impl PolicyConfig {
    /// Audit entries written before this time are pruned at `now`; none
    /// when entries are kept forever.
    pub fn audit_cutoff(&self, now: u64) -> Option<u64> {
        (self.audit_retention_days > 0)
            .then(|| now.saturating_sub(self.audit_retention_days.saturating_mul(86_400)))
    }

    /// When a setup link issued (or sent again) at `now` expires.
    pub fn link_expires_at(&self, now: u64) -> u64 {
        now.saturating_add(self.link_ttl_hours.saturating_mul(3600))
    }
}

/// `[socket]`: the Unix socket that the PAM module and `otpctl test` use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketConfig {
    pub path: PathBuf,
    #[serde(default = "default_socket_mode", deserialize_with = "file_mode")]
    pub mode: u32,
    #[serde(default = "default_allowed_uids", deserialize_with = "uids")]
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
    #[serde(default = "default_rate_limit", deserialize_with = "rate_limit")]
    pub rate_limit_per_minute: u32,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    #[serde(default, deserialize_with = "cidrs")]
    pub trusted_proxies: Vec<Cidr>,
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
    /// Where RADIUS over TLS (RFC 6614) is served; none when absent.
    #[serde(default)]
    pub radsec_listen: Option<SocketAddr>,
    /// The RadSec server's certificate chain (PEM).
    #[serde(default)]
    pub radsec_cert: Option<PathBuf>,
    /// The key of `radsec_cert` (PEM).
    #[serde(default)]
    pub radsec_key: Option<PathBuf>,
    /// The CA (PEM) whose certificates RadSec clients must present.
    #[serde(default)]
    pub radsec_ca: Option<PathBuf>,
    /// What comes before the code: nothing, or the directory password.
    #[serde(default)]
    pub first_factor: FirstFactor,
    /// Ask for the code in a second request (Access-Challenge) instead of
    /// taking password and code in one field; needs a first factor.
    #[serde(default)]
    pub challenge: bool,
    /// How long after a code's Accept the same code from the same client
    /// is accepted again (a VPN renegotiating); 0: never.
    #[serde(default, deserialize_with = "reauth_seconds")]
    pub reauth_seconds: u64,
}

fn yes() -> bool {
    true
}

/// `[radius] first_factor`: what a RADIUS user proves before the code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirstFactor {
    /// The code alone.
    #[default]
    None,
    /// The user's directory password (`[ldap]`), then the code.
    Ldap,
}

/// `[radius] reauth_seconds`: at most one day.
pub const REAUTH_SECONDS: Bounds = Bounds::new(0, 86_400, "seconds");

fn reauth_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    REAUTH_SECONDS.read(d)
}

impl RadiusConfig {
    /// The first factor of the client at `index`: its own, or the global one.
    pub fn first_factor_of(&self, index: usize) -> FirstFactor {
        self.client
            .get(index)
            .and_then(|c| c.first_factor)
            .unwrap_or(self.first_factor)
    }

    /// Refuses a first factor without `[ldap]` and a challenge without a
    /// first factor, naming the key and its line.
    fn check_factors(&self, text: &str, has_ldap: bool) -> Result<(), String> {
        if !has_ldap {
            if self.first_factor == FirstFactor::Ldap {
                let line = key_line(text, "radius", "first_factor");
                return Err(format!(
                    "line {line}: radius.first_factor: \"ldap\" needs an [ldap] section"
                ));
            }
            if let Some(i) = self
                .client
                .iter()
                .position(|c| c.first_factor == Some(FirstFactor::Ldap))
            {
                let line = client_line(text, i);
                return Err(format!(
                    "line {line}: radius.client[{i}].first_factor: \"ldap\" needs an [ldap] section"
                ));
            }
        }
        if self.challenge && self.first_factor == FirstFactor::None {
            let line = key_line(text, "radius", "challenge");
            return Err(format!(
                "line {line}: radius.challenge: needs a first factor (first_factor = \"ldap\")"
            ));
        }
        Ok(())
    }

    /// The renegotiation window of the client at `index`, in seconds.
    pub fn reauth_seconds_of(&self, index: usize) -> u64 {
        self.client
            .get(index)
            .and_then(|c| c.reauth_seconds)
            .unwrap_or(self.reauth_seconds)
    }
    /// RadSec's address, certificate, key and client CA, when
    /// `radsec_listen` is set (a parsed configuration has all four or none).
    pub fn radsec(&self) -> Option<(SocketAddr, &Path, &Path, &Path)> {
        Some((
            self.radsec_listen?,
            self.radsec_cert.as_deref()?,
            self.radsec_key.as_deref()?,
            self.radsec_ca.as_deref()?,
        ))
    }

    /// RadSec needs its certificate, key and client CA, and they are
    /// nothing without `radsec_listen`.
    fn check_radsec(&self, text: &str) -> Result<(), String> {
        let files = [
            ("radsec_cert", self.radsec_cert.is_some()),
            ("radsec_key", self.radsec_key.is_some()),
            ("radsec_ca", self.radsec_ca.is_some()),
        ];
        for (key, set) in files {
            if self.radsec_listen.is_some() && !set {
                let line = key_line(text, "radius", "radsec_listen");
                return Err(format!(
                    "line {line}: radius.{key}: needed when `radsec_listen` is set"
                ));
            }
            if self.radsec_listen.is_none() && set {
                let line = key_line(text, "radius", key);
                return Err(format!(
                    "line {line}: radius.{key}: only used with `radsec_listen`; set it or remove {key}"
                ));
            }
        }
        Ok(())
    }
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
    /// Overrides `[radius] first_factor` for this client.
    pub first_factor: Option<FirstFactor>,
    /// Overrides `[radius] reauth_seconds` for this client.
    #[serde(default, deserialize_with = "optional_reauth_seconds")]
    pub reauth_seconds: Option<u64>,
}

fn optional_reauth_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    REAUTH_SECONDS.read(d).map(Some)
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

/// `[ldap]`: the directory that checks a user's password, the first factor
/// of a RADIUS request that carries the password and the code together.
/// Single keys are checked as they are read; how they combine is checked by
/// [`LdapConfig::transport`] and [`LdapConfig::bind`], which
/// [`Config::parse`] runs too.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    #[serde(deserialize_with = "ldap_url")]
    pub url: LdapUrl,
    /// Upgrade an `ldap://` connection with StartTLS before anything else.
    #[serde(default)]
    pub starttls: bool,
    /// The CA certificates (PEM) the directory's certificate must chain to;
    /// the system's when absent.
    pub ca_file: Option<PathBuf>,
    /// The user's DN, `{user}` standing for the user name escaped for a DN.
    #[serde(default, deserialize_with = "ldap_dn_template")]
    pub bind_dn: Option<String>,
    /// Where the user's entry is searched for (the whole subtree).
    #[serde(default, deserialize_with = "ldap_dn")]
    pub search_base: Option<String>,
    /// The filter that finds the user's entry, `{user}` standing for the
    /// user name escaped for a filter.
    #[serde(default, deserialize_with = "ldap_filter_template")]
    pub search_filter: Option<String>,
    /// Who searches; anonymous when absent.
    #[serde(default, deserialize_with = "ldap_dn")]
    pub search_bind_dn: Option<String>,
    /// Holds the password of `search_bind_dn` (owner-only file).
    pub search_password_file: Option<PathBuf>,
    /// The deadline of one whole check: connecting, TLS, search and binds.
    #[serde(default = "default_ldap_timeout", deserialize_with = "ldap_timeout")]
    pub timeout_ms: u64,
}

/// `[ldap] timeout_ms`: 100 ms to one minute.
pub const LDAP_TIMEOUT_MS: Bounds = Bounds::new(100, 60_000, "milliseconds");

fn default_ldap_timeout() -> u64 {
    3000
}

fn ldap_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    LDAP_TIMEOUT_MS.read(d)
}

/// `[ldap] url`: the directory's address, without a DN or other parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapUrl {
    /// `ldaps://`: TLS from the first byte.
    pub ldaps: bool,
    /// A name or an address; an IPv6 address without its brackets.
    pub host: String,
    /// The given port, or 636 for `ldaps://` and 389 for `ldap://`.
    pub port: u16,
}

impl LdapUrl {
    /// Parses `ldaps://HOST[:PORT]` or `ldap://HOST[:PORT]`, with at most a
    /// `/` after it; an IPv6 address in brackets.
    pub fn parse(text: &str) -> Option<LdapUrl> {
        let (ldaps, rest) = match text.strip_prefix("ldaps://") {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix("ldap://")?),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = match rest.strip_prefix('[') {
            Some(bracketed) => {
                let (address, after) = bracketed.split_once(']')?;
                address.parse::<std::net::Ipv6Addr>().ok()?;
                (address, after)
            }
            None => {
                let end = rest.find(':').unwrap_or(rest.len());
                let host = rest.get(..end)?;
                let name = host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                (name.then_some(host)?, rest.get(end..)?)
            }
        };
        let port = match port.strip_prefix(':') {
            Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => {
                digits.parse::<u16>().ok().filter(|p| *p > 0)?
            }
            Some(_) => return None,
            None if port.is_empty() => {
                if ldaps {
                    636
                } else {
                    389
                }
            }
            None => return None,
        };
        (!host.is_empty()).then(|| LdapUrl {
            ldaps,
            host: host.to_owned(),
            port,
        })
    }

    /// Whether the host is this machine: `localhost` or a loopback address.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for LdapUrl {
    /// `ldaps://HOST:PORT` or `ldap://HOST:PORT`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.ldaps { "ldaps" } else { "ldap" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// How the connection to the directory is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LdapTransport {
    /// `ldaps://`.
    Ldaps,
    /// `ldap://` upgraded with StartTLS.
    StartTls,
    /// `ldap://` in clear, to a loopback host only.
    Plain,
}

/// How the DN that the user's password is checked against is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LdapBind<'a> {
    /// `bind_dn`, `{user}` replaced.
    Template { dn: &'a str },
    /// The one entry under `base` that `filter` finds, searched for as
    /// `account` (its DN and password file), or anonymously.
    Search {
        base: &'a str,
        filter: &'a str,
        account: Option<(&'a str, &'a Path)>,
    },
}

/// A rule of `[ldap]` that a configuration breaks: the key it is about and
/// what is wrong. It quotes no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ldap.{key}: {reason}")]
pub struct LdapRuleError {
    pub key: &'static str,
    pub reason: &'static str,
}

impl LdapConfig {
    /// The protection of the connection. Refused: `starttls` with
    /// `ldaps://`, a clear `ldap://` to a host that is not loopback (the
    /// password would cross a network in clear), and `ca_file` without TLS.
    pub fn transport(&self) -> Result<LdapTransport, LdapRuleError> {
        let refuse = |key, reason| Err(LdapRuleError { key, reason });
        let transport = match (self.url.ldaps, self.starttls) {
            (true, false) => LdapTransport::Ldaps,
            (true, true) => {
                return refuse(
                    "starttls",
                    "is for ldap:// URLs; an ldaps:// connection is TLS from the start",
                )
            }
            (false, true) => LdapTransport::StartTls,
            (false, false) if self.url.is_loopback() => LdapTransport::Plain,
            (false, false) => {
                return refuse(
                    "url",
                    "ldap:// without `starttls = true` would send passwords in clear; \
                     that is allowed only to a loopback host (localhost, 127.0.0.0/8, ::1): \
                     use ldaps:// or set starttls = true",
                )
            }
        };
        if transport == LdapTransport::Plain && self.ca_file.is_some() {
            return refuse("ca_file", "is for TLS: use ldaps:// or set starttls = true");
        }
        Ok(transport)
    }

    /// How the user's DN is found: `bind_dn`, or a search with
    /// `search_base` and `search_filter`, as `search_bind_dn` with the
    /// password in `search_password_file` or anonymously; exactly one way.
    pub fn bind(&self) -> Result<LdapBind<'_>, LdapRuleError> {
        let refuse = |key, reason| Err(LdapRuleError { key, reason });
        let searching = self.search_base.is_some()
            || self.search_filter.is_some()
            || self.search_bind_dn.is_some()
            || self.search_password_file.is_some();
        if let Some(dn) = &self.bind_dn {
            if searching {
                return refuse(
                    "bind_dn",
                    "set either `bind_dn` or the search keys \
                     (`search_base`, `search_filter`, ...), not both",
                );
            }
            return Ok(LdapBind::Template { dn });
        }
        let (base, filter) = match (&self.search_base, &self.search_filter) {
            (Some(base), Some(filter)) => (base.as_str(), filter.as_str()),
            (None, None) => {
                return refuse(
                    "bind_dn",
                    "needed, or `search_base` and `search_filter` to search for the user",
                )
            }
            (Some(_), None) => return refuse("search_base", "needs `search_filter` beside it"),
            (None, Some(_)) => return refuse("search_filter", "needs `search_base` beside it"),
        };
        let account = match (&self.search_bind_dn, &self.search_password_file) {
            (Some(dn), Some(file)) => Some((dn.as_str(), file.as_path())),
            (None, None) => None,
            (Some(_), None) => {
                return refuse(
                    "search_bind_dn",
                    "needs `search_password_file` beside it (neither: an anonymous search)",
                )
            }
            (None, Some(_)) => {
                return refuse(
                    "search_password_file",
                    "needs `search_bind_dn` beside it (neither: an anonymous search)",
                )
            }
        };
        Ok(LdapBind::Search {
            base,
            filter,
            account,
        })
    }

    /// Runs [`LdapConfig::transport`] and [`LdapConfig::bind`] on the
    /// section as read from `text`; an error names the line of its key (or
    /// of `[ldap]` when the key is missing).
    fn check(&self, text: &str) -> Result<(), String> {
        let broken = self.transport().err().or_else(|| self.bind().err());
        match broken {
            None => Ok(()),
            Some(e) => {
                let line = match key_line(text, "ldap", e.key) {
                    0 => table_line(text, "ldap"),
                    line => line,
                };
                Err(format!("line {line}: {e}"))
            }
        }
    }
}

/// The 1-based line of the header `[table]`; 0 if none.
fn table_line(text: &str, table: &str) -> usize {
    let header = format!("[{table}]");
    text.lines()
        .position(|l| l.trim_start().starts_with(&header))
        .map_or(0, |n| n + 1)
}

fn ldap_url<'de, D: Deserializer<'de>>(d: D) -> Result<LdapUrl, D::Error> {
    let s = String::deserialize(d)?;
    LdapUrl::parse(&s).ok_or_else(|| {
        invalid("must be ldaps://HOST[:PORT] or ldap://HOST[:PORT], without a DN or options")
    })
}

/// A DN, or a DN or filter template: not empty, no NUL, no line break.
fn ldap_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Err(invalid("must not be empty"));
    }
    if s.contains(['\0', '\n', '\r']) {
        return Err(invalid("must not hold NUL or line breaks"));
    }
    Ok(s)
}

fn ldap_dn<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    ldap_text(d).map(Some)
}

fn ldap_dn_template<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = ldap_text(d)?;
    if !s.contains("{user}") {
        return Err(invalid("must contain {user}, where the user name goes"));
    }
    Ok(Some(s))
}

fn ldap_filter_template<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = ldap_dn_template(d)?.unwrap_or_default();
    if !(s.starts_with('(') && s.ends_with(')')) {
        return Err(invalid(
            "must be a filter in parentheses, like \"(uid={user})\"",
        ));
    }
    Ok(Some(s))
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
    #[serde(default = "default_smtp_port", deserialize_with = "smtp_port")]
    pub smtp_port: u16,
    #[serde(default = "default_starttls")]
    pub starttls: StartTls,
    /// SMTP AUTH user name; the password is read from `smtp_password_file`.
    pub smtp_user: Option<String>,
    pub smtp_password_file: Option<PathBuf>,
    #[serde(default = "default_smtp_timeout", deserialize_with = "smtp_timeout")]
    pub smtp_timeout_seconds: u64,
    #[serde(default = "default_sendmail")]
    pub sendmail_command: PathBuf,
    /// Where `transport = "outbox"` writes one `.eml` file per mail.
    pub outbox_dir: Option<PathBuf>,
    /// Directory with `LANG.txt` templates replacing the built-in ones.
    pub template_dir: Option<PathBuf>,
    #[serde(default = "default_language")]
    pub language: Language,
    /// The security notices sent to a token's address; every event when
    /// absent, none when empty.
    #[serde(default = "default_notify", deserialize_with = "notify_events")]
    pub notify: Vec<NoticeEvent>,
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
fn default_notify() -> Vec<NoticeEvent> {
    NoticeEvent::ALL.to_vec()
}

/// `[mail] notify`: event names, each at most once.
fn notify_events<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NoticeEvent>, D::Error> {
    let events = Vec::<NoticeEvent>::deserialize(d)?;
    for (i, event) in events.iter().enumerate() {
        if events[..i].contains(event) {
            return Err(invalid(format!("names {:?} twice", event.as_str())));
        }
    }
    Ok(events)
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
        return Err(invalid("must be 1 to 32 ASCII letters, digits, '-' or '_'"));
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

/// The accepted values of an integer key, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min: u64,
    pub max: u64,
    /// What the number counts, for error messages.
    pub unit: &'static str,
}

/// `[token] period`: seconds per code.
pub const PERIOD: Bounds = Bounds::new(15, 300, "seconds");
/// `[token] digits`.
pub const DIGITS: Bounds = Bounds::new(6, 8, "digits");
/// `[token] window`: steps either side of now.
pub const WINDOW: Bounds = Bounds::new(0, 10, "steps");
/// `[token] hotp_window`: codes of an event-based token skipped over.
pub const HOTP_WINDOW: Bounds = Bounds::new(0, 100, "codes");
/// `[policy] max_failures`.
pub const MAX_FAILURES: Bounds = Bounds::new(1, 1_000_000, "failures");
/// `[policy] lockout_seconds`: up to 30 days.
pub const LOCKOUT_SECONDS: Bounds = Bounds::new(1, 2_592_000, "seconds");
/// `[policy] activation_attempts`.
pub const ACTIVATION_ATTEMPTS: Bounds = Bounds::new(1, 100, "attempts");
/// `[policy] link_ttl_hours`: up to 30 days.
pub const LINK_TTL_HOURS: Bounds = Bounds::new(1, 720, "hours");
/// `[policy] recovery_codes`: codes per set; 0 hands out none.
pub const RECOVERY_CODES: Bounds = Bounds::new(0, 50, "codes");
/// `[policy] audit_retention_days`: 0 (keep forever) to 100 years.
pub const AUDIT_RETENTION_DAYS: Bounds = Bounds::new(0, 36_500, "days");
/// `[socket] allowed_uids`: a user ID; 4294967295 is (uid_t)-1, nobody.
pub const UID: Bounds = Bounds::new(0, 4_294_967_294, "a user ID");
/// `[http] rate_limit_per_minute`.
pub const RATE_LIMIT_PER_MINUTE: Bounds = Bounds::new(1, 10_000, "requests");
/// `[mail] smtp_port`.
pub const SMTP_PORT: Bounds = Bounds::new(1, 65_535, "a TCP port");
/// `[store] pool_size`: connections per node.
pub const POOL_SIZE: Bounds = Bounds::new(1, 64, "connections");
/// `[store] timeout_ms`: 100 ms to one minute.
pub const STORE_TIMEOUT_MS: Bounds = Bounds::new(100, 60_000, "milliseconds");
/// `[mail] smtp_timeout_seconds`: up to 10 minutes.
pub const SMTP_TIMEOUT_SECONDS: Bounds = Bounds::new(1, 600, "seconds");

impl Bounds {
    const fn new(min: u64, max: u64, unit: &'static str) -> Bounds {
        Bounds { min, max, unit }
    }

    fn refusal(&self) -> String {
        format!("must be {} to {} ({})", self.min, self.max, self.unit)
    }

    /// Reads an integer within the bounds as `T`; any other integer, and
    /// anything that is no integer, is an error that gives the bounds.
    fn read<'de, D: Deserializer<'de>, T: TryFrom<u64>>(self, d: D) -> Result<T, D::Error> {
        let value = d.deserialize_i64(self)?;
        T::try_from(value).map_err(|_| invalid(self.refusal()))
    }
}

impl serde::de::Visitor<'_> for Bounds {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "an integer from {} to {} ({})",
            self.min, self.max, self.unit
        )
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v)
            .map_err(|_| E::custom(self.refusal()))
            .and_then(|v| self.visit_u64(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
        if (self.min..=self.max).contains(&v) {
            Ok(v)
        } else {
            Err(E::custom(self.refusal()))
        }
    }
}

/// Deserializers for `deserialize_with`, one per bounded key.
macro_rules! bounded {
    ($($name:ident: $type:ty = $bounds:expr;)*) => {$(
        fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<$type, D::Error> {
            $bounds.read(d)
        }
    )*};
}

bounded! {
    period: u64 = PERIOD;
    digits: u32 = DIGITS;
    window: u64 = WINDOW;
    hotp_window: u64 = HOTP_WINDOW;
    max_failures: u32 = MAX_FAILURES;
    lockout_seconds: u64 = LOCKOUT_SECONDS;
    activation_attempts: u32 = ACTIVATION_ATTEMPTS;
    link_ttl_hours: u64 = LINK_TTL_HOURS;
    recovery_codes: u32 = RECOVERY_CODES;
    audit_retention_days: u64 = AUDIT_RETENTION_DAYS;
    rate_limit: u32 = RATE_LIMIT_PER_MINUTE;
    smtp_port: u16 = SMTP_PORT;
    smtp_timeout: u64 = SMTP_TIMEOUT_SECONDS;
    pool_size: u32 = POOL_SIZE;
    store_timeout: u64 = STORE_TIMEOUT_MS;
}

fn uids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    struct Uid(u32);
    impl<'de> Deserialize<'de> for Uid {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Uid, D::Error> {
            UID.read(d).map(Uid)
        }
    }
    Ok(Vec::<Uid>::deserialize(d)?
        .into_iter()
        .map(|uid| uid.0)
        .collect())
}

fn file_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = String::deserialize(d)?;
    let mode = u32::from_str_radix(&s, 8)
        .ok()
        .filter(|m| *m <= 0o777 && s.len() >= 3 && s.len() <= 4)
        .ok_or_else(|| invalid("must be an octal permission string like \"0660\""))?;
    if mode & 0o007 != 0 {
        return Err(invalid(
            "would let any local user talk to the socket; make the last digit 0",
        ));
    }
    Ok(mode)
}

fn public_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| invalid("must start with https:// or http://"))?;
    if rest.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(invalid(
            "must be a plain base URL like https://otp.example.com",
        ));
    }
    Ok(s.trim_end_matches('/').to_owned())
}

fn cidr<'de, D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
    let s = String::deserialize(d)?;
    Cidr::parse(&s).ok_or_else(|| invalid("must be an IP address or CIDR block"))
}

fn cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
    struct Block(Cidr);
    impl<'de> Deserialize<'de> for Block {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Block, D::Error> {
            cidr(d).map(Block)
        }
    }
    Ok(Vec::<Block>::deserialize(d)?
        .into_iter()
        .map(|block| block.0)
        .collect())
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

/// The 1-based line that sets `key` in the table `[table]`; 0 if none.
fn key_line(text: &str, table: &str, key: &str) -> usize {
    let header = format!("[{table}]");
    let mut inside = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.starts_with('[') {
            inside = line.starts_with(&header);
        } else if inside
            && line
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return n + 1;
        }
    }
    0
}

/// Whether a database URL carries a password (`user:password@`).
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let line = before.matches('\n').count() + 1;
    let column = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The key that the line holding byte `offset` sets, for an error the
/// parser gives no key path for (a syntax error). Only when the text before
/// that line is complete TOML, so the line is not inside a multi-line
/// string, and the line starts with a plain `key =`.
fn key_of_line(text: &str, offset: usize) -> Option<&str> {
    let before = text.get(..offset.min(text.len()))?;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let line = text.get(line_start..)?.lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    let complete = toml::from_str::<toml::Table>(text.get(..line_start)?).is_ok();
    (plain && complete).then_some(key)
}

/// The parser's message without any value it quotes. Serde's messages
/// quote the value after `invalid type:` and `invalid value:` (`integer
/// `5``, `string "..."`) and the name of an unknown variant; those are cut
/// down to the kind of value. Messages of several lines become one.
fn without_values(message: &str) -> String {
    let message = message.trim().lines().collect::<Vec<_>>().join("; ");
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (found, expected) = rest.rsplit_once(", expected ").unwrap_or((rest, ""));
            let quoted = [found.find(" `"), found.find(" \"")];
            let kind = match quoted.into_iter().flatten().min() {
                Some(at) => found.get(..at).unwrap_or(found),
                None => found,
            };
            return if expected.is_empty() {
                format!("{prefix}{kind}")
            } else {
                format!("{prefix}{kind}, expected {expected}")
            };
        }
    }
    if message.starts_with("unknown variant ") {
        return match message.rsplit_once(", expected ") {
            Some((_, expected)) => format!("unknown variant, expected {expected}"),
            None => "unknown variant".to_owned(),
        };
    }
    message
}

/// `line L, column C: KEY: what is wrong`, as far as they are known, with
/// the parser's message stripped of values ([`without_values`]). Never the
/// source line that the toml crate's own message shows.
fn describe(
    text: &str,
    span: Option<std::ops::Range<usize>>,
    key: Option<&str>,
    message: &str,
) -> String {
    let mut described = String::new();
    if let Some(span) = span {
        let (line, column) = position(text, span.start);
        described.push_str(&format!("line {line}, column {column}: "));
    }
    if let Some(key) = key {
        described.push_str(&format!("{key}: "));
    }
    described.push_str(&without_values(message));
    described
}

/// Parses `text` as TOML, then as a [`Config`]. A syntax error names the
/// key of its line when that line sets one; a bad value names its key path
/// (`radius.client[0].secret`).
fn deserialize(text: &str) -> Result<Config, String> {
    if let Err(e) = toml::from_str::<toml::Table>(text) {
        let key = e.span().and_then(|s| key_of_line(text, s.start));
        return Err(describe(text, e.span(), key, e.message()));
    }
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
        let path = e.path().to_string();
        let key = (path != ".").then_some(path.as_str());
        describe(text, e.inner().span(), key, e.inner().message())
    })
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
        let mut config = deserialize(text).map_err(err)?;
        config.store.url_line = key_line(text, "store", "url");
        let store = &config.store;
        match (store.backend, &store.url, &store.password_file) {
            (StoreBackend::Postgresql, None, _) => {
                return Err(err(
                    "[store]: backend = \"postgresql\" needs `url`".to_owned()
                ))
            }
            (StoreBackend::Sqlite, Some(_), _) | (StoreBackend::Sqlite, _, Some(_)) => {
                return Err(err(
                    "[store]: `url` and `password_file` are for backend = \"postgresql\""
                        .to_owned(),
                ))
            }
            (StoreBackend::Postgresql, Some(url), _) if world_readable && url_has_password(url) => {
                return Err(err(format!(
                    "line {}: store.url: holds a password in a world-readable file; \
                     chmod o-r the file or move the password to `password_file`",
                    store.url_line
                )))
            }
            _ => {}
        }
        if let Some(radius) = &config.radius {
            for (i, client) in radius.client.iter().enumerate() {
                let line = client_line(text, i);
                match (&client.secret, &client.secret_file) {
                    (Some(_), Some(_)) | (None, None) => {
                        return Err(err(format!(
                            "line {line}: radius.client needs exactly one of `secret` and `secret_file`"
                        )))
                    }
                    (Some(secret), None) if secret.is_empty() => {
                        return Err(err(format!(
                            "line {line}: radius.client: `secret` must not be empty"
                        )))
                    }
                    (Some(_), None) if world_readable => {
                        return Err(err(format!(
                            "line {line}: radius.client: `secret` is in a world-readable file; \
                             chmod o-r the file or move the secret to `secret_file`"
                        )))
                    }
                    _ => {}
                }
            }
        }
        if let Some(radius) = &config.radius {
            radius.check_radsec(text).map_err(err)?;
            radius
                .check_factors(text, config.ldap.is_some())
                .map_err(err)?;
        }
        if let Some(http) = &config.http {
            if http.tls_cert.is_some() != http.tls_key.is_some() {
                return Err(err(
                    "[http]: `tls_cert` and `tls_key` go together; set both or neither".to_owned(),
                ));
            }
        }
        if let Some(ldap) = &config.ldap {
            ldap.check(text).map_err(err)?;
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
        if let Some(own) = &config.self_service {
            config.check_self_service(own, text).map_err(err)?;
        }
        Ok(config)
    }

    /// `[self_service]` sends setup mails that link to the setup page, so
    /// it needs `[mail]` and `[http]`; its socket is not the PAM socket.
    fn check_self_service(&self, own: &SelfServiceConfig, text: &str) -> Result<(), String> {
        let line = table_line(text, "self_service");
        if self.mail.is_none() || self.http.is_none() {
            return Err(format!(
                "line {line}: [self_service] needs [mail] and [http]: it mails setup links to the setup page"
            ));
        }
        if own.socket.as_os_str().is_empty() || own.socket.is_relative() {
            return Err(format!(
                "line {}: self_service.socket: must be an absolute path",
                key_line(text, "self_service", "socket")
            ));
        }
        if self.socket.as_ref().is_some_and(|s| s.path == own.socket) {
            return Err(format!(
                "line {}: self_service.socket: must not be the path of [socket]",
                key_line(text, "self_service", "socket")
            ));
        }
        if own.allowed_groups.iter().any(|g| g.trim().is_empty()) {
            return Err(format!(
                "line {}: self_service.allowed_groups: a group name must not be empty",
                key_line(text, "self_service", "allowed_groups")
            ));
        }
        Ok(())
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
                trusted_proxies: Vec::new(),
            }),
            radius: None,
            ldap: None,
            store: StoreConfig::default(),
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
                notify: default_notify(),
            }),
            metrics: None,
            self_service: None,
        }
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    /// The annotated example shipped in `conf/`, as written.
    pub(crate) const SHIPPED_EXAMPLE: &str = include_str!("../../conf/otpd.toml");

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("otpd.toml"), false).map_err(|e| e.to_string())
    }

    #[test]
    fn shipped_example_loads() {
        let c = parse(SHIPPED_EXAMPLE).expect("the shipped example loads");
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
        assert_eq!(c.policy.audit_retention_days, 400);
        assert!(c.http.is_none() && c.radius.is_none() && c.socket.is_none() && c.mail.is_none());
    }

    fn replace(from: &str, to: &str) -> String {
        assert!(SHIPPED_EXAMPLE.contains(from), "example holds {from:?}");
        SHIPPED_EXAMPLE.replacen(from, to, 1)
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
            (
                "period = 60",
                "period = 0",
                "token.period: must be 15 to 300",
            ),
            ("digits = 6", "digits = 10", "token.digits: must be 6 to 8"),
            (
                "algorithm = \"SHA1\"",
                "algorithm = \"MD5\"",
                "token.algorithm: unknown variant, expected one of `SHA1`",
            ),
            ("window = 1", "window = 99", "token.window: must be 0 to 10"),
            (
                "max_failures = 5",
                "max_failures = 0",
                "policy.max_failures: must be 1 to",
            ),
            (
                "mode = \"0660\"",
                "mode = \"0666\"",
                "socket.mode: would let any local user",
            ),
            (
                "mode = \"0660\"",
                "mode = \"rw\"",
                "socket.mode: must be an octal permission",
            ),
            (
                "listen = \"127.0.0.1:8080\"",
                "listen = \"localhost\"",
                "http.listen: invalid socket address",
            ),
            (
                "public_url = \"https://otp.example.com\"",
                "public_url = \"otp.example.com\"",
                "http.public_url: must start with https://",
            ),
            (
                "address = \"192.0.2.10/32\"",
                "address = \"192.0.2.10/33\"",
                "radius.client[0].address: must be an IP address or CIDR block",
            ),
            (
                "transport = \"smtp\"",
                "transport = \"pigeon\"",
                "mail.transport: unknown variant",
            ),
            (
                "starttls = \"opportunistic\"",
                "starttls = \"maybe\"",
                "mail.starttls: unknown variant",
            ),
            (
                "language = \"ja\"",
                "language = \"fr\"",
                "mail.language: unknown variant",
            ),
            (
                "sqlite_synchronous = \"normal\"",
                "sqlite_synchronous = \"off\"",
                "sqlite_synchronous: unknown variant",
            ),
            (
                "service_id = \"EXAMPLE\"",
                "service_id = \"has space\"",
                "service_id: must be 1 to 32",
            ),
            (
                "smtp_port = 25",
                "smtp_port = 70000",
                "mail.smtp_port: must be 1 to 65535",
            ),
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

    /// The RadSec example shipped in `conf/radius/`, as written.
    const RADSEC_EXAMPLE: &str = include_str!("../../conf/radius/otpd-radsec.toml");

    #[test]
    fn radsec_example_loads() {
        let c = parse(RADSEC_EXAMPLE).expect("the RadSec example loads");
        let radius = c.radius.as_ref().expect("radius section");
        let (addr, cert, key, ca) = radius.radsec().expect("radsec");
        assert_eq!(addr, "0.0.0.0:2083".parse().expect("addr"));
        assert_eq!(cert, Path::new("/etc/otpd/radsec.crt"));
        assert_eq!(key, Path::new("/etc/otpd/radsec.key"));
        assert_eq!(ca, Path::new("/etc/otpd/radsec-clients-ca.crt"));
        assert_eq!(radius.client.len(), 1);
        assert!(parse(SHIPPED_EXAMPLE)
            .expect("example")
            .radius
            .expect("radius")
            .radsec()
            .is_none());
    }

    #[test]
    fn radsec_needs_its_three_files_and_they_need_radsec_listen() {
        for key in ["radsec_cert", "radsec_key", "radsec_ca"] {
            let text: String = RADSEC_EXAMPLE
                .lines()
                .filter(|l| !l.starts_with(key))
                .map(|l| format!("{l}\n"))
                .collect();
            let message = parse(&text).expect_err(key);
            let line = line_of(&text, "radsec_listen");
            assert!(
                message.contains(&format!("line {line}: radius.{key}: needed")),
                "{message}"
            );
        }
        let text: String = RADSEC_EXAMPLE
            .lines()
            .filter(|l| !l.starts_with("radsec_listen"))
            .map(|l| format!("{l}\n"))
            .collect();
        let message = parse(&text).expect_err("files without radsec_listen");
        let line = line_of(&text, "radsec_cert");
        assert!(
            message.contains(&format!("line {line}: radius.radsec_cert: only used with")),
            "{message}"
        );
        let bad = RADSEC_EXAMPLE.replace("\"0.0.0.0:2083\"", "\"2083\"");
        let message = parse(&bad).expect_err("bad address");
        assert!(message.contains("radsec_listen"), "{message}");
    }

    #[test]
    fn accounting_listen_is_optional_and_checked() {
        let c = parse(SHIPPED_EXAMPLE).expect("example");
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
            parse(&format!("{SHIPPED_EXAMPLE}\n[extra]\nx = 1\n")).expect_err("unknown section");
        assert!(message.contains("unknown field `extra`"), "{message}");
    }

    #[test]
    fn broken_toml_is_an_error_with_a_line() {
        let message = parse("service_id = \"X\nissuer = 1").expect_err("broken");
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn world_readable_secrets_are_refused() {
        let message = Config::parse(SHIPPED_EXAMPLE, Path::new("otpd.toml"), true)
            .expect_err("world-readable with secret")
            .to_string();
        assert!(message.contains("world-readable"), "{message}");
        assert!(message.contains(&format!(
            "line {}",
            line_of(SHIPPED_EXAMPLE, "[[radius.client]]")
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

    /// A numeric key: its table, name, the lowest and highest values it
    /// takes, and how to read it back.
    struct Numeric {
        table: &'static str,
        key: &'static str,
        min: i64,
        max: i64,
        read: fn(&Config) -> Option<i64>,
    }

    fn int(v: impl TryInto<i64>) -> Option<i64> {
        v.try_into().ok()
    }

    /// Every integer of the configuration with its documented bounds.
    const NUMERIC: [Numeric; 13] = [
        Numeric {
            table: "token",
            key: "period",
            min: 15,
            max: 300,
            read: |c| int(c.token.period),
        },
        Numeric {
            table: "token",
            key: "digits",
            min: 6,
            max: 8,
            read: |c| int(c.token.digits),
        },
        Numeric {
            table: "token",
            key: "window",
            min: 0,
            max: 10,
            read: |c| int(c.token.window),
        },
        Numeric {
            table: "token",
            key: "hotp_window",
            min: 0,
            max: 100,
            read: |c| int(c.token.hotp_window),
        },
        Numeric {
            table: "policy",
            key: "max_failures",
            min: 1,
            max: 1_000_000,
            read: |c| int(c.policy.max_failures),
        },
        Numeric {
            table: "policy",
            key: "lockout_seconds",
            min: 1,
            max: 2_592_000,
            read: |c| int(c.policy.lockout_seconds),
        },
        Numeric {
            table: "policy",
            key: "activation_attempts",
            min: 1,
            max: 100,
            read: |c| int(c.policy.activation_attempts),
        },
        Numeric {
            table: "policy",
            key: "link_ttl_hours",
            min: 1,
            max: 720,
            read: |c| int(c.policy.link_ttl_hours),
        },
        Numeric {
            table: "policy",
            key: "recovery_codes",
            min: 0,
            max: 50,
            read: |c| int(c.policy.recovery_codes),
        },
        Numeric {
            table: "socket",
            key: "allowed_uids",
            min: 0,
            max: 4_294_967_294,
            read: |c| {
                c.socket
                    .as_ref()
                    .and_then(|s| s.allowed_uids.first())
                    .and_then(|u| int(*u))
            },
        },
        Numeric {
            table: "http",
            key: "rate_limit_per_minute",
            min: 1,
            max: 10_000,
            read: |c| c.http.as_ref().and_then(|h| int(h.rate_limit_per_minute)),
        },
        Numeric {
            table: "mail",
            key: "smtp_port",
            min: 1,
            max: 65_535,
            read: |c| c.mail.as_ref().and_then(|m| int(m.smtp_port)),
        },
        Numeric {
            table: "mail",
            key: "smtp_timeout_seconds",
            min: 1,
            max: 600,
            read: |c| c.mail.as_ref().and_then(|m| int(m.smtp_timeout_seconds)),
        },
    ];

    /// The shipped example with `key = value` as the first line of its
    /// table (replacing the key's own line), and that line's number.
    fn with_value(n: &Numeric, value: &str) -> (String, usize) {
        let header = format!("[{}]", n.table);
        let value = if n.key == "allowed_uids" {
            format!("[{value}]")
        } else {
            value.to_owned()
        };
        let mut lines = Vec::new();
        let mut line = 0;
        for l in SHIPPED_EXAMPLE.lines() {
            if l.starts_with(&format!("{} =", n.key)) {
                continue;
            }
            lines.push(l.to_owned());
            if l == header {
                lines.push(format!("{} = {value}", n.key));
                line = lines.len();
            }
        }
        assert!(line > 0, "the example has {header}");
        (lines.join("\n"), line)
    }

    /// Loads `value` for `n`: the value read back, or the error, which must
    /// name the key and its line.
    fn load_value(n: &Numeric, value: &str) -> Result<Option<i64>, String> {
        let (text, line) = with_value(n, value);
        match parse(&text) {
            Ok(c) => Ok((n.read)(&c)),
            Err(message) => {
                assert!(
                    message.contains(n.key) && message.contains(&format!("line {line}")),
                    "{} = {value}: the error names neither key nor line {line}: {message}",
                    n.key
                );
                Err(message)
            }
        }
    }

    #[test]
    fn every_numeric_key_takes_its_bounds_and_refuses_beyond_them() {
        for n in &NUMERIC {
            for fine in [n.min, n.max] {
                assert_eq!(
                    load_value(n, &fine.to_string()),
                    Ok(Some(fine)),
                    "{} = {fine}",
                    n.key
                );
            }
            for beyond in [n.min - 1, n.max + 1] {
                let message = load_value(n, &beyond.to_string())
                    .expect_err(&format!("{} = {beyond} is refused", n.key));
                assert!(
                    message.contains(&format!("{} to {}", n.min, n.max)),
                    "{} = {beyond}: the error gives no bounds: {message}",
                    n.key
                );
            }
        }
    }

    #[test]
    fn an_overflowing_link_lifetime_is_refused() {
        let n = NUMERIC
            .iter()
            .find(|n| n.key == "link_ttl_hours")
            .expect("listed");
        for huge in ["5124095576030431", "9223372036854775807", "-1"] {
            let message = load_value(n, huge).expect_err(huge);
            assert!(message.contains("policy.link_ttl_hours"), "{message}");
        }
    }

    #[test]
    fn link_expiry_is_the_lifetime_after_now_and_saturates() {
        let policy = PolicyConfig {
            link_ttl_hours: LINK_TTL_HOURS.max,
            ..PolicyConfig::default()
        };
        assert_eq!(
            policy.link_expires_at(1_800_000_000),
            1_800_000_000 + 720 * 3600
        );
        assert_eq!(policy.link_expires_at(u64::MAX - 5), u64::MAX);
        let built_by_hand = PolicyConfig {
            link_ttl_hours: u64::MAX,
            ..PolicyConfig::default()
        };
        assert_eq!(built_by_hand.link_expires_at(1), u64::MAX);
    }

    #[test]
    fn serde_messages_lose_their_values() {
        for (message, expected) in [
            (
                "invalid type: integer `8675309`, expected a string",
                "invalid type: integer, expected a string",
            ),
            (
                "invalid type: string \"hunter2, expected x\", expected u32",
                "invalid type: string, expected u32",
            ),
            (
                "invalid value: floating point `1.5`, expected an integer",
                "invalid value: floating point, expected an integer",
            ),
            (
                "unknown variant `hunter2`, expected one of `a`, `b`",
                "unknown variant, expected one of `a`, `b`",
            ),
            ("unknown variant `hunter2`", "unknown variant"),
            (
                "invalid string\nexpected `\"`, `'`\n",
                "invalid string; expected `\"`, `'`",
            ),
            ("must be 1 to 720 (hours)", "must be 1 to 720 (hours)"),
        ] {
            assert_eq!(without_values(message), expected);
        }
    }

    proptest::proptest! {
        #[test]
        fn any_integer_for_a_numeric_key_loads_within_bounds_or_names_the_key(
            index in 0..NUMERIC.len(),
            value in proptest::prelude::any::<i64>(),
        ) {
            let n = &NUMERIC[index];
            if let Ok(read) = load_value(n, &value.to_string()) {
                proptest::prop_assert!((n.min..=n.max).contains(&value), "{} = {} loaded", n.key, value);
                proptest::prop_assert_eq!(read, Some(value));
            }
        }

        #[test]
        fn integers_beyond_toml_range_name_the_key(
            index in 0..NUMERIC.len(),
            digits in "-?[1-9][0-9]{19,30}",
        ) {
            proptest::prop_assert!(load_value(&NUMERIC[index], &digits).is_err());
        }
    }

    #[test]
    fn syntax_errors_give_line_and_column_but_not_the_line_itself() {
        let secret = "Xq9-radius-SECRET";
        let broken = replace("secret = \"change-me\"", &format!("secret = \"{secret}"));
        let message = parse(&broken).expect_err("unterminated string");
        let line = line_of(&broken, secret);
        assert!(
            message.contains(&format!("line {line}, column ")),
            "{message}"
        );
        assert!(!message.contains(secret), "{message}");
        assert!(!message.contains("Xq9"), "{message}");

        let unquoted = replace("secret = \"change-me\"", &format!("secret = {secret}"));
        let message = parse(&unquoted).expect_err("unquoted string");
        assert!(
            message.contains(&format!("line {line}, column ")),
            "{message}"
        );
        assert!(message.contains("secret"), "{message}");
        assert!(!message.contains("Xq9"), "{message}");
    }

    #[test]
    fn type_errors_do_not_quote_the_value() {
        let numeric = replace("secret = \"change-me\"", "secret = 8675309314159");
        let message = parse(&numeric).expect_err("a number is no secret");
        assert!(!message.contains("8675309314159"), "{message}");
        assert!(message.contains("radius.client[0].secret"), "{message}");
        assert!(
            message.contains(&format!("line {}", line_of(&numeric, "8675309314159"))),
            "{message}"
        );
        let bad_variant = replace("transport = \"smtp\"", "transport = \"carrier-pigeon\"");
        let message = parse(&bad_variant).expect_err("no such transport");
        assert!(!message.contains("pigeon"), "{message}");
        assert!(message.contains("mail.transport"), "{message}");
        assert!(message.contains("unknown variant"), "{message}");
        let cidr = replace("address = \"192.0.2.10/32\"", "address = \"hunter2/32\"");
        let message = parse(&cidr).expect_err("no address");
        assert!(!message.contains("hunter2"), "{message}");
    }

    /// The annotated cluster example shipped in `conf/`, as written.
    const SHIPPED_CLUSTER: &str = include_str!("../../conf/otpd-cluster.toml");

    #[test]
    fn store_defaults_to_sqlite_and_the_cluster_example_loads() {
        let c =
            parse("service_id = \"X\"\nissuer = \"I\"\nstate_dir = \"/tmp/x\"\n").expect("loads");
        assert_eq!(c.store.backend, StoreBackend::Sqlite);
        assert_eq!(c.store.key_file, None, "the key file in state_dir");
        let cluster = parse(SHIPPED_CLUSTER).expect("the shipped cluster example loads");
        assert_eq!(cluster.store.backend, StoreBackend::Postgresql);
        assert!(cluster
            .store
            .url
            .as_deref()
            .is_some_and(|u| u.contains("sslmode=verify-full")));
        assert!(cluster.store.password_file.is_some());
        assert_eq!(
            cluster.store.url_line,
            SHIPPED_CLUSTER
                .lines()
                .position(|l| l.starts_with("url ="))
                .expect("url line")
                + 1
        );
    }

    #[test]
    fn store_errors_name_the_key_and_line_and_never_the_password() {
        let base = "service_id = \"X\"\nissuer = \"I\"\nstate_dir = \"/tmp/x\"\n[store]\n";
        let cases = [
            ("backend = \"postgresql\"\n", "needs `url`"),
            (
                "url = \"postgresql://otpd@db/otpd\"\n",
                "are for backend = \"postgresql\"",
            ),
            ("backend = \"mysql\"\n", "store.backend"),
            (
                "backend = \"postgresql\"\nurl = \"mysql://u:pw-9f3a@db/x\"\n",
                "line 6, column 7: store.url: must start with postgresql://",
            ),
            (
                "backend = \"postgresql\"\nurl = \"postgresql://otpd@db/otpd\"\npool_size = 0\n",
                "store.pool_size: must be 1 to 64",
            ),
            (
                "backend = \"postgresql\"\nurl = \"postgresql://otpd@db/otpd\"\ntimeout_ms = 99\n",
                "store.timeout_ms: must be 100 to 60000",
            ),
            (
                "backend = \"postgresql\"\nurl = \"postgresql://otpd@db/otpd\"\ntimeout = 5\n",
                "unknown field",
            ),
        ];
        for (tail, expected) in cases {
            let message = parse(&format!("{base}{tail}")).expect_err(tail);
            assert!(message.contains(expected), "{tail}: {message}");
            assert!(!message.contains("pw-9f3a"), "{message}");
        }
        let with_password = format!(
            "{base}backend = \"postgresql\"\nurl = \"postgresql://otpd:pw-9f3a@db/otpd\"\n"
        );
        assert!(
            parse(&with_password).is_ok(),
            "an owner-only file may hold it"
        );
        let message = Config::parse(&with_password, Path::new("otpd.toml"), true)
            .expect_err("world-readable")
            .to_string();
        assert!(
            message.contains("line 6: store.url: holds a password"),
            "{message}"
        );
        assert!(!message.contains("pw-9f3a"), "{message}");
        assert!(url_has_password("postgresql://u:p@h/db"));
        assert!(!url_has_password("postgresql://u@h/db?x=a:b@c"));
        assert!(!url_has_password("postgresql://u@h:5432/db"));
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

    #[test]
    fn metrics_and_trusted_proxies_are_read_and_checked() {
        let base = "service_id = \"X\"\nissuer = \"I\"\nstate_dir = \"/tmp/x\"\n";
        let c = parse(base).expect("loads");
        assert!(c.metrics.is_none());
        let c = parse(&format!(
            "{base}[metrics]\nlisten = \"127.0.0.1:9105\"\n\
             [http]\nlisten = \"127.0.0.1:8080\"\npublic_url = \"https://o.example\"\n\
             trusted_proxies = [\"127.0.0.1/32\", \"2001:db8::1\"]\n"
        ))
        .expect("loads");
        assert_eq!(
            c.metrics.map(|m| m.listen),
            Some(SocketAddr::from(([127, 0, 0, 1], 9105)))
        );
        let proxies = c.http.map(|h| h.trusted_proxies).unwrap_or_default();
        assert_eq!(proxies.len(), 2);
        assert!(proxies[0].contains("127.0.0.1".parse().expect("ip")));
        assert!(proxies[1].contains("2001:db8::1".parse().expect("ip")));
        let message = parse(&format!(
            "{base}[http]\nlisten = \"127.0.0.1:8080\"\npublic_url = \"https://o.example\"\n\
             trusted_proxies = [\"127.0.0.1/33\"]\n"
        ))
        .expect_err("bad block");
        assert!(message.contains("http.trusted_proxies"), "{message}");
        assert!(message.contains("CIDR"), "{message}");
        let message =
            parse(&format!("{base}[metrics]\nlisten = \"nowhere\"\n")).expect_err("bad address");
        assert!(message.contains("metrics.listen"), "{message}");
    }

    #[test]
    fn notify_lists_events_once_each() {
        let c = parse(SHIPPED_EXAMPLE).expect("the shipped example loads");
        let notify = c.mail.map(|m| m.notify).unwrap_or_default();
        assert_eq!(notify, NoticeEvent::ALL.to_vec());
        let mail = "[mail]\nfrom = \"o@example.jp\"\ntransport = \"smtp\"\n";
        let base = format!("service_id = \"X\"\nissuer = \"I\"\nstate_dir = \"/tmp/x\"\n{mail}");
        let c = parse(&base).expect("loads");
        assert_eq!(
            c.mail.map(|m| m.notify),
            Some(NoticeEvent::ALL.to_vec()),
            "absent: every event"
        );
        let c = parse(&format!("{base}notify = []\n")).expect("loads");
        assert_eq!(c.mail.map(|m| m.notify), Some(Vec::new()), "empty: none");
        let c = parse(&format!("{base}notify = [\"locked\", \"recovery_used\"]\n")).expect("loads");
        assert_eq!(
            c.mail.map(|m| m.notify),
            Some(vec![NoticeEvent::Locked, NoticeEvent::RecoveryUsed])
        );
        // The bad line is line 7 of each text.
        let bad = [
            ("notify = [\"locked\", \"stolen\"]", "unknown variant"),
            (
                "notify = [\"locked\", \"locked\"]",
                "names \"locked\" twice",
            ),
            ("notify = [\"locked\", 5]", "wanted string"),
            ("notify = \"locked\"", "invalid type: string"),
            ("notify = [[\"locked\"]]", "wanted string"),
        ];
        for (line, expected) in bad {
            let message = parse(&format!("{base}{line}\n")).expect_err(line);
            assert!(message.contains("mail.notify"), "{line}: {message}");
            assert!(message.contains("line 7"), "{line}: {message}");
            assert!(message.contains(expected), "{line}: {message}");
        }
    }

    /// A minimal configuration with `[ldap]` holding `lines`.
    fn with_ldap(lines: &[&str]) -> String {
        format!(
            "service_id = \"X\"\nissuer = \"I\"\nstate_dir = \"/tmp/x\"\n\n[ldap]\n{}\n",
            lines.join("\n")
        )
    }

    const LDAP_DN: &str = "bind_dn = \"uid={user},ou=people,dc=example,dc=com\"";

    /// The `[ldap]` section of `text`, checked.
    fn ldap_of(text: &str) -> LdapConfig {
        let config = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        config.ldap.expect("an [ldap] section")
    }

    /// The error for `text`, which must name `key` and the line holding
    /// `line_of_this` (or of `[ldap]`).
    fn ldap_refused(text: &str, key: &str, line_of_this: &str) -> String {
        let message = parse(text).expect_err(text);
        assert!(message.contains(&format!("ldap.{key}: ")), "{message}");
        let line = line_of(text, line_of_this);
        assert!(
            message.contains(&format!("line {line}")),
            "{text}: no line {line} in {message}"
        );
        message
    }

    #[test]
    fn the_commented_ldap_example_loads_in_either_mode() {
        let start = line_of(SHIPPED_EXAMPLE, "# [ldap]") - 1;
        let block: Vec<&str> = SHIPPED_EXAMPLE
            .lines()
            .skip(start)
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with("[ldap]") || l.contains(" = "))
            .collect();
        let uncommented = |leave_out: &str| {
            let kept: Vec<&str> = block
                .iter()
                .copied()
                .filter(|l| !l.starts_with(leave_out))
                .collect();
            format!("{SHIPPED_EXAMPLE}\n{}\n", kept.join("\n"))
        };
        let by_template = ldap_of(&uncommented("search_"));
        assert_eq!(by_template.transport(), Ok(LdapTransport::Ldaps));
        assert_eq!(
            by_template.bind(),
            Ok(LdapBind::Template {
                dn: "uid={user},ou=people,dc=example,dc=com"
            })
        );
        assert_eq!(by_template.url.port, 636);
        assert_eq!(by_template.timeout_ms, 3000);
        assert_eq!(
            by_template.ca_file.as_deref(),
            Some(Path::new("/etc/otpd/ldap-ca.crt"))
        );
        let by_search = ldap_of(&uncommented("bind_dn"));
        assert_eq!(
            by_search.bind(),
            Ok(LdapBind::Search {
                base: "ou=people,dc=example,dc=com",
                filter: "(uid={user})",
                account: Some((
                    "cn=otpd,dc=example,dc=com",
                    Path::new("/etc/otpd/ldap.password")
                )),
            })
        );
        let both = parse(&uncommented("#")).expect_err("bind_dn and a search");
        assert!(both.contains("ldap.bind_dn: set either"), "{both}");
        assert!(parse(SHIPPED_EXAMPLE).expect("example").ldap.is_none());
    }

    #[test]
    fn ldap_urls_name_a_host_and_nothing_more() {
        let url = |text: &str| LdapUrl::parse(text);
        let parsed = url("ldaps://ldap.example.com").expect("ldaps");
        assert_eq!((parsed.ldaps, parsed.port), (true, 636));
        assert_eq!(parsed.to_string(), "ldaps://ldap.example.com:636");
        let parsed = url("ldap://dir-1.example.com:3389/").expect("ldap with port");
        assert_eq!((parsed.ldaps, parsed.port), (false, 3389));
        assert_eq!(parsed.host, "dir-1.example.com");
        let parsed = url("ldap://[::1]:3890").expect("IPv6");
        assert_eq!(parsed.host, "::1");
        assert_eq!(parsed.to_string(), "ldap://[::1]:3890");
        assert!(parsed.is_loopback());
        for bad in [
            "",
            "ldap.example.com",
            "https://ldap.example.com",
            "LDAPS://ldap.example.com",
            "ldaps://",
            "ldaps://:636",
            "ldaps://ldap.example.com/dc=example,dc=com",
            "ldaps://ldap.example.com/??sub",
            "ldaps://admin@ldap.example.com",
            "ldaps://ldap.example.com:0",
            "ldaps://ldap.example.com:65536",
            "ldaps://ldap.example.com:",
            "ldaps://ldap.example.com:+636",
            "ldaps://ldap.example.com:636:1",
            "ldaps://[::1",
            "ldaps://[ldap.example.com]",
            "ldaps://ldap example.com",
        ] {
            assert_eq!(url(bad), None, "{bad:?}");
        }
        let text = with_ldap(&["url = \"ldaps://xq7host.example.com/dc=x\"", LDAP_DN]);
        let message = ldap_refused(&text, "url", "xq7host");
        assert!(message.contains("must be ldaps://HOST[:PORT]"), "{message}");
        assert!(message.contains("column 7"), "{message}");
        assert!(!message.contains("xq7host"), "{message}");
    }

    #[test]
    fn ldap_in_clear_is_refused_unless_to_a_loopback_host() {
        for (url, starttls, expected) in [
            ("ldaps://ldap.example.com", "", LdapTransport::Ldaps),
            (
                "ldap://ldap.example.com",
                "starttls = true",
                LdapTransport::StartTls,
            ),
            ("ldap://127.0.0.1:3890", "", LdapTransport::Plain),
            ("ldap://127.9.8.7", "starttls = false", LdapTransport::Plain),
            ("ldap://localhost", "", LdapTransport::Plain),
            ("ldap://[::1]:389", "", LdapTransport::Plain),
            (
                "ldap://localhost",
                "starttls = true",
                LdapTransport::StartTls,
            ),
        ] {
            let url_line = format!("url = \"{url}\"");
            let ldap = ldap_of(&with_ldap(&[&url_line, starttls, LDAP_DN]));
            assert_eq!(ldap.transport(), Ok(expected), "{url} {starttls}");
        }
        for url in [
            "ldap://ldap.example.com",
            "ldap://10.0.0.1",
            "ldap://[2001:db8::1]",
            "ldap://localhost.example.com",
        ] {
            let url_line = format!("url = \"{url}\"");
            let text = with_ldap(&[LDAP_DN, &url_line, "starttls = false"]);
            let message = ldap_refused(&text, "url", "url =");
            assert!(message.contains("in clear"), "{message}");
            assert!(message.contains("loopback"), "{message}");
        }
    }

    #[test]
    fn starttls_and_ca_file_go_with_their_transport() {
        let text = with_ldap(&[
            "url = \"ldaps://ldap.example.com\"",
            LDAP_DN,
            "starttls = true",
        ]);
        let message = ldap_refused(&text, "starttls", "starttls");
        assert!(message.contains("is for ldap:// URLs"), "{message}");
        let text = with_ldap(&[
            "url = \"ldap://127.0.0.1\"",
            "ca_file = \"/etc/otpd/ldap-ca.crt\"",
            LDAP_DN,
        ]);
        let message = ldap_refused(&text, "ca_file", "ca_file");
        assert!(message.contains("is for TLS"), "{message}");
        let with_tls = with_ldap(&[
            "url = \"ldap://127.0.0.1\"",
            "starttls = true",
            "ca_file = \"/etc/otpd/ldap-ca.crt\"",
            LDAP_DN,
        ]);
        assert_eq!(ldap_of(&with_tls).transport(), Ok(LdapTransport::StartTls));
    }

    #[test]
    fn the_dn_is_found_in_exactly_one_way() {
        const URL: &str = "url = \"ldaps://ldap.example.com\"";
        const BASE: &str = "search_base = \"ou=people,dc=example,dc=com\"";
        const FILTER: &str = "search_filter = \"(&(objectClass=person)(uid={user}))\"";
        const ACCOUNT: &str = "search_bind_dn = \"cn=otpd,dc=example,dc=com\"";
        const FILE: &str = "search_password_file = \"/etc/otpd/ldap.password\"";
        let anonymous = ldap_of(&with_ldap(&[URL, BASE, FILTER]));
        assert_eq!(
            anonymous.bind(),
            Ok(LdapBind::Search {
                base: "ou=people,dc=example,dc=com",
                filter: "(&(objectClass=person)(uid={user}))",
                account: None
            })
        );
        let with_account = ldap_of(&with_ldap(&[URL, FILE, BASE, ACCOUNT, FILTER]));
        assert!(matches!(
            with_account.bind(),
            Ok(LdapBind::Search {
                account: Some(("cn=otpd,dc=example,dc=com", file)),
                ..
            }) if file == Path::new("/etc/otpd/ldap.password")
        ));
        for (lines, key, line_of_this, reason) in [
            (
                vec![URL, LDAP_DN, BASE, FILTER],
                "bind_dn",
                "bind_dn",
                "not both",
            ),
            (
                vec![URL, LDAP_DN, ACCOUNT],
                "bind_dn",
                "bind_dn",
                "not both",
            ),
            (
                vec![URL],
                "bind_dn",
                "[ldap]",
                "`search_base` and `search_filter`",
            ),
            (
                vec![URL, BASE],
                "search_base",
                "search_base",
                "needs `search_filter`",
            ),
            (
                vec![FILTER, URL],
                "search_filter",
                "search_filter",
                "needs `search_base`",
            ),
            (
                vec![URL, BASE, FILTER, ACCOUNT],
                "search_bind_dn",
                "search_bind_dn",
                "needs `search_password_file`",
            ),
            (
                vec![URL, BASE, FILE, FILTER],
                "search_password_file",
                "search_password_file",
                "needs `search_bind_dn`",
            ),
        ] {
            let text = with_ldap(&lines);
            let message = ldap_refused(&text, key, line_of_this);
            assert!(message.contains(reason), "{message}");
        }
    }

    #[test]
    fn dn_and_filter_templates_are_checked_as_read() {
        const URL: &str = "url = \"ldaps://ldap.example.com\"";
        for (line, key, reason) in [
            (
                "bind_dn = \"uid=xq7user,ou=people,dc=example,dc=com\"",
                "bind_dn",
                "must contain {user}",
            ),
            ("bind_dn = \"  \"", "bind_dn", "must not be empty"),
            (
                "bind_dn = \"uid={user},ou=xq7\\u0000\"",
                "bind_dn",
                "must not hold NUL",
            ),
            (
                "search_filter = \"uid={user}\"",
                "search_filter",
                "must be a filter in parentheses",
            ),
            (
                "search_filter = \"(uid=xq7user)\"",
                "search_filter",
                "must contain {user}",
            ),
            ("search_base = \"\"", "search_base", "must not be empty"),
            (
                "search_bind_dn = \"cn=xq7\\nx\"",
                "search_bind_dn",
                "must not hold NUL or line breaks",
            ),
        ] {
            let text = with_ldap(&[URL, line]);
            let message = parse(&text).expect_err(line);
            assert!(
                message.contains(&format!("ldap.{key}: {reason}")),
                "{message}"
            );
            let at = line_of(&text, line);
            assert!(
                message.contains(&format!("line {at}, column ")),
                "{line}: {message}"
            );
            assert!(!message.contains("xq7"), "{message}");
        }
    }

    #[test]
    fn ldap_timeout_takes_its_bounds_and_defaults_to_three_seconds() {
        let base = ["url = \"ldaps://ldap.example.com\"", LDAP_DN];
        assert_eq!(ldap_of(&with_ldap(&base)).timeout_ms, 3000);
        for fine in [LDAP_TIMEOUT_MS.min, 3000, LDAP_TIMEOUT_MS.max] {
            let line = format!("timeout_ms = {fine}");
            let text = with_ldap(&[base[0], base[1], &line]);
            assert_eq!(ldap_of(&text).timeout_ms, fine);
        }
        for beyond in ["99", "60001", "0", "-1", "3.5", "\"3000\""] {
            let line = format!("timeout_ms = {beyond}");
            let text = with_ldap(&[base[0], &line, base[1]]);
            let message = ldap_refused(&text, "timeout_ms", "timeout_ms");
            assert!(
                message.contains("100 to 60000") || message.contains("invalid type"),
                "{beyond}: {message}"
            );
        }
    }

    #[test]
    fn unknown_ldap_keys_are_refused_without_their_value() {
        let text = with_ldap(&[
            "url = \"ldaps://ldap.example.com\"",
            LDAP_DN,
            "bind_password = \"xq7-hunter2\"",
        ]);
        let message = parse(&text).expect_err("no password in the config");
        assert!(
            message.contains("unknown field `bind_password`"),
            "{message}"
        );
        assert!(
            message.contains(&format!("line {}", line_of(&text, "bind_password"))),
            "{message}"
        );
        assert!(!message.contains("xq7"), "{message}");
        let missing_url = with_ldap(&[LDAP_DN]);
        assert!(parse(&missing_url)
            .expect_err("no url")
            .contains("missing field `url`"));
    }

    /// A minimal configuration with `[radius]` holding `radius`, one client
    /// holding `client`, and `[ldap]` when `ldap`.
    fn with_radius(radius: &[&str], client: &[&str], ldap: bool) -> String {
        let ldap = if ldap {
            format!("[ldap]\nurl = \"ldap://127.0.0.1\"\n{LDAP_DN}\n")
        } else {
            String::new()
        };
        format!(
            "service_id = \"X\"\nissuer = \"I\"\nstate_dir = \"/tmp/x\"\n\n{ldap}\n[radius]\nlisten = \"127.0.0.1:1812\"\n{}\n\n[[radius.client]]\nname = \"vpn\"\naddress = \"127.0.0.1\"\nsecret_file = \"/etc/otpd/s\"\n{}\n",
            radius.join("\n"),
            client.join("\n")
        )
    }

    #[test]
    fn radius_factors_default_to_the_code_alone() {
        let c = parse(&with_radius(&[], &[], false)).expect("loads");
        let radius = c.radius.expect("radius");
        assert_eq!(radius.first_factor_of(0), FirstFactor::None);
        assert!(!radius.challenge);
        assert_eq!(radius.reauth_seconds_of(0), 0);
    }

    #[test]
    fn radius_clients_override_first_factor_and_reauth() {
        let text = with_radius(
            &["first_factor = \"ldap\"", "reauth_seconds = 60"],
            &["first_factor = \"none\"", "reauth_seconds = 3600"],
            true,
        );
        let radius = parse(&text).expect("loads").radius.expect("radius");
        assert_eq!(radius.first_factor, FirstFactor::Ldap);
        assert_eq!(radius.first_factor_of(0), FirstFactor::None);
        assert_eq!(radius.reauth_seconds_of(0), 3600);
        assert_eq!(radius.first_factor_of(1), FirstFactor::Ldap);
        assert_eq!(radius.reauth_seconds_of(1), 60);
    }

    #[test]
    fn a_first_factor_needs_ldap_and_a_challenge_needs_a_first_factor() {
        let global = with_radius(&["first_factor = \"ldap\""], &[], false);
        let message = parse(&global).expect_err("no [ldap]");
        assert!(message.contains("radius.first_factor"), "{message}");
        assert!(
            message.contains(&format!("line {}", line_of(&global, "first_factor"))),
            "{message}"
        );
        let client = with_radius(&[], &["first_factor = \"ldap\""], false);
        let message = parse(&client).expect_err("no [ldap]");
        assert!(
            message.contains(&format!(
                "line {}: radius.client[0].first_factor",
                line_of(&client, "[[radius.client]]")
            )),
            "{message}"
        );
        let challenge = with_radius(&["challenge = true"], &[], true);
        let message = parse(&challenge).expect_err("no first factor");
        assert!(
            message.contains(&format!(
                "line {}: radius.challenge",
                line_of(&challenge, "challenge")
            )),
            "{message}"
        );
        let fine = with_radius(&["first_factor = \"ldap\"", "challenge = true"], &[], true);
        assert!(
            parse(&fine)
                .expect("loads")
                .radius
                .expect("radius")
                .challenge
        );
    }

    #[test]
    fn radius_factor_values_are_checked() {
        for (line, key) in [
            ("first_factor = \"kerberos\"", "radius.first_factor"),
            ("reauth_seconds = -1", "radius.reauth_seconds"),
            ("reauth_seconds = 86401", "radius.reauth_seconds"),
        ] {
            let text = with_radius(&[line], &[], true);
            let message = parse(&text).expect_err(line);
            assert!(message.contains(key), "{line}: {message}");
        }
        let text = with_radius(&[], &["reauth_seconds = 100000"], true);
        let message = parse(&text).expect_err("client reauth");
        assert!(message.contains("reauth_seconds"), "{message}");
    }

    /// The RADIUS examples shipped in `conf/radius/`, as written.
    const RADIUS_EXAMPLES: [(&str, &str); 3] = [
        (
            "password-and-code.toml",
            include_str!("../../conf/radius/password-and-code.toml"),
        ),
        (
            "challenge.toml",
            include_str!("../../conf/radius/challenge.toml"),
        ),
        ("reauth.toml", include_str!("../../conf/radius/reauth.toml")),
    ];

    #[test]
    fn the_shipped_radius_examples_load_in_their_modes() {
        for (name, text) in RADIUS_EXAMPLES {
            let c = parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let radius = c.radius.expect("radius section");
            assert!(c.ldap.is_some(), "{name}");
            assert_eq!(radius.first_factor_of(0), FirstFactor::Ldap, "{name}");
            match name {
                "challenge.toml" => assert!(radius.challenge),
                "reauth.toml" => assert!(radius.reauth_seconds_of(0) > 0),
                _ => assert!(!radius.challenge && radius.reauth_seconds_of(0) == 0),
            }
        }
    }

    #[test]
    fn self_service_is_read_and_checked() {
        let base = "service_id = \"X\"\nissuer = \"I\"\nstate_dir = \"/tmp/x\"\n";
        let listeners = "[socket]\npath = \"/run/otpd/otpd.sock\"\n\
                         [http]\nlisten = \"127.0.0.1:8080\"\npublic_url = \"https://o.example\"\n\
                         [mail]\nfrom = \"a@b.example\"\ntransport = \"sendmail\"\n";
        assert!(parse(base).expect("loads").self_service.is_none());
        let c = parse(&format!(
            "{base}{listeners}[self_service]\nsocket = \"/run/otpd/self.sock\"\n\
             allowed_groups = [\"staff\"]\n"
        ))
        .expect("loads");
        let own = c.self_service.expect("self_service");
        assert_eq!(own.socket, Path::new("/run/otpd/self.sock"));
        assert_eq!(own.allowed_groups, ["staff"]);
        let c = parse(&format!(
            "{base}{listeners}[self_service]\nsocket = \"/run/otpd/self.sock\"\n"
        ))
        .expect("loads");
        assert!(c.self_service.is_some_and(|s| s.allowed_groups.is_empty()));
        for (table, expected) in [
            (
                "[self_service]\nsocket = \"/run/otpd/otpd.sock\"\n",
                "line 13: self_service.socket: must not be the path of [socket]",
            ),
            (
                "[self_service]\nsocket = \"self.sock\"\n",
                "line 13: self_service.socket: must be an absolute path",
            ),
            (
                "[self_service]\nsocket = \"/s\"\nallowed_groups = [\"\"]\n",
                "line 14: self_service.allowed_groups: a group name must not be empty",
            ),
            (
                "[self_service]\nsocket = \"/s\"\nuser = \"root\"\n",
                "line 14, column 1: self_service.user: unknown field `user`",
            ),
        ] {
            let message = parse(&format!("{base}{listeners}{table}")).expect_err(table);
            assert!(message.contains(expected), "{message}");
        }
        let message =
            parse(&format!("{base}[self_service]\nsocket = \"/s\"\n")).expect_err("no mail");
        assert!(
            message.contains("line 4: [self_service] needs [mail] and [http]"),
            "{message}"
        );
        // The commented example of conf/otpd.toml, uncommented.
        let start = line_of(SHIPPED_EXAMPLE, "# [self_service]") - 1;
        let block: Vec<&str> = SHIPPED_EXAMPLE
            .lines()
            .skip(start)
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# "))
            .collect();
        let c = parse(&format!("{SHIPPED_EXAMPLE}\n{}\n", block.join("\n")))
            .expect("the commented example loads");
        assert_eq!(
            c.self_service.map(|s| s.socket),
            Some(PathBuf::from("/run/otpd/self.sock"))
        );
    }
}
