//! The HTTP(S) listener: the activation page and its JSON API.
//!
//! Routes:
//! - `GET /setup?sid=&uid=&lang=` the activation form, IDs prefilled;
//! - `POST /setup` (form) delivers the token page, `POST /setup/confirm`
//!   (form) takes the first code;
//! - `POST /api/v1/activate`, `POST /api/v1/confirm` the same as JSON;
//! - `GET /healthz` answers `ok`.
//!
//! Activation and confirmation requests, page and API alike, count towards
//! a per-address limit (`[http].rate_limit_per_minute`, module `rate`),
//! by the client address that a trusted reverse proxy names (module
//! `forwarded`) or else the peer's;
//! both run the one enrolment workflow: the JSON API in `api`, the pages in
//! `pages` (rendered by `render`).
//!
//! Connections are bounded so that no client can hold otpd's descriptors,
//! which the PAM socket and RADIUS need as well: at most half the open
//! files limit (and never more than 1,024) are served at once, further ones
//! wait in the listen queue; a connection is closed when it has no request
//! in progress for 10 seconds (from its acceptance, TLS handshake included,
//! or from the end of its last request); a request body must arrive within
//! 10 seconds; HTTP/2 connections are pinged; and every connection is asked
//! to close after 5 minutes.

mod api;
mod forwarded;
mod pages;
mod rate;
mod render;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use nix::sys::resource::{getrlimit, Resource};
use otpcore::config::HttpConfig;
use otpstore::Channel;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::accept::accept_bounded;
use crate::daemon::{unix_now, Daemon, Decision, Shutdown};
use crate::enrolment::{Workflow, UNKNOWN_USER};
use crate::error::{ListenError, TlsError};
use rate::{RateLimiter, Verdict};

pub use crate::enrolment::PasswordChecks;

/// Largest request body accepted, form or JSON.
pub const MAX_BODY: usize = 4096;
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// How long connections may take to finish when otpd stops, or when they
/// have been asked to close for their age.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a connection may go without a request in progress: from its
/// acceptance (TLS handshake included) to its first complete request
/// head, and from the end of one request to the head of the next.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request body may take to arrive, all of it.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once, whatever the open files limit.
const MAX_CONNECTIONS: usize = 1024;
/// A connection is asked to close (and given [`SHUTDOWN_GRACE`]) this long
/// after it was accepted, however busy it is.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);
/// HTTP/2: a PING this often, and the connection closed when the answer
/// takes longer than [`H2_PING_TIMEOUT`].
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2: requests in progress on one connection.
const H2_MAX_STREAMS: u32 = 16;
/// HTTP/2: the largest request head, as HTTP/1 allows.
const H2_MAX_HEADER_LIST: u32 = 16 * 1024;
/// Connections the kernel holds for otpd until it accepts them (it caps
/// the number at `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 1024;

/// An HTTP or HTTPS listener on an already-bound socket.
pub struct HttpListener {
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    addr: SocketAddr,
    max_connections: usize,
}

impl HttpListener {
    /// Loads the TLS certificate and key (when configured) and binds
    /// `[http].listen`.
    pub async fn bind(config: &HttpConfig) -> Result<HttpListener, ListenError> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                Some(tls_config(cert, key).map_err(|source| ListenError::Tls {
                    cert: cert.clone(),
                    key: key.clone(),
                    source,
                })?)
            }
            _ => None,
        };
        let fail = |source| ListenError::Http {
            addr: config.listen,
            source,
        };
        let listener = listen(config.listen).map_err(fail)?;
        HttpListener::from_std(listener, tls).map_err(fail)
    }

    /// Wraps a socket that someone else bound (tests, socket activation).
    pub fn from_std(
        listener: std::net::TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<HttpListener> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let open_files = match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, _)) => soft,
            Err(e) => {
                log::warn!("http: cannot read the open files limit ({e}); assuming 1024");
                1024
            }
        };
        let max_connections = connection_cap(open_files);
        log::info!(
            "http: at most {max_connections} connections at once (open files limit {open_files})"
        );
        Ok(HttpListener {
            listener,
            tls,
            addr,
            max_connections,
        })
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Serves until `shutdown`, then lets requests in flight finish (for
    /// 10 seconds at most).
    pub async fn serve(self, daemon: Arc<Daemon>, shutdown: Shutdown) -> io::Result<()> {
        let server = Server::new(router(daemon), self.tls);
        serve_with(
            "http",
            self.listener,
            server,
            self.max_connections,
            shutdown,
        )
        .await
    }
}

/// Serves `router` over plain HTTP on `listener` with the limits of the
/// activation listener, `max_connections` connections at once, until
/// `shutdown`; `name` names the listener in the log.
pub(crate) async fn serve_plain(
    name: &'static str,
    listener: std::net::TcpListener,
    router: Router,
    max_connections: usize,
    shutdown: Shutdown,
) -> io::Result<()> {
    serve_with(
        name,
        listener,
        Server::new(router, None),
        max_connections,
        shutdown,
    )
    .await
}

/// Serves `server` on `listener` until `shutdown`, then lets requests in
/// flight finish (for 10 seconds at most).
async fn serve_with(
    name: &'static str,
    listener: std::net::TcpListener,
    server: Server,
    max_connections: usize,
    shutdown: Shutdown,
) -> io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let server = Arc::new(server);
    // Each connection holds a slot until it ends: waiting for a slot
    // leaves further connections in the listen queue, where they cost
    // otpd no descriptor.
    let slots = Arc::new(Semaphore::new(max_connections));
    let stop = pin!(shutdown.clone().wait());
    accept_bounded(name, &listener, &slots, stop, |(stream, peer), slot| {
        let server = Arc::clone(&server);
        tokio::spawn(server.connection(stream, peer, shutdown.clone(), slot));
    })
    .await;
    drop(listener);
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let grace = SHUTDOWN_GRACE + Duration::from_secs(1);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        log::warn!("{name}: connections still open after {grace:?} are dropped");
    }
    Ok(())
}

/// Binds `addr` with room for [`LISTEN_BACKLOG`] waiting connections.
pub(crate) fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// HTTP connections served at once for an open files limit of
/// `open_files`: half of it, so that the other half stays for the PAM
/// socket, RADIUS, the database and the logs; at most [`MAX_CONNECTIONS`].
fn connection_cap(open_files: u64) -> usize {
    usize::try_from(open_files / 2)
        .unwrap_or(usize::MAX)
        .clamp(1, MAX_CONNECTIONS)
}

/// A certificate chain and its key, read from PEM files.
pub(crate) fn certificate_and_key(
    cert: &Path,
    key: &Path,
) -> Result<
    (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    TlsError,
> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_file(key)?;
    Ok((chain, key))
}

/// The TLS configuration from PEM files: the certificate chain and its key.
fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (chain, key) = certificate_and_key(cert, key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What every connection shares: the routes, the HTTP/1 and HTTP/2
/// settings and the TLS acceptor.
struct Server {
    router: Router,
    http: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
}

/// What a connection's watchdog knows of its requests.
#[derive(Clone, Copy)]
struct Activity {
    /// Requests being handled now.
    in_flight: usize,
    /// When the connection was accepted, or its last request ended.
    idle_since: Instant,
}

/// A request being handled: counted in [`Activity`] until dropped.
struct InFlight(Arc<watch::Sender<Activity>>);

impl InFlight {
    fn begin(activity: &Arc<watch::Sender<Activity>>) -> InFlight {
        activity.send_modify(|a| a.in_flight += 1);
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|a| {
            a.in_flight = a.in_flight.saturating_sub(1);
            a.idle_since = Instant::now();
        });
    }
}

impl Server {
    fn new(router: Router, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        http.http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(H2_MAX_HEADER_LIST);
        Server {
            router,
            http,
            tls: tls.map(TlsAcceptor::from),
        }
    }

    /// Serves one accepted connection; `_slot` is given back at the end.
    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: Shutdown,
        _slot: OwnedSemaphorePermit,
    ) {
        let accepted = Instant::now();
        let Some(tls) = &self.tls else {
            return self.serve_io(stream, peer, accepted, shutdown).await;
        };
        match tokio::time::timeout_at((accepted + HEADER_TIMEOUT).into(), tls.accept(stream)).await
        {
            Ok(Ok(stream)) => self.serve_io(stream, peer, accepted, shutdown).await,
            Ok(Err(e)) => log::debug!("http: TLS handshake with {peer} failed: {e}"),
            Err(_) => log::debug!("http: TLS handshake with {peer} timed out"),
        }
    }

    /// HTTP/1 or HTTP/2 on `io`, watched: closed when no request is in
    /// progress for [`HEADER_TIMEOUT`], asked to close at
    /// [`MAX_CONNECTION_AGE`] or when otpd stops, and dropped
    /// [`SHUTDOWN_GRACE`] after being asked.
    async fn serve_io<I>(&self, io: I, peer: SocketAddr, accepted: Instant, shutdown: Shutdown)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(watch::Sender::new(Activity {
            in_flight: 0,
            idle_since: accepted,
        }));
        let mut changes = activity.subscribe();
        let app = TowerToHyperService::new(self.router.clone());
        let requests = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let in_flight = InFlight::begin(&requests);
            let answer = app.call(request);
            async move {
                let answer = answer.await;
                drop(in_flight);
                answer
            }
        });
        let mut connection = pin!(self.http.serve_connection(TokioIo::new(io), service));
        let mut stop = pin!(shutdown.wait());
        let too_old = accepted + MAX_CONNECTION_AGE;
        // When the connection, asked to close, is dropped.
        let mut closing: Option<Instant> = None;
        loop {
            let now = *changes.borrow_and_update();
            let idle_until = (now.in_flight == 0).then(|| now.idle_since + HEADER_TIMEOUT);
            let wake = closing
                .unwrap_or(too_old)
                .min(idle_until.unwrap_or(too_old));
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        log::debug!("http: connection from {peer}: {e}");
                    }
                    return;
                }
                Ok(()) = changes.changed() => {}
                () = &mut stop, if closing.is_none() => {
                    connection.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + SHUTDOWN_GRACE);
                }
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    if idle_until.is_some_and(|t| now >= t) {
                        log::debug!("http: closing the connection from {peer}: no request for {HEADER_TIMEOUT:?}");
                        return;
                    }
                    if closing.is_some_and(|t| now >= t) {
                        log::debug!("http: dropping the connection from {peer}: it did not close in time");
                        return;
                    }
                    if closing.is_none() && now >= too_old {
                        connection.as_mut().graceful_shutdown();
                        closing = Some(now + SHUTDOWN_GRACE);
                    }
                }
            }
        }
    }
}

/// Reads the request body within [`BODY_TIMEOUT`], [`MAX_BODY`] + 1 bytes
/// of it at most, and hands the handlers what it read (so that their
/// [`DefaultBodyLimit`] still refuses a larger body). A body that takes
/// longer is answered with 408 and, on HTTP/1, the connection closed.
async fn read_body_in_time(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let api = parts.uri.path().starts_with("/api/");
    let refuse = |status: StatusCode, message: &str| {
        let mut response = if api {
            api::json_error(status, message)
        } else {
            (status, message.to_owned()).into_response()
        };
        if parts.version < Version::HTTP_2 {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    };
    match tokio::time::timeout(BODY_TIMEOUT, read_at_most(body, MAX_BODY + 1)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => {
            log::debug!("http: cannot read a request body: {e}");
            refuse(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            )
        }
        Err(_) => refuse(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        ),
    }
}

/// The first `limit` bytes of `body`.
async fn read_at_most(mut body: Body, limit: usize) -> Result<Bytes, axum::Error> {
    let mut read = Vec::new();
    while read.len() < limit {
        let Some(frame) = body.frame().await else {
            break;
        };
        if let Ok(data) = frame?.into_data() {
            let room = limit - read.len();
            read.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Ok(Bytes::from(read))
}

/// State shared by the HTTP handlers.
struct Http {
    daemon: Arc<Daemon>,
    limiter: RateLimiter,
    enrolment: Workflow,
    /// Path of `public_url` (e.g. `/otp` behind a proxy), for form actions.
    base: String,
}

type Shared = Arc<Http>;

/// The routes, over `daemon`.
pub fn router(daemon: Arc<Daemon>) -> Router {
    router_with(daemon, PasswordChecks::default())
}

/// The routes, over `daemon`, with `checks` bounding the activation
/// password checks that run at once.
pub fn router_with(daemon: Arc<Daemon>, checks: PasswordChecks) -> Router {
    let http = daemon.config.http.as_ref();
    let limit = http.map(|h| h.rate_limit_per_minute).unwrap_or(20);
    let base = base_path(http.map(|h| h.public_url.as_str()).unwrap_or(""));
    let trusted: Arc<[otpcore::config::Cidr]> = http
        .map(|h| h.trusted_proxies.as_slice())
        .unwrap_or(&[])
        .into();
    let state = Arc::new(Http {
        limiter: RateLimiter::new(limit, RATE_WINDOW),
        enrolment: Workflow::new(Arc::clone(&daemon), checks),
        daemon,
        base,
    });
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/setup", get(pages::setup_page).post(pages::activate))
        .route("/setup/confirm", post(pages::confirm))
        .route("/api/v1/activate", post(api::activate))
        .route("/api/v1/confirm", post(api::confirm))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(read_body_in_time))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state);
    if trusted.is_empty() {
        routes
    } else {
        routes.layer(axum::middleware::from_fn_with_state(
            trusted,
            forwarded::from_trusted_proxy,
        ))
    }
}

async fn healthz() -> &'static str {
    "ok"
}

/// The path part of a base URL: `https://h/otp` → `/otp`, `https://h` → ``.
fn base_path(public_url: &str) -> String {
    let rest = public_url
        .strip_prefix("https://")
        .or_else(|| public_url.strip_prefix("http://"))
        .unwrap_or("");
    rest.find('/')
        .map(|i| rest[i..].trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

/// Headers on every answer: nothing is cached (the token page and the
/// activation response carry the secret), nothing is framed or fetched.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

impl Http {
    /// Applies the rate limit; `false` means answer 429.
    fn allow(&self, peer: IpAddr, what: &str) -> bool {
        match self.limiter.check(peer, Instant::now()) {
            Verdict::Allowed => true,
            Verdict::Denied { first } => {
                log::debug!("http: rate limit for {peer} ({what})");
                if first {
                    let daemon = Arc::clone(&self.daemon);
                    let reason = format!("{what} refused: rate limit exceeded");
                    let peer = peer.to_string();
                    tokio::task::spawn_blocking(move || {
                        daemon.record(&Decision {
                            channel: Channel::Http,
                            peer: &peer,
                            user: UNKNOWN_USER,
                            ok: false,
                            reason: &reason,
                            time: unix_now(),
                        });
                    });
                }
                false
            }
        }
    }
}

/// The client's address; IPv4-mapped IPv6 as plain IPv4.
fn client_ip(addr: SocketAddr) -> IpAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap_keeps_half_the_descriptors() {
        assert_eq!(connection_cap(1024), 512);
        assert_eq!(connection_cap(4096), MAX_CONNECTIONS);
        assert_eq!(connection_cap(u64::MAX), MAX_CONNECTIONS);
        assert_eq!(connection_cap(1), 1);
    }
}
