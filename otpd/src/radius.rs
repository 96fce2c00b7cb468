//! The RADIUS listener: Access-Request with PAP, verified
//! through the [`Verifier`] like every other login; Status-Server
//! (RFC 5997); a duplicate cache so a NAS's retransmission gets the same
//! answer without a second verification; with `accounting_listen`, an
//! Accounting-Response (RFC 2866) to every authenticated Accounting-Request,
//! storing nothing (its answer depends on the request alone, so a
//! retransmission gets the same bytes without a cache). Clients are
//! matched by source address against `[[radius.client]]` (first match
//! wins). Anything that is not a well-formed, authenticated request from a
//! known client is dropped without an answer and counted: the first drop
//! from each source in a minute is logged, up to a fixed number of lines,
//! and a summary line counts the rest by reason (module `drops`). What an
//! Access-Request gets is decided in `login`: the code alone, or with the
//! directory password first (`factor`), in one field or in two steps
//! (`challenge`). With `radsec_listen`, the same requests arrive over TLS
//! too (module `tls`): the checks and answers below serve both transports.
//!
//! `listen` is bound once per core, every socket with `SO_REUSEPORT`, and
//! each socket has its own receive loop, which reads the datagrams waiting
//! in batches (module `batch`): the kernel spreads the clients over the
//! sockets by their address and port, so one client's requests and
//! retransmissions keep arriving on one socket, and its answers leave from
//! that socket. At most [`MAX_IN_FLIGHT`] Access-Requests are verified at
//! once over all the sockets.

mod batch;
mod challenge;
mod drops;
mod factor;
mod login;
mod tls;

use std::borrow::Cow;
use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use otpcore::config::{Cidr, FirstFactor, LdapConfig, RadiusConfig};
use otpcore::radius::{self, attr, code, MessageAuthenticator, Packet, Secret};
use otpldap::Directory;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use zeroize::Zeroizing;

use crate::daemon::{printable, Daemon, Shutdown};
use crate::error::ListenError;
use crate::verifier::Verifier;
use batch::Batch;
use drops::{DropLog, Reason, Source};
use login::Outcome;
use tls::{Connection, RadsecListener};

/// How long an answer is kept for retransmissions.
const DUPLICATE_TTL: Duration = Duration::from_secs(30);
/// Most requests remembered at once.
const DUPLICATE_CAPACITY: usize = 65_536;
/// How often the drops are summed up; a source gets at most one line of
/// its own this often.
const DROP_WINDOW: Duration = Duration::from_secs(60);
/// Most Access-Requests being verified at once, over all the UDP sockets.
/// Past it, datagrams are dropped unread: the NAS retransmits or fails
/// over, and a client that floods with valid requests cannot grow the
/// verification queue that PAM logins wait in by more than this.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Most UDP sockets bound to `listen` (one per core, up to this).
const MAX_SOCKETS: usize = 16;
/// How long a stop waits for requests being verified.
const DRAIN: Duration = Duration::from_secs(5);
/// What every Access-Reject says, whatever the reason.
const REPLY_FAILED: &[u8] = b"Authentication failed";

/// One `[[radius.client]]`, its secret read.
#[derive(Clone)]
struct Client {
    name: String,
    address: Cidr,
    /// The shared secret, keyed for HMAC-MD5 once.
    secret: Secret,
    require_message_authenticator: bool,
}

/// The UDP sockets and the RadSec socket, bound, and the clients with
/// their secrets.
pub struct RadiusListener {
    /// `listen`, bound once per core with `SO_REUSEPORT`.
    sockets: Vec<std::net::UdpSocket>,
    accounting: Option<std::net::UdpSocket>,
    radsec: Option<RadsecListener>,
    clients: Vec<Client>,
    directory: Option<Directory>,
}

impl RadiusListener {
    /// Reads every client's secret (a missing or empty `secret_file` is
    /// an error) and binds `[radius].listen` (and `accounting_listen`,
    /// and `radsec_listen` with its certificates loaded).
    pub fn bind(config: &RadiusConfig) -> Result<RadiusListener, ListenError> {
        let mut clients = Vec::with_capacity(config.client.len());
        for client in &config.client {
            let secret = match (&client.secret, &client.secret_file) {
                (Some(secret), _) => Zeroizing::new(secret.as_bytes().to_vec()),
                (None, Some(path)) => {
                    let text = Zeroizing::new(std::fs::read(path).map_err(|source| {
                        ListenError::SecretFile {
                            client: client.name.clone(),
                            path: path.clone(),
                            source,
                        }
                    })?);
                    let mut secret = Zeroizing::new(text.to_vec());
                    while matches!(secret.last(), Some(b'\n' | b'\r')) {
                        secret.pop();
                    }
                    if secret.is_empty() {
                        return Err(ListenError::EmptySecretFile {
                            client: client.name.clone(),
                            path: path.clone(),
                        });
                    }
                    secret
                }
                (None, None) => {
                    return Err(ListenError::NoSecret {
                        client: client.name.clone(),
                    })
                }
            };
            if secret.is_empty() {
                return Err(ListenError::EmptySecret {
                    client: client.name.clone(),
                });
            }
            clients.push(Client {
                name: client.name.clone(),
                address: client.address,
                secret: Secret::new(&secret),
                require_message_authenticator: client
                    .require_message_authenticator
                    .unwrap_or(config.require_message_authenticator),
            });
        }
        let count = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_SOCKETS);
        let sockets = bind_spread(config.listen, count).map_err(|source| ListenError::Radius {
            addr: config.listen,
            source,
        })?;
        let accounting = match config.accounting_listen {
            Some(addr) => {
                let fail = |source| ListenError::RadiusAccounting { addr, source };
                let socket = std::net::UdpSocket::bind(addr).map_err(fail)?;
                socket.set_nonblocking(true).map_err(fail)?;
                Some(socket)
            }
            None => None,
        };
        let radsec = RadsecListener::bind(config)?;
        Ok(RadiusListener {
            sockets,
            accounting,
            radsec,
            clients,
            directory: None,
        })
    }

    /// Opens `[ldap]` when a client's first factor is the directory (its
    /// CA and password files are read now; nothing goes over the network).
    pub fn with_directory(
        mut self,
        config: &RadiusConfig,
        ldap: Option<&LdapConfig>,
    ) -> Result<RadiusListener, ListenError> {
        let needed = (0..config.client.len())
            .any(|i| config.first_factor_of(i) == FirstFactor::Ldap)
            || config.first_factor == FirstFactor::Ldap;
        if let (true, Some(ldap)) = (needed, ldap) {
            self.directory = Some(Directory::open(ldap)?);
        }
        Ok(self)
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self.sockets.first() {
            Some(socket) => socket.local_addr(),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// The bound accounting address, if there is one.
    pub fn accounting_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.accounting
            .as_ref()
            .map(std::net::UdpSocket::local_addr)
    }

    /// The bound RadSec address, if there is one.
    pub fn radsec_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.radsec.as_ref().map(RadsecListener::local_addr)
    }

    /// Answers requests until `shutdown`; then waits a little for the
    /// requests being verified, so their answers still go out.
    pub async fn serve(
        self,
        daemon: Arc<Daemon>,
        verifier: Verifier,
        shutdown: Shutdown,
    ) -> std::io::Result<()> {
        let sockets = self
            .sockets
            .into_iter()
            .map(UdpSocket::from_std)
            .collect::<std::io::Result<Vec<_>>>()?;
        let accounting = match self.accounting {
            Some(s) => Some(UdpSocket::from_std(s)?),
            None => None,
        };
        let radsec_clients = self
            .clients
            .iter()
            .map(|c| Client {
                secret: Secret::new(tls::SECRET),
                ..c.clone()
            })
            .collect();
        let server = Arc::new(Server {
            daemon,
            verifier,
            sockets,
            clients: self.clients,
            radsec_clients,
            accounting: accounting.is_some(),
            directory: self.directory,
            duplicates: Mutex::new(Duplicates::default()),
            drops: Mutex::new(DropLog::new(Instant::now())),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        });
        let mut tasks = JoinSet::new();
        if let Some(radsec) = self.radsec {
            tasks.spawn(radsec.serve(Arc::clone(&server), shutdown.clone()));
        }
        for socket in 0..server.sockets.len() {
            tasks.spawn(Arc::clone(&server).receive_loop(socket, shutdown.clone()));
        }
        // One byte more than the largest packet, to see oversized ones.
        let mut accounting_buffer = vec![0u8; radius::MAX_PACKET + 1];
        let mut window =
            tokio::time::interval_at(tokio::time::Instant::now() + DROP_WINDOW, DROP_WINDOW);
        window.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = shutdown.wait();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = window.tick() => server.close_drop_window(),
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                received = receive_from(accounting.as_ref(), &mut accounting_buffer) => match received {
                    Ok((len, from)) => {
                        let datagram = accounting_buffer.get(..len).unwrap_or_default();
                        if let (Some(bytes), Some(to)) =
                            (server.account(datagram, from), accounting.as_ref())
                        {
                            if let Err(e) = to.try_send_to(&bytes, from) {
                                log::warn!("radius: cannot answer {from}'s accounting: {e}");
                            }
                        }
                    }
                    Err(e) => {
                        log::debug!("radius: accounting receive: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
        accounting_buffer.fill(0);
        // The receive loops and RadSec end at once; the requests being
        // verified get a little time to be answered.
        while tasks.join_next().await.is_some() {}
        let all = u32::try_from(MAX_IN_FLIGHT).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(DRAIN, server.in_flight.acquire_many(all)).await;
        server.close_drop_window();
        Ok(())
    }
}

/// `count` UDP sockets bound to `addr` with `SO_REUSEPORT` (port 0: the
/// port the first one gets), non-blocking.
///
/// A port somebody already holds is refused as a plain bind would refuse
/// it: the address is first bound once without `SO_REUSEPORT` and let go,
/// so a second otpd of the same user on the same port fails to start
/// instead of quietly taking half of the first one's requests.
fn bind_spread(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    if addr.port() != 0 {
        drop(std::net::UdpSocket::bind(addr)?);
    }
    let mut sockets: Vec<std::net::UdpSocket> = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let at = match sockets.first() {
            Some(first) => first.local_addr()?,
            None => addr,
        };
        let socket = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&at.into())?;
        sockets.push(socket.into());
    }
    Ok(sockets)
}

/// A datagram from `socket`, or never when there is none.
async fn receive_from(
    socket: Option<&UdpSocket>,
    buffer: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buffer).await,
        None => std::future::pending().await,
    }
}

/// Key of the duplicate cache: where the request came from (for UDP the
/// client's address and port, for RadSec its connection), identifier,
/// request authenticator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RequestKey {
    conversation: Conversation,
    identifier: u8,
    authenticator: [u8; 16],
}

/// Every field of the key goes into the hash, in three writes (the
/// derived hash makes a dozen small ones, through the enum and the
/// address); the cache's hasher is std's, keyed at random at start.
impl Hash for RequestKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (place, tail) = match self.conversation {
            Conversation::Udp(addr) => {
                let ip = match addr.ip() {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => v6,
                };
                (u128::from(ip), u64::from(addr.port()) << 8)
            }
            Conversation::Tls(id) => (u128::from(id), 1 << 63),
        };
        state.write_u128(u128::from_ne_bytes(self.authenticator));
        state.write_u128(place);
        state.write_u64(tail | u64::from(self.identifier));
    }
}

/// Where requests come from, as the duplicate cache tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Conversation {
    Udp(SocketAddr),
    /// A RadSec connection, numbered in the order they were accepted.
    Tls(u64),
}

/// Where a request came from, so where its answer goes and which secret
/// signs it: the client's own over UDP (the answer leaves from the socket
/// it arrived on), `radsec` over TLS.
#[derive(Clone)]
enum Peer {
    Udp { addr: SocketAddr, socket: usize },
    Tls(Arc<Connection>),
}

impl Peer {
    /// The client's address and port.
    fn addr(&self) -> SocketAddr {
        match self {
            Peer::Udp { addr, .. } => *addr,
            Peer::Tls(connection) => connection.addr,
        }
    }

    fn conversation(&self) -> Conversation {
        match self {
            Peer::Udp { addr, .. } => Conversation::Udp(*addr),
            Peer::Tls(connection) => Conversation::Tls(connection.id),
        }
    }
}

enum Cached {
    /// Being verified: a retransmission is dropped, the answer follows.
    Pending,
    Answer(Vec<u8>),
}

/// Answers of the last 30 s, bounded.
#[derive(Default)]
struct Duplicates {
    entries: HashMap<RequestKey, (Instant, Cached), RandomState>,
    order: VecDeque<(Instant, RequestKey)>,
}

impl Duplicates {
    fn expire(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front().copied() {
            let expired = now.duration_since(at) >= DUPLICATE_TTL;
            if !expired && self.entries.len() < DUPLICATE_CAPACITY {
                break;
            }
            self.order.pop_front();
            if let Entry::Occupied(entry) = self.entries.entry(key) {
                if entry.get().0 == at {
                    entry.remove();
                }
            }
        }
    }

    /// What is cached for `key`; when nothing is, `key` becomes pending
    /// and `None` is returned.
    fn get_or_pend(&mut self, key: RequestKey, now: Instant) -> Option<&Cached> {
        self.expire(now);
        match self.entries.entry(key) {
            Entry::Occupied(entry) => Some(&entry.into_mut().1),
            Entry::Vacant(entry) => {
                entry.insert((now, Cached::Pending));
                self.order.push_back((now, key));
                None
            }
        }
    }

    /// Forgets a pending request that got no answer, so that its
    /// retransmission is decided afresh.
    fn forget(&mut self, key: &RequestKey) {
        self.entries.remove(key);
    }

    /// Stores the answer of a pending request (it keeps its first time).
    fn answer(&mut self, key: &RequestKey, bytes: Vec<u8>) {
        if let Some((_, cached)) = self.entries.get_mut(key) {
            *cached = Cached::Answer(bytes);
        }
    }
}

struct Server {
    daemon: Arc<Daemon>,
    verifier: Verifier,
    /// `listen`, once per core.
    sockets: Vec<UdpSocket>,
    /// The clients as they are over UDP, and the same over RadSec, where
    /// every secret is `radsec`: a client has the same index in both.
    clients: Vec<Client>,
    radsec_clients: Vec<Client>,
    /// Whether Accounting-Requests are answered (`accounting_listen`).
    accounting: bool,
    directory: Option<Directory>,
    duplicates: Mutex<Duplicates>,
    drops: Mutex<DropLog>,
    /// Access-Requests over UDP being verified, over all the sockets.
    in_flight: Arc<Semaphore>,
}

/// An authenticated Access-Request to verify.
struct Work {
    key: RequestKey,
    peer: Peer,
    client: usize,
    user: String,
    password: Option<Zeroizing<String>>,
    /// The State attribute, when the request answers a challenge.
    state: Option<Vec<u8>>,
    identifier: u8,
    authenticator: [u8; 16],
}

/// The address without an IPv4-mapped IPv6 disguise.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

impl Server {
    /// Receives on socket `socket` until `shutdown`, each Access-Request
    /// verified in a task of its own while a permit of `in_flight` is
    /// free (the task gives it back when the request is answered).
    async fn receive_loop(self: Arc<Self>, socket: usize, shutdown: Shutdown) {
        let Some(udp) = self.sockets.get(socket) else {
            return;
        };
        let mut batch = Batch::new();
        let stop = shutdown.wait();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                received = batch.receive(udp) => match received {
                    Ok(()) => for (datagram, from) in batch.datagrams() {
                        match Arc::clone(&self.in_flight).try_acquire_owned() {
                            Err(_) => self.dropped(
                                from,
                                Reason::Overloaded,
                                format_args!("{MAX_IN_FLIGHT} requests are being verified already"),
                            ),
                            Ok(permit) => {
                                if let Some(work) = self.receive(datagram, from, socket) {
                                    let server = Arc::clone(&self);
                                    tokio::spawn(async move {
                                        server.answer(work).await;
                                        drop(permit);
                                    });
                                }
                            }
                        }
                    },
                    // ICMP errors from earlier sends and the like.
                    Err(e) => {
                        log::debug!("radius: receive: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
        batch.clear();
    }

    /// Counts a dropped datagram, and logs it with `why` when it is the
    /// first from its source in this window and the window still has room
    /// for a line.
    fn dropped(&self, from: SocketAddr, reason: Reason, why: fmt::Arguments<'_>) {
        self.daemon.metrics().radius_dropped(reason.name());
        let source = Source::of(from.ip());
        let logged = self
            .drops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(source, reason);
        if logged {
            log::warn!("radius: dropped a packet from {from}: {why} (further drops from {source} are counted in the next summary)");
        }
    }

    /// Ends the window of drops and logs its summary, if there is one.
    fn close_drop_window(&self) {
        let summary = self
            .drops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .close(Instant::now());
        if let Some(summary) = summary {
            log::warn!("radius: {summary}");
        }
    }

    /// The clients as `peer`'s transport sees them.
    fn clients(&self, peer: &Peer) -> &[Client] {
        match peer {
            Peer::Udp { .. } => &self.clients,
            Peer::Tls(_) => &self.radsec_clients,
        }
    }

    /// The index of the first client whose address block holds `ip`.
    fn client_of(&self, ip: IpAddr) -> Option<usize> {
        self.clients.iter().position(|c| c.address.contains(ip))
    }

    fn send(&self, bytes: &[u8], to: &Peer) {
        match to {
            Peer::Udp { addr, socket } => {
                let sent = match self.sockets.get(*socket) {
                    Some(udp) => udp.try_send_to(bytes, *addr),
                    None => Err(std::io::ErrorKind::NotConnected.into()),
                };
                if let Err(e) = sent {
                    log::warn!("radius: cannot answer {addr}: {e}");
                }
            }
            Peer::Tls(connection) => connection.send(bytes),
        }
    }

    /// Checks one datagram from the accounting port; returns the
    /// Accounting-Response to send, or `None` (dropped, and logged).
    fn account(&self, datagram: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
        let from = canonical(from);
        let Some(index) = self.client_of(from.ip()) else {
            self.dropped(
                from,
                Reason::NotAClient,
                format_args!("accounting: not a configured client"),
            );
            return None;
        };
        self.accounting_request(datagram, from, self.clients.get(index)?)
    }

    /// Checks an Accounting-Request from `client` at `from`; returns the
    /// Accounting-Response to send, or `None` (dropped, and logged).
    fn accounting_request(
        &self,
        datagram: &[u8],
        from: SocketAddr,
        client: &Client,
    ) -> Option<Vec<u8>> {
        let packet = match Packet::decode(datagram) {
            Ok(p) => p,
            Err(e) => {
                self.dropped(
                    from,
                    Reason::Malformed,
                    format_args!(
                        "accounting: client {:?}: malformed packet: {e}",
                        client.name
                    ),
                );
                return None;
            }
        };
        if packet.code != code::ACCOUNTING_REQUEST {
            self.dropped(
                from,
                Reason::NotServed,
                format_args!(
                    "accounting: client {:?}: packet code {} is not served",
                    client.name, packet.code
                ),
            );
            return None;
        }
        if !packet.accounting_request_ok(client.secret.bytes()) {
            self.dropped(
                from,
                Reason::BadAuthenticator,
                format_args!(
                    "accounting: client {:?}: bad Request Authenticator (wrong secret?)",
                    client.name
                ),
            );
            return None;
        }
        let with_ma = match packet.accounting_message_authenticator(&client.secret) {
            MessageAuthenticator::Absent => false,
            MessageAuthenticator::Valid => true,
            MessageAuthenticator::Invalid => {
                self.dropped(
                    from,
                    Reason::BadAuthenticator,
                    format_args!(
                        "accounting: client {:?}: bad Message-Authenticator",
                        client.name
                    ),
                );
                return None;
            }
        };
        let user = packet
            .user_name()
            .map(|u| printable(&String::from_utf8_lossy(u)))
            .unwrap_or_else(|| "-".to_owned());
        match radius::encode_accounting_response(
            packet.identifier,
            &packet.authenticator,
            &client.secret,
            with_ma,
        ) {
            Ok(bytes) => {
                log::debug!(
                    "radius: Accounting-Request from nas={} addr={from} user={user}: answered",
                    printable(&client.name)
                );
                Some(bytes)
            }
            Err(e) => {
                log::error!("radius: cannot encode an Accounting-Response: {e}");
                None
            }
        }
    }

    /// Checks one datagram that arrived on socket `socket`; answers what
    /// needs no verification (Status-Server, duplicates) and returns the
    /// Access-Requests to verify.
    fn receive(&self, datagram: &[u8], from: SocketAddr, socket: usize) -> Option<Work> {
        let from = canonical(from);
        let Some(index) = self.client_of(from.ip()) else {
            self.dropped(
                from,
                Reason::NotAClient,
                format_args!("not a configured client"),
            );
            return None;
        };
        self.request(datagram, Peer::Udp { addr: from, socket }, index)
    }

    /// Checks one packet from client `index` of `peer`'s transport;
    /// answers what needs no verification (Status-Server, duplicates) and
    /// returns the Access-Requests to verify.
    fn request(&self, datagram: &[u8], peer: Peer, index: usize) -> Option<Work> {
        let from = peer.addr();
        let client = self.clients(&peer).get(index)?;
        let packet = match Packet::decode(datagram) {
            Ok(p) => p,
            Err(e) => {
                self.dropped(
                    from,
                    Reason::Malformed,
                    format_args!("client {:?}: malformed packet: {e}", client.name),
                );
                return None;
            }
        };
        let ma = packet.message_authenticator_with(&client.secret, None);
        let refusal: Option<(Reason, Cow<'static, str>)> = match (packet.code, ma) {
            (_, MessageAuthenticator::Invalid) => Some((
                Reason::BadAuthenticator,
                "bad Message-Authenticator (wrong secret?)".into(),
            )),
            (code::STATUS_SERVER, MessageAuthenticator::Absent) => Some((
                Reason::NoMessageAuthenticator,
                "Status-Server without Message-Authenticator".into(),
            )),
            (code::ACCESS_REQUEST, MessageAuthenticator::Absent)
                if client.require_message_authenticator =>
            {
                Some((
                    Reason::NoMessageAuthenticator,
                    "Access-Request without the required Message-Authenticator".into(),
                ))
            }
            (code::STATUS_SERVER | code::ACCESS_REQUEST, _) => None,
            (other, _) => Some((
                Reason::NotServed,
                format!("packet code {other} is not served").into(),
            )),
        };
        if let Some((reason, why)) = refusal {
            self.dropped(
                from,
                reason,
                format_args!("client {:?}: {why}", client.name),
            );
            return None;
        }
        if packet.code == code::STATUS_SERVER {
            match radius::encode_response_with(
                code::ACCESS_ACCEPT,
                packet.identifier,
                &packet.authenticator,
                &[],
                &client.secret,
            ) {
                Ok(bytes) => self.send(&bytes, &peer),
                Err(e) => log::error!("radius: cannot encode a Status-Server answer: {e}"),
            }
            return None;
        }

        let key = RequestKey {
            conversation: peer.conversation(),
            identifier: packet.identifier,
            authenticator: packet.authenticator,
        };
        {
            let mut duplicates = self.duplicates.lock().unwrap_or_else(|e| e.into_inner());
            match duplicates.get_or_pend(key, Instant::now()) {
                Some(Cached::Answer(bytes)) => {
                    log::debug!("radius: retransmission from {from}: cached answer sent");
                    let bytes = bytes.clone();
                    drop(duplicates);
                    self.send(&bytes, &peer);
                    return None;
                }
                Some(Cached::Pending) => {
                    log::debug!("radius: retransmission from {from} while verifying: ignored");
                    return None;
                }
                None => {}
            }
        }

        let user = packet
            .user_name()
            .and_then(|u| std::str::from_utf8(u).ok())
            .map(str::to_owned)
            .unwrap_or_default();
        let password = match packet.user_password(client.secret.bytes()) {
            Ok(Some(mut p)) => Some(Zeroizing::new(
                // The decrypted bytes become the string without a copy
                // when they are UTF-8, as codes are.
                match String::from_utf8(std::mem::take(&mut *p)) {
                    Ok(text) => text,
                    Err(e) => {
                        let bytes = Zeroizing::new(e.into_bytes());
                        String::from_utf8_lossy(&bytes).into_owned()
                    }
                },
            )),
            Ok(None) | Err(_) => None,
        };
        Some(Work {
            key,
            peer,
            client: index,
            user,
            password,
            state: packet.attribute(attr::STATE).map(<[u8]>::to_vec),
            identifier: packet.identifier,
            authenticator: packet.authenticator,
        })
    }

    /// Verifies one Access-Request and answers it.
    async fn answer(self: Arc<Self>, work: Work) {
        let Some(client) = self.clients(&work.peer).get(work.client) else {
            return;
        };
        let from = work.peer.addr();
        let peer = format!("nas={} addr={from}", client.name);
        let encoded = match self.decide(&work, client, peer).await {
            Outcome::Accept => radius::encode_response_with(
                code::ACCESS_ACCEPT,
                work.identifier,
                &work.authenticator,
                &[],
                &client.secret,
            ),
            Outcome::Reject => radius::encode_response_with(
                code::ACCESS_REJECT,
                work.identifier,
                &work.authenticator,
                &[(attr::REPLY_MESSAGE, REPLY_FAILED)],
                &client.secret,
            ),
            Outcome::Challenge(state) => radius::encode_response_with(
                code::ACCESS_CHALLENGE,
                work.identifier,
                &work.authenticator,
                &[
                    (attr::STATE, &state),
                    (attr::REPLY_MESSAGE, challenge::PROMPT),
                ],
                &client.secret,
            ),
            // The store or the directory could not decide: no answer at
            // all, so the gateway asks its next server; a retransmission is
            // decided afresh.
            Outcome::Silence => {
                self.duplicates
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .forget(&work.key);
                return;
            }
        };
        let bytes = match encoded {
            Ok(b) => b,
            Err(e) => {
                log::error!("radius: cannot encode the answer: {e}");
                return;
            }
        };
        // Sent first, then kept for retransmissions without a copy: a
        // retransmission in between finds the request pending and is
        // dropped, as while it was verified.
        self.send(&bytes, &work.peer);
        self.duplicates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answer(&work.key, bytes);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn key(n: u8) -> RequestKey {
        RequestKey {
            conversation: Conversation::Udp("127.0.0.1:1000".parse().unwrap()),
            identifier: n,
            authenticator: [n; 16],
        }
    }

    #[test]
    fn a_port_in_use_is_refused_even_to_the_same_user() {
        let group = bind_spread("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        assert_eq!(group.len(), 2);
        let taken = group[0].local_addr().unwrap();
        assert_eq!(group[1].local_addr().unwrap(), taken);
        let second = bind_spread(taken, 2).unwrap_err();
        assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse);
        drop(group);
        let again = bind_spread(taken, 2).unwrap();
        assert_eq!(again[0].local_addr().unwrap(), taken);
    }

    #[test]
    fn duplicates_expire_and_stay_bounded() {
        let mut d = Duplicates::default();
        let t0 = Instant::now();
        assert!(d.get_or_pend(key(1), t0).is_none());
        assert!(matches!(d.get_or_pend(key(1), t0), Some(Cached::Pending)));
        d.answer(&key(1), vec![1, 2, 3]);
        assert!(matches!(d.get_or_pend(key(1), t0), Some(Cached::Answer(b)) if b == &[1, 2, 3]));
        assert!(d.get_or_pend(key(2), t0).is_none());
        d.forget(&key(2));
        let later = t0 + DUPLICATE_TTL + Duration::from_secs(1);
        assert!(d.get_or_pend(key(1), later).is_none());
        d.forget(&key(1));
        d.expire(later + DUPLICATE_TTL);
        assert!(d.entries.is_empty() && d.order.is_empty());
        for i in 0..(DUPLICATE_CAPACITY + 10) {
            let k = RequestKey {
                conversation: Conversation::Udp("127.0.0.1:1".parse().unwrap()),
                identifier: 0,
                authenticator: [
                    (i % 256) as u8,
                    (i / 256 % 256) as u8,
                    (i / 65536) as u8,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ],
            };
            assert!(d.get_or_pend(k, t0).is_none());
        }
        assert!(d.entries.len() <= DUPLICATE_CAPACITY);
        assert_eq!(d.order.len(), d.entries.len());
    }

    #[test]
    fn mapped_addresses_are_canonical() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        assert_eq!(canonical(mapped), "127.0.0.1:5000".parse().unwrap());
        let v6: SocketAddr = "[::1]:5000".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
