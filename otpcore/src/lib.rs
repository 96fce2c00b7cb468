//! The core that `otpd`, `otpctl` and `pam_otp` share: TOTP/HOTP arithmetic,
//! the issuance input rules, the enrolment state machine and configuration.
//! The store that keeps enrolments is the crate `otpstore`.
//!
//! Free of I/O: time comes in as a parameter.

pub mod config;
pub mod enrol;
pub mod hotp;
pub mod import;
pub mod notice;
pub mod pskc;
pub mod radius;
pub mod recovery;
pub mod rules;
pub mod time;
pub mod totp;
pub mod verify;

/// This build's version, as reported by every program.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
