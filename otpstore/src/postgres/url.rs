//! `[store] url`: a PostgreSQL connection URL, as libpq writes them, with
//! the TLS modes otpd accepts. `sslmode=verify-full` (the default over
//! TCP) checks the server's certificate chain against `sslrootcert` (or the
//! system's CA bundle) and its name against the host; `sslmode=disable` is
//! accepted only when every host is a Unix socket or a loopback address.
//! The modes that encrypt without checking whom they talk to (`allow`,
//! `prefer`, `require`, `verify-ca`) are refused. Errors never quote the
//! URL: it may hold a password.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres::config::Host;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Result, StoreError};

/// Where the system keeps the CAs it trusts (Debian's ca-certificates).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A checked database URL.
#[derive(Clone)]
pub(crate) struct DatabaseUrl {
    pub config: tokio_postgres::Config,
    /// `Some(CA file)` for `verify-full`, `None` for `disable`.
    verify_with: Option<PathBuf>,
}

/// Why a URL is refused; never holds any part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub &'static str);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    }
}

impl DatabaseUrl {
    /// Parses `text`; see the module's description for what is accepted.
    pub fn parse(text: &str) -> std::result::Result<DatabaseUrl, UrlError> {
        if !(text.starts_with("postgresql://") || text.starts_with("postgres://")) {
            return Err(UrlError("must start with postgresql://"));
        }
        let (base, query) = text.split_once('?').unwrap_or((text, ""));
        let mut kept = Vec::new();
        let mut sslmode = None;
        let mut rootcert = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| UrlError("a query parameter is not valid percent-encoded UTF-8"))?;
            match key {
                "sslmode" => sslmode = Some(value.into_owned()),
                "sslrootcert" => rootcert = Some(PathBuf::from(value.into_owned())),
                _ => kept.push(pair),
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let config = tokio_postgres::Config::from_str(&rebuilt)
            .map_err(|_| UrlError("is not a valid PostgreSQL URL (postgresql://USER@HOST:PORT/DATABASE?sslmode=verify-full)"))?;
        if config.get_hosts().is_empty() {
            return Err(UrlError("names no host"));
        }
        if config.get_dbname().is_none() {
            return Err(UrlError("names no database"));
        }
        if config.get_user().is_none() {
            return Err(UrlError("names no user"));
        }
        let local = config.get_hosts().iter().all(is_local);
        let verify = match sslmode.as_deref() {
            Some("verify-full") => true,
            Some("disable") if local => false,
            Some("disable") => {
                return Err(UrlError(
                    "sslmode=disable is only for a Unix socket or a loopback address; \
                     a database over the network needs sslmode=verify-full",
                ))
            }
            None => !config
                .get_hosts()
                .iter()
                .all(|h| matches!(h, Host::Unix(_))),
            Some(_) => return Err(UrlError(
                "sslmode must be verify-full (or disable for a Unix socket or loopback address)",
            )),
        };
        let verify_with = verify.then(|| rootcert.unwrap_or_else(|| SYSTEM_CA_BUNDLE.into()));
        Ok(DatabaseUrl {
            config,
            verify_with,
        })
    }

    /// The URL with its password left out, for logs and messages.
    pub fn redacted(&self) -> String {
        let user = self.config.get_user().unwrap_or("");
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .zip(
                self.config
                    .get_ports()
                    .iter()
                    .chain(std::iter::repeat(&5432)),
            )
            .map(|(host, port)| match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            })
            .collect();
        let db = self.config.get_dbname().unwrap_or("");
        let tls = if self.verify_with.is_some() {
            "verify-full"
        } else {
            "disable"
        };
        format!("postgresql://{user}@{}/{db}?sslmode={tls}", hosts.join(","))
    }

    /// The TLS connector that checks the server, for `verify-full`.
    pub(crate) fn tls(&self) -> Result<Option<MakeRustlsConnect>> {
        let Some(ca) = &self.verify_with else {
            return Ok(None);
        };
        let unsafe_ca = |reason: String| StoreError::Unsafe {
            path: ca.clone(),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| unsafe_ca(format!("cannot read the CA certificates: {e}")))?;
        for cert in certs {
            let cert = cert.map_err(|e| unsafe_ca(format!("cannot read a CA certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| unsafe_ca(format!("unusable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(unsafe_ca("holds no CA certificate".to_owned()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|_| StoreError::Internal("TLS set-up failed"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(MakeRustlsConnect::new(config)))
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn refused(url: &str) -> &'static str {
        DatabaseUrl::parse(url).err().expect("refused").0
    }

    #[test]
    fn accepts_verify_full_and_local_plain_connections() {
        let url = DatabaseUrl::parse(
            "postgresql://otpd@db.example.com:5433/otpd?sslmode=verify-full&sslrootcert=%2Fetc%2Fotpd%2Fca.pem",
        )
        .expect("verify-full");
        assert_eq!(url.verify_with, Some(PathBuf::from("/etc/otpd/ca.pem")));
        assert_eq!(url.config.get_ports(), &[5433]);
        let socket =
            DatabaseUrl::parse("postgresql://otpd@%2Frun%2Fpostgresql/otpd").expect("socket");
        assert_eq!(socket.verify_with, None);
        assert!(
            matches!(socket.config.get_hosts(), [Host::Unix(p)] if p.as_os_str() == "/run/postgresql")
        );
        let tcp = DatabaseUrl::parse("postgresql://otpd@db.example.com/otpd").expect("tcp");
        assert_eq!(
            tcp.verify_with,
            Some(PathBuf::from(SYSTEM_CA_BUNDLE)),
            "verify-full by default over TCP"
        );
        DatabaseUrl::parse("postgres://otpd@127.0.0.1/otpd?sslmode=disable").expect("loopback");
    }

    #[test]
    fn refuses_weak_tls_and_incomplete_urls() {
        assert!(
            refused("postgresql://otpd@db.example.com/otpd?sslmode=disable")
                .contains("verify-full")
        );
        for mode in ["require", "prefer", "allow", "verify-ca", "bogus"] {
            let url = format!("postgresql://otpd@db.example.com/otpd?sslmode={mode}");
            assert!(refused(&url).contains("verify-full"), "{mode}");
        }
        assert_eq!(
            refused("mysql://otpd@db/otpd"),
            "must start with postgresql://"
        );
        assert_eq!(
            refused("postgresql://otpd@db.example.com"),
            "names no database"
        );
        assert_eq!(refused("postgresql://db.example.com/otpd"), "names no user");
        refused("postgresql://otpd@db.example.com:notaport/otpd");
    }

    #[test]
    fn redacted_leaves_out_the_password() {
        let url =
            DatabaseUrl::parse("postgresql://otpd:s3cr3t-pw@db.example.com/otpd").expect("parses");
        let shown = url.redacted();
        assert_eq!(
            shown,
            "postgresql://otpd@db.example.com:5432/otpd?sslmode=verify-full"
        );
        assert!(!shown.contains("s3cr3t"));
    }

    proptest! {
        /// Any text: a URL or a refusal, never a panic, and a refusal
        /// never repeats the text (it may hold a password).
        #[test]
        fn any_text_parses_or_is_refused_without_echo(text in "\\PC{0,80}", password in "[a-z]{12}") {
            let url = format!("postgresql://otpd:{password}@{text}");
            if let Err(e) = DatabaseUrl::parse(&url) {
                prop_assert!(!e.0.contains(&password));
            }
            if let Err(e) = DatabaseUrl::parse(&text) {
                prop_assert!(text.len() < 4 || !e.0.contains(&text));
            }
        }
    }
}
