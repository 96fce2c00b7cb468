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
//! a per-address limit (`[http].rate_limit_per_minute`). Store work runs on
//! blocking threads; the handlers read the clock and pass it down.
//!
//! Connections are bounded so that no client can hold otpd's descriptors,
//! which the PAM socket and RADIUS need as well: at most half the open
//! files limit (and never more than [`MAX_CONNECTIONS`]) are served at once,
//! further ones wait in the listen queue; a connection is closed when it has
//! no request in progress for [`HEADER_TIMEOUT`] (from its acceptance, TLS
//! handshake included, or from the end of its last request); a request body
//! must arrive within [`BODY_TIMEOUT`]; HTTP/2 connections are pinged; and
//! every connection is asked to close after [`MAX_CONNECTION_AGE`].

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, FormRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use nix::sys::resource::{getrlimit, Resource};
use otpcore::config::{HttpConfig, Language};
use otpcore::enrol::{self, ActivationRefusal, State as EnrolState, WrongPassword};
use otpcore::rules::UserId;
use otpcore::totp::{self, TokenParams};
use otpstore::{ActivationHash, AuditResult, Channel, Enrolment, FirstCode, Store};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use crate::accept::accept_bounded;
use crate::page::{self, Ctx, Message, Notice, TokenView};
use crate::{unix_now, Daemon, Decision, Shutdown};

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
/// Activation password checks (argon2id, 19 MiB of memory each) that run
/// at once; further requests wait for one.
const CHECKS_AT_ONCE: usize = 2;
/// How long an activation request waits for a check before it is refused
/// with 503.
const CHECK_WAIT: Duration = Duration::from_secs(10);
/// The audit trail's user for requests whose IDs match no enrolment.
const UNKNOWN_USER: &str = "-";
/// The same words for unknown IDs and a wrong password.
const WRONG_CREDENTIALS: &str = "wrong service ID, user ID or activation password";
const WRONG_CODE: &str = "the code does not match";

/// An HTTP or HTTPS listener on an already-bound socket.
pub struct HttpListener {
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    addr: SocketAddr,
    max_connections: usize,
}

impl HttpListener {
    /// Loads the TLS certificate and key (when configured) and binds
    /// `[http].listen`. Errors are sentences for the operator.
    pub async fn bind(config: &HttpConfig) -> Result<HttpListener, String> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
            _ => None,
        };
        let fail = |e: io::Error| format!("cannot listen on {}: {e}", config.listen);
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
    /// [`SHUTDOWN_GRACE`] at most).
    pub async fn serve(self, daemon: Arc<Daemon>, shutdown: Shutdown) -> io::Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        let server = Arc::new(Server::new(router(daemon), self.tls));
        // Each connection holds a slot until it ends: waiting for a slot
        // leaves further connections in the listen queue, where they cost
        // otpd no descriptor.
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let stop = pin!(shutdown.clone().wait());
        accept_bounded("http", &listener, &slots, stop, |(stream, peer), slot| {
            let server = Arc::clone(&server);
            tokio::spawn(server.connection(stream, peer, shutdown.clone(), slot));
        })
        .await;
        drop(listener);
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let grace = SHUTDOWN_GRACE + Duration::from_secs(1);
        if tokio::time::timeout(grace, slots.acquire_many(all))
            .await
            .is_err()
        {
            log::warn!("http: connections still open after {grace:?} are dropped");
        }
        Ok(())
    }
}

/// Binds `addr` with room for [`LISTEN_BACKLOG`] waiting connections.
fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
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

/// The TLS configuration from PEM files: the certificate chain and its key.
fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let fail = |e: &dyn std::fmt::Display| {
        format!(
            "cannot load the TLS certificate {} and key {}: {e}",
            cert.display(),
            key.display()
        )
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| fail(&e))?;
    if chain.is_empty() {
        return Err(fail(&"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| fail(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| fail(&e))?;
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
            json_error(status, message)
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
    checks: PasswordChecks,
    /// Path of `public_url` (e.g. `/otp` behind a proxy), for form actions.
    base: String,
}

type Shared = Arc<Http>;

/// The activation password checks that may run at once, and how long a
/// request waits for one. Bounding them bounds the memory and CPU that
/// activation requests can take, however many arrive.
struct PasswordChecks {
    slots: Arc<Semaphore>,
    wait: Duration,
}

impl PasswordChecks {
    fn new(at_once: usize, wait: Duration) -> PasswordChecks {
        PasswordChecks {
            slots: Arc::new(Semaphore::new(at_once)),
            wait,
        }
    }

    /// A slot for one check; `None` when none came free in time.
    async fn take(&self) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(self.wait, Arc::clone(&self.slots).acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

/// The routes, over `daemon`.
pub fn router(daemon: Arc<Daemon>) -> Router {
    router_with(daemon, PasswordChecks::new(CHECKS_AT_ONCE, CHECK_WAIT))
}

fn router_with(daemon: Arc<Daemon>, checks: PasswordChecks) -> Router {
    let http = daemon.config.http.as_ref();
    let limit = http.map(|h| h.rate_limit_per_minute).unwrap_or(20);
    let base = base_path(http.map(|h| h.public_url.as_str()).unwrap_or(""));
    let state = Arc::new(Http {
        daemon,
        limiter: RateLimiter::new(limit, RATE_WINDOW),
        checks,
        base,
    });
    Router::new()
        .route("/healthz", get(healthz))
        .route("/setup", get(setup_page).post(setup_submit))
        .route("/setup/confirm", post(confirm_submit))
        .route("/api/v1/activate", post(api_activate))
        .route("/api/v1/confirm", post(api_confirm))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(read_body_in_time))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
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

// ---------------------------------------------------------------------------
// Rate limit

/// Counts requests per client address (IPv6 per /64) over a sliding window.
struct RateLimiter {
    limit: usize,
    window: Duration,
    state: Mutex<Buckets>,
}

struct Buckets {
    by_key: HashMap<IpAddr, Bucket>,
    prune_at: usize,
}

#[derive(Default)]
struct Bucket {
    times: VecDeque<Instant>,
    denied: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Allowed,
    /// Over the limit; `first` for the first refusal since the last allowed
    /// request, which is the one worth an audit line.
    Denied {
        first: bool,
    },
}

impl RateLimiter {
    fn new(limit: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            window,
            state: Mutex::new(Buckets {
                by_key: HashMap::new(),
                prune_at: 4096,
            }),
        }
    }

    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        }
    }

    fn check(&self, ip: IpAddr, now: Instant) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.by_key.len() >= state.prune_at {
            let window = self.window;
            state.by_key.retain(|_, b| {
                b.times
                    .back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < window)
            });
            state.prune_at = (state.by_key.len() * 2).max(4096);
        }
        let bucket = state.by_key.entry(Self::key(ip)).or_default();
        while bucket
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            bucket.times.pop_front();
        }
        if bucket.times.len() >= self.limit {
            let first = !bucket.denied;
            bucket.denied = true;
            return Verdict::Denied { first };
        }
        bucket.denied = false;
        bucket.times.push_back(now);
        Verdict::Allowed
    }
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

    fn default_language(&self) -> Language {
        self.daemon
            .config
            .mail
            .as_ref()
            .map(|m| m.language)
            .unwrap_or(Language::En)
    }

    /// An explicit `lang` (query or form) wins, then Accept-Language, then
    /// `[mail].language`, then English.
    fn language(&self, explicit: &str, headers: &HeaderMap) -> Language {
        Language::parse(explicit)
            .or_else(|| {
                headers
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(accept_language)
            })
            .unwrap_or_else(|| self.default_language())
    }

    fn ctx(&self, lang: Language) -> Ctx<'_> {
        Ctx {
            lang,
            issuer: &self.daemon.config.issuer,
            base: &self.base,
        }
    }
}

/// The preferred of Japanese and English in an Accept-Language header.
fn accept_language(value: &str) -> Option<Language> {
    let mut best: Option<(f32, Language)> = None;
    for item in value.split(',') {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .map(|q| q.trim().parse::<f32>().unwrap_or(0.0))
            .unwrap_or(1.0);
        if q.is_nan() || q <= 0.0 {
            continue;
        }
        let lang = match tag.split('-').next().unwrap_or("") {
            "ja" => Language::Ja,
            "en" => Language::En,
            _ => continue,
        };
        match best {
            Some((b, _)) if b >= q => {}
            _ => best = Some((q, lang)),
        }
    }
    best.map(|(_, lang)| lang)
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

// ---------------------------------------------------------------------------
// Decisions (run on blocking threads: store calls block)

/// One activation or confirmation request, as typed.
struct Attempt {
    service_id: String,
    user_id: String,
    /// The activation password or the first code.
    proof: Zeroizing<String>,
    peer: String,
    now: u64,
}

impl Attempt {
    fn new(http: &Http, service_id: &str, user_id: String, proof: String, peer: IpAddr) -> Attempt {
        // Phones like to capitalise; the service ID is the deployment's own.
        let typed = service_id.trim();
        let own = &http.daemon.config.service_id;
        let service_id = if typed.eq_ignore_ascii_case(own) {
            own.clone()
        } else {
            typed.to_owned()
        };
        Attempt {
            service_id,
            user_id,
            proof: Zeroizing::new(proof),
            peer: peer.to_string(),
            now: unix_now(),
        }
    }

    fn record(&self, daemon: &Daemon, user: &str, ok: bool, reason: &str) {
        daemon.record(&Decision {
            channel: Channel::Http,
            peer: &self.peer,
            user,
            ok,
            reason,
            time: self.now,
        });
    }

    /// The enrolment the IDs name. `Err(())` after a store failure.
    fn lookup(&self, store: &Store) -> Result<Option<Enrolment>, ()> {
        let Some(user_id) = UserId::parse(&self.user_id) else {
            return Ok(None);
        };
        store.by_ids(&self.service_id, &user_id).map_err(|e| {
            log::error!("http: store lookup failed: {e}");
        })
    }
}

/// The token, delivered once.
struct Delivered {
    otpauth_uri: Zeroizing<String>,
    secret: Zeroizing<String>,
    params: TokenParams,
    account: String,
    service_id: String,
    user_id: UserId,
}

enum Activation {
    Delivered(Box<Delivered>),
    /// No enrolment under these IDs.
    Unknown,
    /// Wrong password; 0 tries left means it was just invalidated.
    WrongPassword {
        attempts_left: u32,
    },
    Expired,
    /// Not `issued` any more.
    Gone(EnrolState),
    /// No password check came free in time, or the tries left are all
    /// being checked: try again later.
    Busy,
    Internal,
}

impl Activation {
    /// Why an enrolment in this state cannot be activated, for the audit
    /// trail; `None` for answers that are not about its state.
    fn state_reason(&self) -> Option<String> {
        match self {
            Activation::Expired => Some("setup link expired".to_owned()),
            Activation::Gone(state) => Some(format!("enrolment is {}", state.as_str())),
            Activation::Unknown => Some("enrolment withdrawn".to_owned()),
            _ => None,
        }
    }
}

/// The state an enrolment is in now, for answers after a lost race.
fn current_state(store: &Store, e: &Enrolment, now: u64) -> Activation {
    match store.by_ids(&e.service_id, &e.user_id) {
        Ok(Some(e)) if e.state == EnrolState::Issued && now >= e.expires_at => Activation::Expired,
        Ok(Some(e)) => Activation::Gone(e.state),
        Ok(None) => Activation::Unknown,
        Err(err) => {
            log::error!("http: store lookup failed: {err}");
            Activation::Internal
        }
    }
}

/// Records that `e` cannot be activated, as `answer` says, and returns
/// `answer`; `prefix` says what was tried.
fn refuse(
    daemon: &Daemon,
    a: &Attempt,
    e: &Enrolment,
    prefix: &str,
    answer: Activation,
) -> Activation {
    if let Some(why) = answer.state_reason() {
        a.record(daemon, &e.user, false, &format!("{prefix}{why}"));
    }
    answer
}

/// Activation, first step: the enrolment the IDs
/// name, if it may be activated. `Err` is the answer when it may not.
fn admit_activation(daemon: &Daemon, store: &Store, a: &Attempt) -> Result<Enrolment, Activation> {
    let e = match a.lookup(store) {
        Ok(Some(e)) => e,
        Ok(None) => {
            a.record(
                daemon,
                UNKNOWN_USER,
                false,
                "activation refused: unknown service ID or user ID",
            );
            return Err(Activation::Unknown);
        }
        Err(()) => return Err(Activation::Internal),
    };
    let refused = match enrol::activation_allowed(e.state, e.expires_at, a.now) {
        Ok(()) => return Ok(e),
        Err(ActivationRefusal::Expired) => Activation::Expired,
        Err(ActivationRefusal::Gone) => Activation::Gone(e.state),
    };
    Err(refuse(daemon, a, &e, "activation refused: ", refused))
}

/// Second step: takes one of the
/// `activation_attempts` tries before the password is checked, so that
/// requests at the same time cannot check more passwords than there are
/// tries. The hash to check against, or the answer when no try is left.
fn reserve_attempt(
    daemon: &Daemon,
    store: &Store,
    a: &Attempt,
    e: &Enrolment,
) -> Result<ActivationHash, Activation> {
    let limit = daemon.config.policy.activation_attempts;
    match store.reserve_activation_attempt(e.id, limit, a.now) {
        Ok(Some(hash)) => Ok(hash),
        Ok(None) => Err(match current_state(store, e, a.now) {
            // Still waiting, but every try left is being checked: those
            // checks decide.
            Activation::Gone(EnrolState::Issued) => {
                a.record(
                    daemon,
                    &e.user,
                    false,
                    "activation refused: the tries left are all being checked",
                );
                Activation::Busy
            }
            other => refuse(daemon, a, e, "activation refused: ", other),
        }),
        Err(err) => {
            log::error!("http: cannot take an activation try: {err}");
            Err(Activation::Internal)
        }
    }
}

/// Activation, last step, after the slow
/// password check: a wrong password leaves its try counted (and
/// invalidates the enrolment at the limit); a right one hands the secret
/// out, once, and gives its try back.
fn finish_activation(
    daemon: &Daemon,
    store: &Store,
    a: &Attempt,
    e: Enrolment,
    right: bool,
) -> Activation {
    if !right {
        let limit = daemon.config.policy.activation_attempts;
        return match store.activation_failed(e.id, limit) {
            Ok(Some(f)) => {
                let left = match enrol::after_wrong_password(f.failures, limit) {
                    _ if f.invalidated => 0,
                    WrongPassword::AttemptsLeft(n) => n,
                    WrongPassword::Invalidated => 0,
                };
                let reason = if left == 0 {
                    format!("activation refused: wrong activation password ({} wrong); enrolment invalidated", f.failures)
                } else {
                    format!("activation refused: wrong activation password ({left} tries left)")
                };
                a.record(daemon, &e.user, false, &reason);
                Activation::WrongPassword {
                    attempts_left: left,
                }
            }
            // Invalidated by a try checked at the same time, activated or
            // withdrawn while this password was checked.
            Ok(None) => {
                let now = current_state(store, &e, a.now);
                let prefix = "activation refused: wrong activation password; ";
                match refuse(daemon, a, &e, prefix, now) {
                    Activation::Gone(EnrolState::Invalidated) => {
                        Activation::WrongPassword { attempts_left: 0 }
                    }
                    other => other,
                }
            }
            Err(err) => {
                log::error!("http: cannot count a wrong activation password: {err}");
                Activation::Internal
            }
        };
    }
    let secret = match store.activate(e.id, a.now) {
        Ok(Some(secret)) => secret,
        // Invalidated by another try, expired or withdrawn meanwhile.
        Ok(None) => {
            let now = current_state(store, &e, a.now);
            let prefix = "activation refused: right activation password, but ";
            return refuse(daemon, a, &e, prefix, now);
        }
        Err(err) => {
            log::error!("http: activation failed: {err}");
            return Activation::Internal;
        }
    };
    a.record(
        daemon,
        &e.user,
        true,
        "activated: token delivered to the phone",
    );
    Activation::Delivered(Box::new(Delivered {
        otpauth_uri: totp::otpauth_uri(&daemon.config.issuer, &e.user, &secret, &e.params),
        secret: totp::base32(&secret),
        params: e.params,
        account: e.user,
        service_id: e.service_id,
        user_id: e.user_id,
    }))
}

enum Confirmed {
    Active {
        period: u64,
        adapted: bool,
    },
    /// Wrong code, or IDs that name no enrolment.
    Wrong,
    /// Not `activated`.
    Gone(EnrolState),
    Internal,
}

/// Checks the first code, adapting to 30-second apps.
fn confirm(daemon: &Daemon, store: &Store, a: &Attempt) -> Confirmed {
    let e = match a.lookup(store) {
        Ok(Some(e)) => e,
        Ok(None) => {
            a.record(
                daemon,
                UNKNOWN_USER,
                false,
                "confirmation refused: unknown service ID or user ID",
            );
            return Confirmed::Wrong;
        }
        Err(()) => return Confirmed::Internal,
    };
    if e.state != EnrolState::Activated {
        let reason = format!("confirmation refused: enrolment is {}", e.state.as_str());
        a.record(daemon, &e.user, false, &reason);
        return Confirmed::Gone(e.state);
    }
    let checked = match store.confirm_token(&e, &a.proof, a.now, &daemon.config.token) {
        Ok(checked) => checked,
        Err(err) => {
            log::error!("http: confirmation failed: {err}");
            return Confirmed::Internal;
        }
    };
    if let Some((result, reason)) = &checked.audit {
        a.record(daemon, &e.user, *result == AuditResult::Ok, reason);
    }
    match checked.outcome {
        FirstCode::Active { period, adapted } => Confirmed::Active { period, adapted },
        FirstCode::Wrong => Confirmed::Wrong,
        FirstCode::NotActivated => match current_state(store, &e, a.now) {
            Activation::Internal => Confirmed::Internal,
            Activation::Gone(state) => Confirmed::Gone(state),
            _ => Confirmed::Wrong,
        },
    }
}

/// Runs `f` with the store on a blocking thread: store calls block.
async fn with_store<T, F>(daemon: &Arc<Daemon>, f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(&Daemon, &Store) -> T + Send + 'static,
{
    let daemon = Arc::clone(daemon);
    match tokio::task::spawn_blocking(move || f(&daemon, daemon.store())).await {
        Ok(value) => Some(value),
        Err(e) => {
            log::error!("http: store task failed: {e}");
            None
        }
    }
}

/// Activation in three steps: admission; then, with one of the few
/// password check slots, a try taken, the slow argon2id check and the
/// outcome on a blocking thread, so that the check holds neither the
/// store nor an async worker.
async fn run_activation(http: &Http, attempt: Attempt) -> Activation {
    let attempt = Arc::new(attempt);
    let admitted = {
        let a = Arc::clone(&attempt);
        with_store(&http.daemon, move |d, s| admit_activation(d, s, &a)).await
    };
    let e = match admitted {
        Some(Ok(e)) => e,
        Some(Err(answer)) => return answer,
        None => return Activation::Internal,
    };
    let Some(slot) = http.checks.take().await else {
        let a = Arc::clone(&attempt);
        let reason = "activation refused: too many password checks at once";
        with_store(&http.daemon, move |d, _| {
            a.record(d, &e.user, false, reason)
        })
        .await;
        return Activation::Busy;
    };
    let daemon = Arc::clone(&http.daemon);
    let task = tokio::task::spawn_blocking(move || {
        // The slot stays taken until the check ends, even when the client
        // gives up meanwhile.
        let _slot = slot;
        let hash = match reserve_attempt(&daemon, daemon.store(), &attempt, &e) {
            Ok(hash) => hash,
            Err(answer) => return answer,
        };
        match hash.verify(&attempt.proof) {
            Ok(right) => finish_activation(&daemon, daemon.store(), &attempt, e, right),
            Err(err) => {
                log::error!("http: activation password check failed: {err}");
                Activation::Internal
            }
        }
    });
    task.await.unwrap_or_else(|e| {
        log::error!("http: activation task failed: {e}");
        Activation::Internal
    })
}

async fn run_confirmation(http: &Http, attempt: Attempt) -> Confirmed {
    with_store(&http.daemon, move |d, s| confirm(d, s, &attempt))
        .await
        .unwrap_or(Confirmed::Internal)
}

// ---------------------------------------------------------------------------
// JSON API

#[derive(Deserialize)]
struct ActivateRequest {
    service_id: String,
    user_id: String,
    activation_password: String,
}

#[derive(Deserialize)]
struct ConfirmRequest {
    service_id: String,
    user_id: String,
    otp: String,
}

/// What the API says when it cannot decide (the database is unreachable,
/// say): nothing was done, and asking again later may work.
const INTERNAL: &str = "internal error: a temporary problem on the server; try again later";

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes into `T`; anything else
/// is an error message for a 400 that names what was expected (never
/// echoing the input).
fn parse_json<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    fields: &str,
) -> Result<T, String> {
    let too_large = || format!("the request body must be at most {MAX_BODY} bytes");
    let body = body.map_err(|_| too_large())?;
    if body.len() > MAX_BODY {
        return Err(too_large());
    }
    serde_json::from_slice(&body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            format!("the request must be a JSON object with the string fields {fields}")
        }
        _ => "the request body is not valid JSON in UTF-8".to_owned(),
    })
}

async fn api_activate(
    State(http): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let peer = client_ip(addr);
    if !http.allow(peer, "activation") {
        return json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests from this address; try again in a minute",
        );
    }
    let request: ActivateRequest =
        match parse_json(body, "service_id, user_id and activation_password") {
            Ok(r) => r,
            Err(message) => return json_error(StatusCode::BAD_REQUEST, &message),
        };
    let attempt = Attempt::new(
        &http,
        &request.service_id,
        request.user_id,
        request.activation_password,
        peer,
    );
    match run_activation(&http, attempt).await {
        Activation::Delivered(d) => (
            StatusCode::OK,
            Json(json!({
                "otpauth_uri": d.otpauth_uri.as_str(),
                "secret": d.secret.as_str(),
                "period": d.params.period,
                "digits": d.params.digits,
                "algorithm": d.params.algorithm.as_str(),
            })),
        )
            .into_response(),
        Activation::Unknown => json_error(StatusCode::UNAUTHORIZED, WRONG_CREDENTIALS),
        Activation::WrongPassword { attempts_left } => {
            let error = if attempts_left == 0 {
                "wrong activation password; too many wrong tries, the enrolment is invalidated and must be issued again"
            } else {
                WRONG_CREDENTIALS
            };
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error": error, "attempts_left": attempts_left })),
            )
                .into_response()
        }
        Activation::Expired => json_error(
            StatusCode::GONE,
            "the setup link has expired; the token must be issued again",
        ),
        Activation::Gone(state) => json_error(
            StatusCode::GONE,
            &format!(
                "the enrolment is {}, not waiting for activation",
                state.as_str()
            ),
        ),
        Activation::Busy => {
            let mut response = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many activation requests at once; try again in a minute",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            response
        }
        Activation::Internal => json_error(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
    }
}

async fn api_confirm(
    State(http): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let peer = client_ip(addr);
    if !http.allow(peer, "confirmation") {
        return json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests from this address; try again in a minute",
        );
    }
    let request: ConfirmRequest = match parse_json(body, "service_id, user_id and otp") {
        Ok(r) => r,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, &message),
    };
    let attempt = Attempt::new(
        &http,
        &request.service_id,
        request.user_id,
        request.otp,
        peer,
    );
    match run_confirmation(&http, attempt).await {
        Confirmed::Active { period, adapted } => (
            StatusCode::OK,
            Json(json!({ "state": "active", "period": period, "adapted": adapted })),
        )
            .into_response(),
        Confirmed::Wrong => json_error(StatusCode::UNAUTHORIZED, WRONG_CODE),
        Confirmed::Gone(state) => json_error(
            StatusCode::GONE,
            &format!(
                "the enrolment is {}, not waiting for confirmation",
                state.as_str()
            ),
        ),
        Confirmed::Internal => json_error(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
    }
}

// ---------------------------------------------------------------------------
// Pages

async fn healthz() -> &'static str {
    "ok"
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SetupQuery {
    sid: String,
    uid: String,
    lang: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ActivateForm {
    service_id: String,
    user_id: String,
    activation_password: String,
    lang: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ConfirmForm {
    service_id: String,
    user_id: String,
    otp: String,
    lang: String,
}

/// A user ID as shown: grouped when it parses, else as typed (shortened).
fn shown_user_id(typed: &str) -> String {
    UserId::parse(typed)
        .map(|u| u.to_string())
        .unwrap_or_else(|| typed.chars().take(32).collect())
}

fn shown_service_id(typed: &str) -> String {
    typed.trim().chars().take(64).collect()
}

async fn setup_page(
    State(http): State<Shared>,
    headers: HeaderMap,
    query: Result<Query<SetupQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let ctx = http.ctx(http.language(&query.lang, &headers));
    html(
        StatusCode::OK,
        page::setup_form(
            &ctx,
            &shown_service_id(&query.sid),
            &shown_user_id(&query.uid),
            None,
        ),
    )
}

/// What every form handler does first: the per-address rate limit, then
/// the form itself; a refusal is the page to answer with.
fn admitted_form<T>(
    http: &Http,
    peer: IpAddr,
    headers: &HeaderMap,
    what: &str,
    form: Result<Form<T>, FormRejection>,
) -> Result<T, Box<Response>> {
    let refuse = |status, message| {
        let lang = http.language("", headers);
        Box::new(html(status, page::message(&http.ctx(lang), message)))
    };
    if !http.allow(peer, what) {
        return Err(refuse(StatusCode::TOO_MANY_REQUESTS, Message::RateLimited));
    }
    form.map(|Form(form)| form)
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, Message::BadRequest))
}

async fn setup_submit(
    State(http): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<ActivateForm>, FormRejection>,
) -> Response {
    let peer = client_ip(addr);
    let form = match admitted_form(&http, peer, &headers, "activation", form) {
        Ok(form) => form,
        Err(refusal) => return *refusal,
    };
    let ctx = http.ctx(http.language(&form.lang, &headers));
    let sid = shown_service_id(&form.service_id);
    let uid = shown_user_id(&form.user_id);
    let password = Zeroizing::new(form.activation_password);
    if sid.is_empty() || form.user_id.trim().is_empty() || password.trim().is_empty() {
        return html(
            StatusCode::BAD_REQUEST,
            page::setup_form(&ctx, &sid, &uid, Some(Notice::MissingFields)),
        );
    }
    let attempt = Attempt::new(
        &http,
        &form.service_id,
        form.user_id,
        password.trim().to_owned(),
        peer,
    );
    let wrong = |attempts_left| {
        html(
            StatusCode::UNAUTHORIZED,
            page::setup_form(
                &ctx,
                &sid,
                &uid,
                Some(Notice::WrongPassword { attempts_left }),
            ),
        )
    };
    match run_activation(&http, attempt).await {
        Activation::Delivered(d) => {
            let user_id = d.user_id.to_string();
            let grouped = totp::grouped(&d.secret);
            let mut body = page::token(
                &ctx,
                &TokenView {
                    service_id: &d.service_id,
                    user_id: &user_id,
                    account: &d.account,
                    otpauth_uri: &d.otpauth_uri,
                    secret_grouped: &grouped,
                    period: d.params.period,
                    digits: d.params.digits,
                    algorithm: d.params.algorithm.as_str(),
                },
            );
            html(StatusCode::OK, std::mem::take(&mut *body))
        }
        Activation::Unknown => wrong(None),
        Activation::WrongPassword { attempts_left: 0 } => html(
            StatusCode::GONE,
            page::message(&ctx, Message::InvalidatedNow),
        ),
        Activation::WrongPassword { attempts_left } => wrong(Some(attempts_left)),
        Activation::Expired => html(StatusCode::GONE, page::message(&ctx, Message::Expired)),
        Activation::Gone(state) => {
            html(StatusCode::GONE, page::message(&ctx, Message::Gone(state)))
        }
        Activation::Busy => html(
            StatusCode::SERVICE_UNAVAILABLE,
            page::message(&ctx, Message::Busy),
        ),
        Activation::Internal => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            page::message(&ctx, Message::Internal),
        ),
    }
}

async fn confirm_submit(
    State(http): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<ConfirmForm>, FormRejection>,
) -> Response {
    let peer = client_ip(addr);
    let form = match admitted_form(&http, peer, &headers, "confirmation", form) {
        Ok(form) => form,
        Err(refusal) => return *refusal,
    };
    let ctx = http.ctx(http.language(&form.lang, &headers));
    let sid = shown_service_id(&form.service_id);
    let uid = shown_user_id(&form.user_id);
    let otp = Zeroizing::new(form.otp);
    if otp.trim().is_empty() || sid.is_empty() || form.user_id.trim().is_empty() {
        return html(
            StatusCode::BAD_REQUEST,
            page::confirm_form(&ctx, &sid, &uid, Notice::MissingFields),
        );
    }
    let attempt = Attempt::new(&http, &form.service_id, form.user_id, otp.to_string(), peer);
    match run_confirmation(&http, attempt).await {
        Confirmed::Active { period, adapted } => {
            html(StatusCode::OK, page::confirmed(&ctx, period, adapted))
        }
        Confirmed::Wrong => html(
            StatusCode::UNAUTHORIZED,
            page::confirm_form(&ctx, &sid, &uid, Notice::WrongCode),
        ),
        Confirmed::Gone(state) => html(StatusCode::GONE, page::message(&ctx, Message::Gone(state))),
        Confirmed::Internal => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            page::message(&ctx, Message::Internal),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use otpcore::config::Config;
    use otpstore::NewEnrolment;
    use serde_json::Value;
    use tower::ServiceExt;

    const PASSWORD: &str = "4321";

    struct Fixture {
        _dir: tempfile::TempDir,
        daemon: Arc<Daemon>,
        app: Router,
    }

    fn fixture_with(edit: impl FnOnce(&mut Config)) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::embedded_defaults(&dir.path().join("state"));
        if let Some(h) = config.http.as_mut() {
            h.rate_limit_per_minute = 1000;
        }
        edit(&mut config);
        let store = Store::open(&config.state_dir).expect("store");
        let daemon = Arc::new(Daemon::new(config, store, false));
        let app = router(Arc::clone(&daemon));
        Fixture {
            _dir: dir,
            daemon,
            app,
        }
    }

    fn fixture() -> Fixture {
        fixture_with(|_| {})
    }

    impl Fixture {
        /// The same daemon behind routes with `checks`.
        fn with_checks(mut self, checks: PasswordChecks) -> Fixture {
            self.app = router_with(Arc::clone(&self.daemon), checks);
            self
        }

        /// Issues a token for `user` that expires `ttl` seconds from now
        /// (negative: already expired).
        fn issue(&self, user: &str, ttl: i64) -> Enrolment {
            let now = unix_now();
            let config = &self.daemon.config;
            self.daemon
                .store()
                .issue(
                    &NewEnrolment {
                        user,
                        email: "alice@example.jp",
                        service_id: &config.service_id,
                        params: config.token.params(),
                        language: "en",
                        activation_password: PASSWORD,
                        expires_at: now.saturating_add_signed(ttl),
                        replace: false,
                    },
                    now,
                )
                .expect("issue")
        }

        fn reload(&self, e: &Enrolment) -> Enrolment {
            self.daemon
                .store()
                .by_ids(&e.service_id, &e.user_id)
                .expect("query")
                .expect("exists")
        }

        async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
            let response = self.app.clone().oneshot(req).await.expect("infallible");
            let status = response.status();
            let headers = response.headers().clone();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            (status, headers, body.to_vec())
        }

        async fn api(&self, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
            let (status, headers, body) =
                self.send(request(path, "application/json", body, 1)).await;
            assert_eq!(
                headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
                Some(&b"application/json"[..])
            );
            (status, serde_json::from_slice(&body).expect("JSON answer"))
        }

        async fn activate(&self, e: &Enrolment, password: &str) -> (StatusCode, Value) {
            let body = json!({
                "service_id": e.service_id,
                "user_id": e.user_id.to_string(),
                "activation_password": password,
            });
            self.api("/api/v1/activate", body.to_string()).await
        }

        async fn confirm(&self, e: &Enrolment, otp: &str) -> (StatusCode, Value) {
            let body = json!({
                "service_id": e.service_id,
                "user_id": e.user_id.as_str(),
                "otp": otp,
            });
            self.api("/api/v1/confirm", body.to_string()).await
        }

        async fn page(&self, req: Request<Body>) -> (StatusCode, String) {
            let (status, headers, body) = self.send(req).await;
            assert_eq!(
                headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
                Some(&b"text/html; charset=utf-8"[..])
            );
            (status, String::from_utf8(body).expect("UTF-8 page"))
        }
    }

    /// A POST from 192.0.2.`host`.
    fn request(path: &str, content_type: &str, body: impl Into<Body>, host: u8) -> Request<Body> {
        let mut req = Request::post(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(body.into())
            .expect("request");
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, host], 40000))));
        req
    }

    fn form(path: &str, fields: &[(&str, &str)]) -> Request<Body> {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(' ', "+")))
            .collect();
        request(path, "application/x-www-form-urlencoded", body.join("&"), 1)
    }

    fn get(path: &str, accept_language: Option<&str>) -> Request<Body> {
        let mut builder = Request::get(path);
        if let Some(lang) = accept_language {
            builder = builder.header(header::ACCEPT_LANGUAGE, lang);
        }
        builder.body(Body::empty()).expect("request")
    }

    fn secret_of(value: &Value) -> Vec<u8> {
        totp::decode_base32(value["secret"].as_str().expect("secret"))
            .expect("base32")
            .to_vec()
    }

    fn audit(f: &Fixture) -> Vec<otpstore::AuditEntry> {
        f.daemon.store().audit_entries(None, 0).expect("audit")
    }

    #[tokio::test]
    async fn activation_delivers_the_token_once() {
        let f = fixture();
        let e = f.issue("alice", 3600);
        let (_, headers, body) = f
            .send(request(
                "/api/v1/activate",
                "application/json",
                json!({
                    "service_id": "otpd",
                    "user_id": e.user_id.to_string(),
                    "activation_password": PASSWORD,
                })
                .to_string(),
                1,
            ))
            .await;
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            headers.get(header::CACHE_CONTROL).map(|v| v.as_bytes()),
            Some(&b"no-store"[..])
        );
        let uri = v["otpauth_uri"].as_str().expect("uri");
        assert!(uri.starts_with("otpauth://totp/otpd:alice?"), "{uri}");
        assert!(uri.contains("period=60"), "{uri}");
        assert!(uri.contains(&format!("secret={}", v["secret"].as_str().expect("s"))));
        assert_eq!(v["period"], 60);
        assert_eq!(v["digits"], 6);
        assert_eq!(v["algorithm"], "SHA1");
        let stored = f.daemon.store().secret(&e).expect("secret");
        assert_eq!(secret_of(&v), stored.to_vec());
        assert_eq!(f.reload(&e).state, EnrolState::Activated);

        let (status, v) = f.activate(&e, PASSWORD).await;
        assert_eq!(status, StatusCode::GONE);
        assert!(v["error"].is_string() && v.get("secret").is_none());

        let entries = audit(&f);
        let first = &entries[0];
        assert_eq!(
            (
                first.user.as_str(),
                first.channel.as_str(),
                first.peer.as_str(),
                first.result.as_str()
            ),
            ("alice", "http", "192.0.2.1", "ok")
        );
        assert_eq!(entries[1].result, AuditResult::Fail);
        let secret = totp::base32(&stored);
        for entry in &entries {
            assert!(!entry.reason.contains(PASSWORD) && !entry.reason.contains(secret.as_str()));
        }
    }

    #[tokio::test]
    async fn wrong_passwords_count_down_then_invalidate() {
        let f = fixture();
        let e = f.issue("alice", 3600);
        for left in (0..5).rev() {
            let (status, v) = f.activate(&e, "9999").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(v["attempts_left"], left, "{v}");
            assert!(v["error"].is_string());
        }
        let (status, v) = f.activate(&e, PASSWORD).await;
        assert_eq!(status, StatusCode::GONE, "{v}");
        assert!(v.get("secret").is_none());
        assert_eq!(f.reload(&e).state, EnrolState::Invalidated);
        // Passwords that break the rules are just wrong ones.
        let other = f.issue("bob", 3600);
        let (status, v) = f.activate(&other, "12ab").await;
        assert_eq!(
            (status, v["attempts_left"].as_u64()),
            (StatusCode::UNAUTHORIZED, Some(4))
        );
    }

    #[tokio::test]
    async fn concurrent_activations_check_at_most_the_limit() {
        // Waits long enough for every check even on a busy machine: this
        // test counts tries, not refusals.
        let f = fixture().with_checks(PasswordChecks::new(
            CHECKS_AT_ONCE,
            Duration::from_secs(300),
        ));
        let e = f.issue("alice", 3600);
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let body = json!({
                "service_id": "OTPD",
                "user_id": e.user_id.as_str(),
                "activation_password": "9999",
            });
            let req = request("/api/v1/activate", "application/json", body.to_string(), 1);
            requests.spawn(f.app.clone().oneshot(req));
        }
        let mut answers = Vec::new();
        while let Some(response) = requests.join_next().await {
            let response = response.expect("joins").expect("infallible");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            let v: Value = serde_json::from_slice(&body).expect("JSON answer");
            answers.push((status, v));
        }
        let counted: Vec<u64> = answers
            .iter()
            .filter_map(|(_, v)| v["attempts_left"].as_u64())
            .collect();
        assert_eq!(counted.len(), 5, "{answers:?}");
        assert!(counted.contains(&0), "{counted:?}");
        for (status, v) in &answers {
            assert!(
                matches!(
                    *status,
                    StatusCode::UNAUTHORIZED | StatusCode::GONE | StatusCode::SERVICE_UNAVAILABLE
                ),
                "{status} {v}"
            );
            assert!(v.get("secret").is_none());
        }
        let e = f.reload(&e);
        assert_eq!(
            (e.state, e.activation_failures),
            (EnrolState::Invalidated, 5)
        );
        let checks = audit(&f)
            .iter()
            .filter(|a| a.reason.contains("wrong activation password"))
            .count();
        assert_eq!(checks, 5);
    }

    #[tokio::test]
    async fn a_right_password_after_wrong_ones_keeps_only_the_wrong_count() {
        let f = fixture();
        let e = f.issue("alice", 3600);
        for left in [4, 3] {
            let (_, v) = f.activate(&e, "9999").await;
            assert_eq!(v["attempts_left"], left, "{v}");
        }
        let (status, v) = f.activate(&e, PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let e = f.reload(&e);
        assert_eq!((e.state, e.activation_failures), (EnrolState::Activated, 2));
    }

    #[tokio::test]
    async fn no_free_password_check_is_503_and_takes_no_try() {
        let checks = PasswordChecks::new(2, Duration::from_millis(200));
        let slots = Arc::clone(&checks.slots);
        let f = fixture().with_checks(checks);
        let e = f.issue("alice", 3600);
        let held = Arc::clone(&slots)
            .acquire_many_owned(2)
            .await
            .expect("slots");
        let body = json!({
            "service_id": "OTPD",
            "user_id": e.user_id.as_str(),
            "activation_password": PASSWORD,
        });
        let (status, headers, body) = f
            .send(request(
                "/api/v1/activate",
                "application/json",
                body.to_string(),
                1,
            ))
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            headers.get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"60"[..])
        );
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert!(
            v["error"].as_str().expect("error").contains("try again"),
            "{v}"
        );
        let reloaded = f.reload(&e);
        assert_eq!(
            (reloaded.state, reloaded.activation_failures),
            (EnrolState::Issued, 0)
        );
        assert!(audit(&f)
            .iter()
            .any(|a| a.reason.contains("too many password checks at once")));
        drop(held);
        let (status, v) = f.activate(&e, "9999").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(v["attempts_left"], 4, "{v}");
    }

    #[test]
    fn connection_cap_keeps_half_the_descriptors() {
        assert_eq!(connection_cap(1024), 512);
        assert_eq!(connection_cap(4096), MAX_CONNECTIONS);
        assert_eq!(connection_cap(u64::MAX), MAX_CONNECTIONS);
        assert_eq!(connection_cap(1), 1);
    }

    #[tokio::test]
    async fn unknown_ids_look_like_a_wrong_password_without_a_count() {
        let f = fixture();
        let e = f.issue("alice", 3600);
        let cases = [
            json!({"service_id": "OTHER", "user_id": e.user_id.as_str(), "activation_password": PASSWORD}),
            json!({"service_id": "OTPD", "user_id": "0000-0000-0000-00", "activation_password": PASSWORD}),
            json!({"service_id": "OTPD", "user_id": "not an id", "activation_password": PASSWORD}),
            json!({"service_id": "OTPD", "user_id": "", "activation_password": ""}),
        ];
        let (_, wrong) = f.activate(&e, "9999").await;
        for body in cases {
            let (status, v) = f.api("/api/v1/activate", body.to_string()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
            assert!(v.get("attempts_left").is_none(), "{v}");
            assert_eq!(v["error"], wrong["error"]);
        }
        let e = f.reload(&e);
        assert_eq!((e.state, e.activation_failures), (EnrolState::Issued, 1));
        assert!(audit(&f)
            .iter()
            .any(|a| a.user == UNKNOWN_USER && a.reason.contains("unknown service ID or user ID")));
    }

    #[tokio::test]
    async fn expired_link_is_gone_and_delivers_nothing() {
        let f = fixture();
        let e = f.issue("alice", -10);
        let (status, v) = f.activate(&e, PASSWORD).await;
        assert_eq!(status, StatusCode::GONE);
        assert!(v["error"].as_str().expect("error").contains("expired"));
        assert!(v.get("secret").is_none());
        assert_eq!(f.reload(&e).state, EnrolState::Issued);
        let (status, page) = f
            .page(form(
                "/setup",
                &[
                    ("service_id", "OTPD"),
                    ("user_id", e.user_id.as_str()),
                    ("activation_password", PASSWORD),
                ],
            ))
            .await;
        assert_eq!(status, StatusCode::GONE);
        assert!(page.contains("expired") && !page.contains("otpauth://"));
    }

    #[tokio::test]
    async fn malformed_bodies_are_400_and_change_nothing() {
        let f = fixture();
        let e = f.issue("alice", 3600);
        let uid = e.user_id.as_str();
        let big = json!({
            "service_id": "OTPD", "user_id": uid, "activation_password": "9999",
            "padding": "x".repeat(MAX_BODY),
        })
        .to_string();
        let mut invalid_utf8 =
            format!("{{\"service_id\":\"OTPD\",\"user_id\":\"{uid}\",\"activation_password\":\"")
                .into_bytes();
        invalid_utf8.extend_from_slice(&[0xff, 0xfe, b'"', b'}']);
        let bodies: Vec<Vec<u8>> = vec![
            b"not json".to_vec(),
            b"".to_vec(),
            b"[]".to_vec(),
            b"{\"service_id\":\"OTPD\"".to_vec(),
            format!(
                "{{\"service_id\":\"OTPD\",\"user_id\":{uid},\"activation_password\":\"9999\"}}"
            )
            .into_bytes(),
            format!(
                "{{\"service_id\":\"OTPD\",\"user_id\":\"{uid}\",\"activation_password\":9999}}"
            )
            .into_bytes(),
            format!("{{\"service_id\":\"OTPD\",\"user_id\":\"{uid}\"}}").into_bytes(),
            format!(
                "{{\"service_id\":null,\"user_id\":\"{uid}\",\"activation_password\":\"9999\"}}"
            )
            .into_bytes(),
            big.into_bytes(),
            invalid_utf8,
        ];
        for body in bodies {
            let shown = String::from_utf8_lossy(&body)
                .chars()
                .take(80)
                .collect::<String>();
            for path in ["/api/v1/activate", "/api/v1/confirm"] {
                let (status, v) = f.api(path, body.clone()).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {shown}");
                let error = v["error"].as_str().expect("error");
                assert!(!error.contains("9999"), "input echoed: {error}");
            }
        }
        // Oversized forms too.
        let (status, _) = f
            .page(form("/setup", &[("service_id", &"x".repeat(MAX_BODY + 1))]))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let e = f.reload(&e);
        assert_eq!((e.state, e.activation_failures), (EnrolState::Issued, 0));
        assert!(audit(&f).is_empty());
    }

    #[tokio::test]
    async fn confirmation_at_the_token_period() {
        let f = fixture();
        let e = f.issue("alice", 3600);
        let (status, v) = f.confirm(&e, "123456").await;
        assert_eq!(status, StatusCode::GONE, "not activated yet: {v}");
        let (_, v) = f.activate(&e, PASSWORD).await;
        let secret = secret_of(&v);
        let (status, v) = f.confirm(&e, "000000").await;
        let wrong_expected = e
            .params
            .matching_step(&secret, "000000", unix_now(), 1)
            .is_none();
        if wrong_expected {
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(v, json!({"error": WRONG_CODE}));
        }
        let code = e.params.code_at(&secret, unix_now());
        let (status, v) = f.confirm(&e, &code).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(
            v,
            json!({"state": "active", "period": 60, "adapted": false})
        );
        let active = f.reload(&e);
        assert_eq!(
            (active.state, active.params.period),
            (EnrolState::Active, 60)
        );
        let (status, _) = f.confirm(&e, &code).await;
        assert_eq!(status, StatusCode::GONE);
    }

    /// A 30-second code that no 60-second step near `now` shares.
    fn thirty_second_code(secret: &[u8], params: &TokenParams) -> Zeroizing<String> {
        let now = unix_now();
        let thirty = TokenParams {
            period: 30,
            ..*params
        };
        let code = thirty.code_at(secret, now);
        assert!(
            params.matching_step(secret, &code, now, 2).is_none(),
            "one-in-a-million collision"
        );
        code
    }

    #[tokio::test]
    async fn thirty_second_apps_are_adapted_and_audited() {
        let f = fixture();
        let e = f.issue("alice", 3600);
        let (_, v) = f.activate(&e, PASSWORD).await;
        let code = thirty_second_code(&secret_of(&v), &e.params);
        let (status, v) = f.confirm(&e, &code).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v, json!({"state": "active", "period": 30, "adapted": true}));
        assert_eq!(f.reload(&e).params.period, 30);
        let last = audit(&f).pop().expect("entry");
        assert_eq!(
            (last.result.as_str(), last.channel.as_str()),
            ("ok", "http")
        );
        assert!(
            last.reason.contains("period adapted to 30 s"),
            "{}",
            last.reason
        );
        assert!(!last.reason.contains(code.as_str()));
    }

    #[tokio::test]
    async fn adaptation_can_be_turned_off() {
        let f = fixture_with(|c| c.token.adapt_period = false);
        let e = f.issue("alice", 3600);
        let (_, v) = f.activate(&e, PASSWORD).await;
        let code = thirty_second_code(&secret_of(&v), &e.params);
        let (status, _) = f.confirm(&e, &code).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(f.reload(&e).state, EnrolState::Activated);
    }

    #[tokio::test]
    async fn rate_limit_counts_pages_and_api_per_address() {
        let f = fixture_with(|c| {
            if let Some(h) = c.http.as_mut() {
                h.rate_limit_per_minute = 3;
            }
        });
        let bad = || request("/api/v1/activate", "application/json", "{}", 7);
        assert_eq!(f.send(bad()).await.0, StatusCode::BAD_REQUEST);
        let mut page = form("/setup", &[("service_id", "X")]);
        page.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 1))));
        assert_eq!(f.send(page).await.0, StatusCode::BAD_REQUEST);
        let confirm = request("/api/v1/confirm", "application/json", "{}", 7);
        assert_eq!(f.send(confirm).await.0, StatusCode::BAD_REQUEST);
        // The form page itself is not counted.
        assert_eq!(f.send(get("/setup", None)).await.0, StatusCode::OK);
        for _ in 0..2 {
            let (status, _, body) = f.send(bad()).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            let v: Value = serde_json::from_slice(&body).expect("json");
            assert!(v["error"].is_string());
        }
        let other = request("/api/v1/activate", "application/json", "{}", 8);
        assert_eq!(f.send(other).await.0, StatusCode::BAD_REQUEST);
        // One audit line for the burst, not one per refused request.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let limited: Vec<_> = audit(&f)
            .into_iter()
            .filter(|a| a.reason.contains("rate limit"))
            .collect();
        assert_eq!(limited.len(), 1);
        assert_eq!(limited[0].peer, "192.0.2.7");
    }

    #[test]
    fn rate_limit_window_slides_and_groups_ipv6_by_64() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2::ffff".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(limiter.check(a, t0), Verdict::Allowed);
        assert_eq!(
            limiter.check(b, t0 + Duration::from_secs(30)),
            Verdict::Allowed
        );
        assert_eq!(
            limiter.check(a, t0 + Duration::from_secs(31)),
            Verdict::Denied { first: true }
        );
        assert_eq!(
            limiter.check(a, t0 + Duration::from_secs(32)),
            Verdict::Denied { first: false }
        );
        assert_eq!(
            limiter.check(c, t0 + Duration::from_secs(32)),
            Verdict::Allowed
        );
        assert_eq!(
            limiter.check(a, t0 + Duration::from_secs(61)),
            Verdict::Allowed
        );
    }

    /// Values of `attr="…"` attributes in `html`.
    fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
        let needle = format!(" {attr}=\"");
        html.match_indices(&needle)
            .filter_map(|(i, _)| {
                let rest = &html[i + needle.len()..];
                rest.find('"').map(|end| &rest[..end])
            })
            .collect()
    }

    fn assert_self_contained(page: &str) {
        for attr in ["src", "href", "action"] {
            for value in attribute_values(page, attr) {
                assert!(
                    !value.contains("http") && !value.contains("//")
                        || value.starts_with("otpauth://"),
                    "external {attr}: {value}"
                );
            }
        }
        assert!(!page.contains("<script"));
        assert!(!page.contains("<link"));
        assert!(page
            .contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"));
    }

    #[tokio::test]
    async fn setup_page_prefills_ids_and_is_self_contained() {
        let f = fixture();
        let (status, page) = f
            .page(get("/setup?sid=OTPD&uid=12345678901234", None))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("<html lang=\"en\">"));
        assert!(page.contains("value=\"OTPD\""));
        assert!(page.contains("value=\"1234-5678-9012-34\""));
        assert!(page.contains("Activation password"));
        assert_self_contained(&page);
        let (_, page) = f.page(get("/setup?sid=%22%3E%3Cscript%3E", None)).await;
        assert!(page.contains("value=\"&quot;&gt;&lt;script&gt;\""));
        assert_self_contained(&page);
    }

    #[tokio::test]
    async fn japanese_page_from_accept_language() {
        let f = fixture();
        let (_, page) = f
            .page(get("/setup?sid=OTPD", Some("ja-JP,ja;q=0.9,en;q=0.8")))
            .await;
        assert!(page.contains("<html lang=\"ja\">"));
        for words in ["サービスID", "ユーザID", "利用開始パスワード"] {
            assert!(page.contains(words), "{words}");
        }
        let (_, page) = f.page(get("/setup", Some("en-US,ja;q=0.5"))).await;
        assert!(page.contains("<html lang=\"en\">"));
        // An explicit choice wins.
        let (_, page) = f.page(get("/setup?lang=ja", Some("en"))).await;
        assert!(page.contains("<html lang=\"ja\">"));
        // No header: [mail].language.
        let f = fixture_with(|c| {
            if let Some(m) = c.mail.as_mut() {
                m.language = Language::Ja;
            }
        });
        let (_, page) = f.page(get("/setup", None)).await;
        assert!(page.contains("<html lang=\"ja\">"));
    }

    #[test]
    fn accept_language_preferences() {
        assert_eq!(accept_language("ja"), Some(Language::Ja));
        assert_eq!(
            accept_language("fr, ja;q=0.3, en;q=0.2"),
            Some(Language::Ja)
        );
        assert_eq!(accept_language("ja;q=0, en-GB"), Some(Language::En));
        assert_eq!(accept_language("fr, de"), None);
        assert_eq!(accept_language("*"), None);
        assert_eq!(accept_language(";;,q=,ja;q=abc"), None);
    }

    #[tokio::test]
    async fn page_flow_in_japanese() {
        let f = fixture();
        let e = f.issue("alice", 3600);
        let uid = e.user_id.to_string();
        let (status, page) = f
            .page(form(
                "/setup",
                &[
                    ("service_id", "OTPD"),
                    ("user_id", &uid),
                    ("activation_password", "1111"),
                    ("lang", "ja"),
                ],
            ))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(page.contains("あと4回入力できます"), "{page}");
        assert!(page.contains(&format!("value=\"{uid}\"")));

        let (status, page) = f
            .page(form(
                "/setup",
                &[
                    ("service_id", "otpd"),
                    ("user_id", &uid.replace('-', " ")),
                    ("activation_password", PASSWORD),
                    ("lang", "ja"),
                ],
            ))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_self_contained(&page);
        let secret = f.daemon.store().secret(&e).expect("secret");
        let grouped = totp::grouped(&totp::base32(&secret));
        assert!(page.contains(grouped.as_str()));
        assert!(page.contains("<svg role=\"img\""));
        assert!(page.contains("href=\"otpauth://totp/otpd:alice?secret="));
        assert!(page.contains("period=60"));
        assert!(page.contains("ワンタイムパスワードは1分ごとに変化します"));
        assert!(page.contains("携帯電話機の時刻設定が正しくない場合"));
        assert!(page.contains("action=\"/setup/confirm\""));

        let code = thirty_second_code(&secret, &e.params);
        let (status, page) = f
            .page(form(
                "/setup/confirm",
                &[
                    ("service_id", "OTPD"),
                    ("user_id", &uid),
                    ("otp", "12"),
                    ("lang", "ja"),
                ],
            ))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(page.contains("ワンタイムパスワードが正しくありません"));
        let (status, page) = f
            .page(form(
                "/setup/confirm",
                &[
                    ("service_id", "OTPD"),
                    ("user_id", &uid),
                    ("otp", &format!("{} {}", &code[..3], &code[3..])),
                    ("lang", "ja"),
                ],
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("設定が完了しました"));
        assert!(page.contains("30秒ごとに新しいワンタイムパスワードを表示します。問題ありません"));
    }

    #[tokio::test]
    async fn page_in_english_counts_down_and_locks() {
        let f = fixture();
        let e = f.issue("alice", 3600);
        let wrong = || {
            form(
                "/setup",
                &[
                    ("service_id", "OTPD"),
                    ("user_id", e.user_id.as_str()),
                    ("activation_password", "0000"),
                    ("lang", "en"),
                ],
            )
        };
        let (_, page) = f.page(wrong()).await;
        assert!(page.contains("4 tries left"), "{page}");
        for _ in 0..3 {
            f.page(wrong()).await;
        }
        let (status, page) = f.page(wrong()).await;
        assert_eq!(status, StatusCode::GONE);
        assert!(page.contains("too many times"), "{page}");
        let (_, page) = f
            .page(form("/setup", &[("service_id", "OTPD"), ("lang", "en")]))
            .await;
        assert!(page.contains("Please fill in every field"));
    }

    #[tokio::test]
    async fn healthz_and_real_socket() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let f = fixture();
        let e = f.issue("alice", 3600);
        let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let listener = HttpListener::from_std(socket, None).expect("listener");
        let url = listener.url();
        let addr = url.trim_start_matches("http://").to_owned();
        let (stop, shutdown) = Shutdown::new();
        let server = tokio::spawn(listener.serve(Arc::clone(&f.daemon), shutdown));

        async fn exchange(addr: &str, request: String) -> String {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.expect("read");
            answer
        }
        let answer = exchange(
            &addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok"), "{answer}");

        let body = json!({"service_id": "OTPD", "user_id": e.user_id.as_str(), "activation_password": "0000"})
            .to_string();
        let answer = exchange(
            &addr,
            format!(
                "POST /api/v1/activate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(answer.contains("\"attempts_left\":4"), "{answer}");
        assert_eq!(audit(&f)[0].peer, "127.0.0.1");

        stop.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(15), server)
            .await
            .expect("stops")
            .expect("joins")
            .expect("serves cleanly");
    }

    #[tokio::test]
    async fn tls_listener_from_config() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let f = fixture();
        let dir = tempfile::tempdir().expect("tempdir");
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, certified.cert.pem()).expect("write cert");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        let config = HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: "https://localhost".to_owned(),
            tls_cert: Some(cert),
            tls_key: Some(key.clone()),
            rate_limit_per_minute: 20,
        };
        let listener = HttpListener::bind(&config).await.expect("bind");
        let url = listener.url();
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
        let (stop, shutdown) = Shutdown::new();
        let server = tokio::spawn(listener.serve(Arc::clone(&f.daemon), shutdown));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(certified.cert.der().clone()).expect("root");
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("https://"))
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");

        stop.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(15), server)
            .await
            .expect("stops")
            .expect("joins")
            .expect("serves cleanly");

        // A missing key is a start-up error that names the files.
        std::fs::remove_file(&key).expect("remove key");
        let error = HttpListener::bind(&config).await.err().expect("refused");
        assert!(error.contains("tls.key"), "{error}");
    }
}
