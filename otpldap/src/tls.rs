//! The TLS client of the directory: rustls, checking the server's
//! certificate chain against the CA file (or the system's CAs) and its
//! name against the URL's host.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::LdapError;

/// Where the system keeps the CAs it trusts (Debian's ca-certificates),
/// used when `ca_file` is not set.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The client configuration that trusts the certificates in `ca_file`
/// (PEM), or the system's when `None`.
pub(crate) fn client_config(
    ca_file: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, LdapError> {
    let path = ca_file.unwrap_or(Path::new(SYSTEM_CAS));
    let refused = |reason: String| LdapError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .map_err(|e| refused(format!("cannot read its certificates: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    let (_, unusable) = roots.add_parsable_certificates(certificates);
    if unusable > 0 {
        return Err(refused(format!(
            "{unusable} of its certificates cannot be used as a CA"
        )));
    }
    if roots.is_empty() {
        return Err(refused("holds no certificate".to_owned()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| refused(format!("TLS set-up failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
