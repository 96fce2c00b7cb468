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
