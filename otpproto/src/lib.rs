//! What the programs of otpd share beyond the core's arithmetic: the
//! protocols of otpd's Unix socket and of its self-service socket, the
//! clock, and how text from outside (user names, peer labels, module
//! arguments) is written into a log line or the audit trail. No I/O, no async runtime, nothing but serde and
//! serde_json, so the PAM module can link it into any host.

pub mod clock;
pub mod logtext;
pub mod selfservice;
pub mod socket;
