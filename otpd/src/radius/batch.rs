//! Datagrams read in batches: one `recvmmsg(2)` takes up to [`BATCH`]
//! datagrams that wait on a socket, where `recvfrom(2)` takes one, so a
//! busy socket costs one system call for many requests.

use std::io::IoSliceMut;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use otpcore::radius::MAX_PACKET;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Most datagrams one system call reads.
pub(super) const BATCH: usize = 16;

/// The buffers of one socket's batches, reused from batch to batch (the
/// system call's headers hold raw pointers, which cannot be kept across
/// an await in a task that may move between threads: they are made for
/// each batch).
pub(super) struct Batch {
    /// One byte more than the largest packet each, to see oversized ones.
    buffers: Vec<Vec<u8>>,
    /// The length and the sender of each datagram of the last batch.
    received: Vec<(usize, Option<SocketAddr>)>,
}

impl Batch {
    pub(super) fn new() -> Batch {
        Batch {
            buffers: vec![vec![0u8; MAX_PACKET + 1]; BATCH],
            received: Vec::with_capacity(BATCH),
        }
    }

    /// Waits until `socket` has datagrams and reads what is there, up to
    /// [`BATCH`]; an error when the read fails (not when there is nothing
    /// yet: then it waits again).
    pub(super) async fn receive(&mut self, socket: &UdpSocket) -> std::io::Result<()> {
        loop {
            socket.readable().await?;
            let Batch { buffers, received } = self;
            received.clear();
            let read = socket.try_io(Interest::READABLE, || {
                let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
                let mut slices: [[IoSliceMut<'_>; 1]; BATCH] =
                    std::array::from_fn(|_| [IoSliceMut::new(&mut [])]);
                for (slice, buffer) in slices.iter_mut().zip(buffers.iter_mut()) {
                    *slice = [IoSliceMut::new(buffer)];
                }
                let results = recvmmsg(
                    socket.as_raw_fd(),
                    &mut headers,
                    slices.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                )?;
                received.extend(results.map(|r| (r.bytes, r.address.and_then(socket_addr))));
                Ok(())
            });
            match read {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The datagrams of the last batch with their senders (a datagram
    /// without an Internet sender, which a UDP socket never reports, is
    /// left out).
    pub(super) fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.received
            .iter()
            .zip(&self.buffers)
            .filter_map(|((len, from), buffer)| Some((buffer.get(..*len)?, (*from)?)))
    }

    /// Zeroes the buffers (they held encrypted passwords).
    pub(super) fn clear(&mut self) {
        for buffer in &mut self.buffers {
            buffer.fill(0);
        }
        self.received.clear();
    }
}

fn socket_addr(address: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A receiving socket on `ip`, its address, and a sending socket there.
    async fn receiver_and_sender(ip: &str) -> (UdpSocket, SocketAddr, std::net::UdpSocket) {
        let socket = UdpSocket::bind((ip, 0)).await.unwrap();
        let to = socket.local_addr().unwrap();
        let sender = std::net::UdpSocket::bind((ip, 0)).unwrap();
        (socket, to, sender)
    }

    #[test]
    fn waiting_datagrams_come_in_one_batch_with_their_senders() {
        runtime().block_on(async {
            let (socket, to, a) = receiver_and_sender("127.0.0.1").await;
            let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            a.send_to(b"one", to).unwrap();
            b.send_to(b"two", to).unwrap();
            a.send_to(&[7u8; MAX_PACKET + 100], to).unwrap();
            let mut batch = Batch::new();
            let mut got: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
            while got.len() < 3 {
                batch.receive(&socket).await.unwrap();
                got.extend(batch.datagrams().map(|(d, from)| (d.to_vec(), from)));
            }
            assert_eq!(got[0], (b"one".to_vec(), a.local_addr().unwrap()));
            assert_eq!(got[1], (b"two".to_vec(), b.local_addr().unwrap()));
            // Cut at one byte past the largest packet: seen as too long.
            assert_eq!(got[2].0.len(), MAX_PACKET + 1);
            batch.clear();
            assert_eq!(batch.datagrams().count(), 0);
        });
    }

    #[test]
    fn more_than_a_batch_waiting_takes_several() {
        runtime().block_on(async {
            let (socket, to, peer) = receiver_and_sender("::1").await;
            for i in 0..(BATCH + 3) {
                peer.send_to(&[u8::try_from(i).unwrap()], to).unwrap();
            }
            let mut batch = Batch::new();
            let mut seen = Vec::new();
            let mut batches = 0;
            while seen.len() < BATCH + 3 {
                batch.receive(&socket).await.unwrap();
                batches += 1;
                assert!(batch.datagrams().count() <= BATCH);
                for (datagram, from) in batch.datagrams() {
                    assert_eq!(from, peer.local_addr().unwrap());
                    seen.extend_from_slice(datagram);
                }
            }
            assert!(batches >= 2);
            let expected: Vec<u8> = (0..(BATCH + 3)).map(|i| u8::try_from(i).unwrap()).collect();
            assert_eq!(seen, expected);
        });
    }
}
