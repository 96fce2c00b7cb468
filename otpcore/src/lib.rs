//! The core that `otpd`, `otpctl` and `pam_otp` share: TOTP/HOTP arithmetic,
//! the issuance input rules, the enrolment state machine, configuration,
//! and (with the `store` feature) the SQLite store.
//!
//! Everything but `store` is free of I/O: time comes in as a parameter.

pub mod config;
pub mod enrol;
pub mod import;
pub mod radius;
pub mod rules;
#[cfg(feature = "store")]
pub mod store;
pub mod time;
pub mod totp;
pub mod verify;

/// This build's version, as reported by every program.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
