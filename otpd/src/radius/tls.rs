//! RADIUS over TLS (RadSec, RFC 6614) on `radsec_listen`: TLS 1.2 or 1.3
//! with mutual authentication. A connection is served when its address
//! belongs to a `[[radius.client]]` and its certificate chains to
//! `radsec_ca`; on it, packets follow each other, each as long as its
//! Length field says, and are checked and answered exactly as datagrams
//! are (the shared secret is `radsec`). What one peer can hold is bounded:
//! [`MAX_CONNECTIONS`] connections in all (more wait in the kernel's
//! listen queue), [`MAX_CONNECTIONS_PER_ADDRESS`] from one address (more
//! are closed at once), a handshake within [`HANDSHAKE_TIMEOUT`], a packet
//! at least every [`IDLE_TIMEOUT`], [`IN_FLIGHT_PER_CONNECTION`] requests
//! in verification per connection and [`MAX_IN_FLIGHT`] over all of them,
//! and a peer that does not read its answers is disconnected.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otpcore::config::RadiusConfig;
use otpcore::radius::{code, HEADER_LEN, MAX_PACKET};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::{canonical, Peer, Reason, Server, Work, MAX_IN_FLIGHT};
use crate::accept::accept_bounded;
use crate::daemon::Shutdown;
use crate::error::{ListenError, TlsError};

/// The shared secret of every RadSec client.
pub(super) const SECRET: &[u8] = b"radsec";
/// Most RadSec connections at once.
const MAX_CONNECTIONS: usize = 256;
/// Most RadSec connections from one address at once.
const MAX_CONNECTIONS_PER_ADDRESS: usize = 32;
/// How long a connection may take from its acceptance to the end of its
/// TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may stay without a packet.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Most requests of one connection being answered at once; the next
/// packet is read when one of them is answered.
const IN_FLIGHT_PER_CONNECTION: usize = 32;
/// Answers waiting to be written on one connection; past it, the peer is
/// not reading and is disconnected.
const ANSWERS_QUEUED: usize = 2 * IN_FLIGHT_PER_CONNECTION;
/// How long the answers of a connection that the peer ended may take.
const DRAIN: Duration = Duration::from_secs(5);

/// The RadSec socket, bound, and its TLS configuration.
pub(super) struct RadsecListener {
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
}

impl RadsecListener {
    /// Loads the certificate, key and client CA and binds `radsec_listen`;
    /// `None` without it.
    pub(super) fn bind(config: &RadiusConfig) -> Result<Option<RadsecListener>, ListenError> {
        let Some((addr, cert, key, ca)) = config.radsec() else {
            return Ok(None);
        };
        let tls = tls_config(cert, key, ca)?;
        let listener =
            crate::http::listen(addr).map_err(|source| ListenError::Radsec { addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ListenError::Radsec { addr, source })?;
        Ok(Some(RadsecListener { listener, tls }))
    }

    pub(super) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves connections until `shutdown`.
    pub(super) async fn serve(self, server: Arc<Server>, shutdown: Shutdown) {
        let listener = match TcpListener::from_std(self.listener) {
            Ok(l) => l,
            Err(e) => {
                log::error!("radsec: cannot serve the listening socket: {e}");
                return;
            }
        };
        let radsec = Arc::new(Radsec {
            server,
            acceptor: TlsAcceptor::from(self.tls),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            addresses: Mutex::new(HashMap::new()),
            accepted: AtomicU64::new(0),
        });
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let stop = pin!(shutdown.clone().wait());
        accept_bounded("radsec", &listener, &slots, stop, |(stream, peer), slot| {
            let radsec = Arc::clone(&radsec);
            tokio::spawn(radsec.connection(stream, peer, shutdown.clone(), slot));
        })
        .await;
    }
}

/// The TLS configuration: the server's certificate and key, TLS 1.2 and
/// 1.3, and a client certificate that chains to the CA in `ca`.
fn tls_config(
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> Result<Arc<rustls::ServerConfig>, ListenError> {
    let (chain, private_key) = crate::http::certificate_and_key(cert, key).map_err(|source| {
        ListenError::RadsecCertificate {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        }
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        client_verifier(ca, Arc::clone(&provider)).map_err(|source| ListenError::RadsecCa {
            path: ca.to_owned(),
            source,
        })?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .and_then(|b| {
            b.with_client_cert_verifier(verifier)
                .with_single_cert(chain, private_key)
        })
        .map(Arc::new)
        .map_err(|e| ListenError::RadsecCertificate {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source: TlsError::Config(e),
        })
}

/// Requires a client certificate chaining to a CA certificate in `ca`.
fn client_verifier(
    ca: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca)? {
        roots.add(certificate?)?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCa);
    }
    Ok(
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()?,
    )
}

/// What the connections share.
struct Radsec {
    server: Arc<Server>,
    acceptor: TlsAcceptor,
    /// Requests being answered over all connections.
    in_flight: Arc<Semaphore>,
    /// Open connections by address.
    addresses: Mutex<HashMap<IpAddr, usize>>,
    /// Connections accepted so far, which numbers them.
    accepted: AtomicU64,
}

/// One connection counted against its address until dropped.
struct AddressSlot<'a> {
    radsec: &'a Radsec,
    ip: IpAddr,
}

impl<'a> AddressSlot<'a> {
    /// A slot, unless `ip` has [`MAX_CONNECTIONS_PER_ADDRESS`] already.
    fn take(radsec: &'a Radsec, ip: IpAddr) -> Option<AddressSlot<'a>> {
        let mut addresses = radsec.addresses.lock().unwrap_or_else(|e| e.into_inner());
        let open = addresses.entry(ip).or_insert(0);
        if *open >= MAX_CONNECTIONS_PER_ADDRESS {
            return None;
        }
        *open += 1;
        Some(AddressSlot { radsec, ip })
    }
}

impl Drop for AddressSlot<'_> {
    fn drop(&mut self) {
        let mut addresses = self
            .radsec
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(open) = addresses.get_mut(&self.ip) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                addresses.remove(&self.ip);
            }
        }
    }
}

/// A RadSec connection as its requests know it: where their answers go.
pub(super) struct Connection {
    pub(super) id: u64,
    pub(super) addr: SocketAddr,
    answers: mpsc::Sender<Vec<u8>>,
    /// Told when the answers queue is full: the peer does not read.
    stalled: Notify,
}

impl Connection {
    /// Queues an answer for the writer; a full queue ends the connection.
    pub(super) fn send(&self, bytes: &[u8]) {
        match self.answers.try_send(bytes.to_vec()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.stalled.notify_one(),
            // The connection is closed already.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

impl Radsec {
    /// Serves one accepted connection; `_slot` is given back at the end.
    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        shutdown: Shutdown,
        _slot: OwnedSemaphorePermit,
    ) {
        let addr = canonical(addr);
        let server = &self.server;
        let Some(index) = server.client_of(addr.ip()) else {
            server.dropped(
                addr,
                Reason::NotAClient,
                format_args!("RadSec connection: not a configured client"),
            );
            return;
        };
        let Some(_address_slot) = AddressSlot::take(&self, addr.ip()) else {
            server.dropped(
                addr,
                Reason::TooManyConnections,
                format_args!(
                    "RadSec connection: {MAX_CONNECTIONS_PER_ADDRESS} connections from this address are open already"
                ),
            );
            return;
        };
        let stream =
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    server.dropped(
                        addr,
                        Reason::Handshake,
                        format_args!("RadSec connection: TLS handshake failed: {e}"),
                    );
                    return;
                }
                Err(_) => {
                    server.dropped(
                        addr,
                        Reason::Handshake,
                        format_args!(
                            "RadSec connection: no TLS handshake within {HANDSHAKE_TIMEOUT:?}"
                        ),
                    );
                    return;
                }
            };
        let (answers, mut queued) = mpsc::channel(ANSWERS_QUEUED);
        let connection = Arc::new(Connection {
            id: self.accepted.fetch_add(1, Ordering::Relaxed),
            addr,
            answers,
            stalled: Notify::new(),
        });
        log::debug!("radsec: connection from {addr}");
        let (reader, mut writer) = tokio::io::split(stream);
        let ended = tokio::select! {
            ended = self.read(reader, &connection, index) => ended,
            () = write(&mut writer, &mut queued) => Ended::Closed,
            () = connection.stalled.notified() => {
                log::warn!("radsec: {addr} does not read its answers: connection closed");
                Ended::Closed
            }
            () = shutdown.wait() => Ended::Closed,
        };
        if ended == Ended::ByPeer {
            // The answers of its last requests are queued by now.
            queued.close();
            let _ = tokio::time::timeout(DRAIN, write(&mut writer, &mut queued)).await;
        }
        let _ = tokio::time::timeout(DRAIN, writer.shutdown()).await;
        log::debug!("radsec: connection from {addr} closed");
    }

    /// Reads and answers packets until the peer ends the connection, it
    /// stays idle too long or sends what is not a packet.
    async fn read<R: AsyncRead + Unpin>(
        &self,
        mut reader: R,
        connection: &Arc<Connection>,
        index: usize,
    ) -> Ended {
        let addr = connection.addr;
        let own = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION));
        loop {
            let next = async {
                let permits = (
                    Arc::clone(&own).acquire_owned().await.ok()?,
                    Arc::clone(&self.in_flight).acquire_owned().await.ok()?,
                );
                Some((permits, read_packet(&mut reader).await))
            };
            let (permits, packet) = match tokio::time::timeout(IDLE_TIMEOUT, next).await {
                Err(_) => {
                    log::debug!("radsec: {addr} sent nothing for {IDLE_TIMEOUT:?}: closed");
                    return Ended::Closed;
                }
                Ok(None) => return Ended::Closed,
                Ok(Some(next)) => next,
            };
            match packet {
                Ok(Some(packet)) => {
                    let peer = Peer::Tls(Arc::clone(connection));
                    if let Some(work) = self.server.packet(&packet, peer, index) {
                        let server = Arc::clone(&self.server);
                        tokio::spawn(async move {
                            server.answer(work).await;
                            drop(permits);
                        });
                    }
                }
                Ok(None) => {
                    // Until every request of the connection is answered.
                    let all = u32::try_from(IN_FLIGHT_PER_CONNECTION).unwrap_or(u32::MAX);
                    drop(permits);
                    let _ = tokio::time::timeout(DRAIN, own.acquire_many(all)).await;
                    return Ended::ByPeer;
                }
                Err(FrameError::Read(e)) => {
                    log::debug!("radsec: {addr}: {e}");
                    return Ended::Closed;
                }
                Err(e) => {
                    self.server.dropped(
                        addr,
                        Reason::Malformed,
                        format_args!("RadSec connection: {e}; connection closed"),
                    );
                    return Ended::Closed;
                }
            }
        }
    }
}

/// How a connection's reading ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The peer ended it between packets: its answers are still written.
    ByPeer,
    /// Closed by otpd.
    Closed,
}

/// Writes the queued answers, until the queue is closed and empty or a
/// write fails.
async fn write<W: AsyncWrite + Unpin>(writer: &mut W, queued: &mut mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = queued.recv().await {
        if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
}

impl Server {
    /// Checks one packet that arrived over RadSec from client `index`;
    /// answers what needs no verification and returns the Access-Requests
    /// to verify.
    fn packet(&self, packet: &[u8], peer: Peer, index: usize) -> Option<Work> {
        if self.accounting && packet.first() == Some(&code::ACCOUNTING_REQUEST) {
            let answer = self
                .radsec_clients
                .get(index)
                .and_then(|client| self.accounting_request(packet, peer.addr(), client));
            if let Some(answer) = answer {
                self.send(&answer, &peer);
            }
            return None;
        }
        self.request(packet, peer, index)
    }
}

/// Why the stream does not hold the next packet.
#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("a packet's Length field says {0}, not {HEADER_LEN} to {MAX_PACKET}")]
    BadLength(usize),
    #[error("the connection ended inside a packet")]
    Truncated,
    #[error("cannot read: {0}")]
    Read(std::io::Error),
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> FrameError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Read(e)
        }
    }
}

/// The next packet on the stream, as long as its Length field says;
/// `None` when the stream ends between packets.
async fn read_packet<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        let Some(rest) = header.get_mut(got..) else {
            break;
        };
        match reader.read(rest).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(FrameError::Truncated),
            n => got += n,
        }
    }
    let [_, _, high, low] = header;
    let length = usize::from(u16::from_be_bytes([high, low]));
    if !(HEADER_LEN..=MAX_PACKET).contains(&length) {
        return Err(FrameError::BadLength(length));
    }
    let mut packet = vec![0u8; length];
    let (start, rest) = packet.split_at_mut(header.len());
    start.copy_from_slice(&header);
    reader.read_exact(rest).await?;
    Ok(Some(packet))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    /// Every packet on `bytes`, and how the stream ended.
    fn frames(bytes: &[u8]) -> (Vec<Vec<u8>>, Option<FrameError>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut reader = bytes;
            let mut packets = Vec::new();
            loop {
                match read_packet(&mut reader).await {
                    Ok(Some(p)) => packets.push(p),
                    Ok(None) => return (packets, None),
                    Err(e) => return (packets, Some(e)),
                }
            }
        })
    }

    fn packet(code: u8, id: u8, length: u16) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(length)];
        p[0] = code;
        p[1] = id;
        p[2..4].copy_from_slice(&length.to_be_bytes());
        p
    }

    #[test]
    fn packets_follow_each_other_by_their_length() {
        let a = packet(1, 1, 20);
        let b = packet(12, 2, 4096);
        let stream = [a.clone(), b.clone()].concat();
        let (got, end) = frames(&stream);
        assert_eq!(got, vec![a, b]);
        assert!(end.is_none());
    }

    #[test]
    fn a_bad_length_ends_the_stream() {
        for length in [0u16, 19, 4097, u16::MAX] {
            let mut stream = packet(1, 1, 20);
            stream.extend_from_slice(&[1, 2]);
            stream.extend_from_slice(&length.to_be_bytes());
            stream.extend_from_slice(&[0; 64]);
            let (got, end) = frames(&stream);
            assert_eq!(got.len(), 1);
            assert!(
                matches!(end, Some(FrameError::BadLength(l)) if l == usize::from(length)),
                "{length}: {end:?}"
            );
        }
    }

    #[test]
    fn a_stream_ending_inside_a_packet_is_truncated() {
        let whole = packet(1, 1, 40);
        for cut in [1, 3, 4, 20, 39] {
            let (got, end) = frames(&whole[..cut]);
            assert!(got.is_empty());
            assert!(matches!(end, Some(FrameError::Truncated)), "{cut}: {end:?}");
        }
        assert!(frames(&[]).0.is_empty() && frames(&[]).1.is_none());
    }

    proptest! {
        /// Any bytes: the packets read are the stream's prefix, each as
        /// long as it says; the rest is a clean end, a bad length or a
        /// truncated packet.
        #[test]
        fn any_bytes_frame_or_end_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..9000)) {
            let (got, end) = frames(&bytes);
            let mut at = 0;
            for p in &got {
                let length = usize::from(u16::from_be_bytes([p[2], p[3]]));
                prop_assert_eq!(p.len(), length);
                prop_assert!((HEADER_LEN..=MAX_PACKET).contains(&length));
                prop_assert_eq!(&bytes[at..at + length], &p[..]);
                at += length;
            }
            match end {
                None => prop_assert_eq!(at, bytes.len()),
                Some(FrameError::BadLength(l)) => {
                    prop_assert!(bytes.len() >= at + 4);
                    prop_assert_eq!(l, usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])));
                    prop_assert!(!(HEADER_LEN..=MAX_PACKET).contains(&l));
                }
                Some(FrameError::Truncated) => prop_assert!(bytes.len() > at),
                Some(FrameError::Read(e)) => prop_assert!(false, "read error {}", e),
            }
        }

        /// Valid packets of any length, in any order: all read back.
        #[test]
        fn valid_packets_are_read_back(lengths in proptest::collection::vec(20u16..=4096, 0..8)) {
            let packets: Vec<Vec<u8>> = lengths.iter().enumerate().map(|(i, l)| packet(1, i as u8, *l)).collect();
            let (got, end) = frames(&packets.concat());
            prop_assert!(end.is_none());
            prop_assert_eq!(got, packets);
        }
    }
}
