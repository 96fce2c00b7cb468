//! otpd's in-process tests, in one program: its listeners on loopback
//! ports and temporary sockets, each over a daemon with a store of its own,
//! driven through the library's public API (the router, the listeners,
//! the daemon).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod http;
mod http_proptests;
mod metrics;
mod radius;
mod retention;
mod socket_proptests;
