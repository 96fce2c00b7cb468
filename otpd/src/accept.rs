//! Accepting connections with a bound, for the HTTP listener and the Unix
//! socket alike: each connection holds a slot until it ends, and while every
//! slot is taken further connections wait in the kernel's listen queue, where
//! they cost otpd no descriptor. A failed accept (out of descriptors, say)
//! pauses with a growing delay and is logged once, not once a try.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// After a failed accept, the pause before the next try: it starts at the
/// first value and doubles up to the second.
const ACCEPT_PAUSE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

/// A listening socket whose connections [`accept_bounded`] hands out.
pub trait Listener {
    type Connection;
    fn accept_one(&self) -> impl Future<Output = io::Result<Self::Connection>> + Send;
}

impl Listener for TcpListener {
    type Connection = (TcpStream, SocketAddr);
    fn accept_one(&self) -> impl Future<Output = io::Result<Self::Connection>> + Send {
        self.accept()
    }
}

impl Listener for UnixListener {
    type Connection = UnixStream;
    async fn accept_one(&self) -> io::Result<UnixStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Accepts connections until `stop` and hands each to `serve` with the slot
/// it holds; at most `slots`' permits are out at once. `what` names the
/// listener in the log.
pub async fn accept_bounded<L: Listener>(
    what: &str,
    listener: &L,
    slots: &Arc<Semaphore>,
    mut stop: Pin<&mut impl Future<Output = ()>>,
    mut serve: impl FnMut(L::Connection, OwnedSemaphorePermit),
) {
    let mut full = false;
    let mut failures = 0u64;
    let mut pause = ACCEPT_PAUSE.0;
    loop {
        let slot = match Arc::clone(slots).try_acquire_owned() {
            Ok(slot) => {
                full = false;
                slot
            }
            Err(_) => {
                if !full {
                    log::warn!("{what}: every connection slot is taken; new connections wait");
                    full = true;
                }
                tokio::select! {
                    () = &mut stop => return,
                    slot = Arc::clone(slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => return,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept_one() => accepted,
        };
        match accepted {
            Ok(connection) => {
                if failures > 0 {
                    log::info!("{what}: accepting again after {failures} failed tries");
                    failures = 0;
                    pause = ACCEPT_PAUSE.0;
                }
                serve(connection, slot);
            }
            // The connection stays queued: pause instead of trying again
            // at once.
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    log::error!("{what}: accept failed: {e}; pausing between tries");
                }
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(ACCEPT_PAUSE.1);
            }
        }
    }
}
