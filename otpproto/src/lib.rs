//! What the programs of otpd share beyond the core's arithmetic: for now,
//! how text from outside (user names, peer labels, module arguments) is
//! written into a log line or the audit trail. No I/O, no async runtime,
//! no dependencies, so the PAM module can link it into any host.

pub mod logtext;
