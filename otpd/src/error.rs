//! Why a listener cannot start. Each message is a sentence for the
//! operator that names the key, address or file at fault; the error below
//! stays reachable as the source.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A listener that cannot be bound as configured.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// `[http].listen` cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Http { addr: SocketAddr, source: io::Error },
    /// `[http].tls_cert` and `tls_key` do not make a TLS configuration.
    #[error("cannot load the TLS certificate {cert} and key {key}: {source}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        source: TlsError,
    },
    /// `[metrics].listen` cannot be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Metrics { addr: SocketAddr, source: io::Error },
    /// `[radius].listen` cannot be bound.
    #[error("cannot listen for RADIUS on {addr}: {source}")]
    Radius { addr: SocketAddr, source: io::Error },
    /// `[radius].radsec_listen` cannot be bound.
    #[error("cannot listen for RadSec on {addr}: {source}")]
    Radsec { addr: SocketAddr, source: io::Error },
    /// `[radius].radsec_cert` and `radsec_key` do not make a TLS
    /// configuration.
    #[error("cannot load the RadSec certificate {cert} and key {key}: {source}")]
    RadsecCertificate {
        cert: PathBuf,
        key: PathBuf,
        source: TlsError,
    },
    /// `[radius].radsec_ca` holds no usable CA certificate.
    #[error("cannot load the RadSec client CA {path}: {source}")]
    RadsecCa { path: PathBuf, source: TlsError },
    /// `[radius].accounting_listen` cannot be bound.
    #[error("cannot listen for RADIUS accounting on {addr}: {source}")]
    RadiusAccounting { addr: SocketAddr, source: io::Error },
    /// A `[[radius.client]]` has neither `secret` nor `secret_file`.
    #[error("radius.client {client:?} has no secret")]
    NoSecret { client: String },
    /// A `[[radius.client]]` secret is empty.
    #[error("radius.client {client:?}: the secret is empty")]
    EmptySecret { client: String },
    /// A `[[radius.client]]` `secret_file` cannot be read.
    #[error("radius.client {client:?}: cannot read secret_file {path}: {source}")]
    SecretFile {
        client: String,
        path: PathBuf,
        source: io::Error,
    },
    /// A `[[radius.client]]` `secret_file` holds nothing but line ends.
    #[error("radius.client {client:?}: secret_file {path} is empty")]
    EmptySecretFile { client: String, path: PathBuf },
    /// `[ldap]`, the RADIUS first factor, cannot be loaded (its CA or
    /// password file).
    #[error("cannot load the directory of radius.first_factor: {0}")]
    Directory(#[from] otpldap::LdapError),
}

/// What is wrong with the TLS certificate and key files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read, or is not PEM.
    #[error(transparent)]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// The certificate file holds no certificate.
    #[error("no certificate in the file")]
    NoCertificate,
    /// A CA file holds no certificate a client's chain could end in.
    #[error("no usable CA certificate in the file")]
    NoCa,
    /// The CA certificates do not make a verifier of client certificates.
    #[error(transparent)]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// The certificate and key do not make a configuration (a key that
    /// does not match, say).
    #[error(transparent)]
    Config(#[from] rustls::Error),
}
