//! `pam_otp.so`: asks for a one-time password and has otpd verify it over
//! its Unix socket, or, on a host without an otpd node, over RADIUS.
//!
//! ```text
//! auth required pam_otp.so [socket=PATH] [nullok] [prompt=[TEXT]] [try_first_pass|use_first_pass]
//!                          [timeout_ms=N] [debug]
//! auth required pam_otp.so radius=HOST[:PORT][,HOST[:PORT]...] secret_file=PATH
//!                          [prompt=[TEXT]] [try_first_pass|use_first_pass] [timeout_ms=N] [debug]
//! ```
//!
//! The two modes differ only in who is asked ([`auth`]'s `Checker`): the
//! socket ([`client`]) or the RADIUS nodes in turn ([`radius`], on
//! otpcore's packet codec).
//!
//! This file holds only the `extern "C"` entry points that libpam calls.
//! Each one catches panics ([`guard`]) and fails closed. The logic is
//! [`auth::authenticate`], written against the small [`auth::PamHandle`]
//! trait so that it is unit-tested with a scripted conversation and a fake
//! otpd; [`ffi::LibPam`] is the real handle.
//!
//! # Why no PAM binding crate
//!
//! The design card named `pam-bindings` (0.4.0, lvkv/pam-rs). We tried it
//! first and chose our own thin FFI (src/ffi.rs, two libpam functions and
//! the conversation callback) instead:
//! - It links with `-lpam`, so building it needs the development package
//!   (libpam0g-dev): `cargo build` failed here with "unable to find library
//!   -lpam". src/ffi.rs links the runtime library `libpam.so.0` by its
//!   verbatim name, which every Linux-PAM system has.
//! - It declares edition 2024 / rust-version 1.85; this workspace promises
//!   rust-version 1.80.
//! - Its conversation wrapper types the host's callback as a *safe*
//!   `extern "C" fn` and calls it from safe code, and it leaks the
//!   response array when the conversation fails but hands one back (libpam's
//!   own `pam_prompt` frees it); its panic guard answers PAM_ABORT.
//! - Its `PamHooks` trait takes a concrete `&mut PamHandle`, so the logic
//!   would need our own trait in front of it anyway; what is left is the
//!   FFI itself, which is smaller than the dependency.
//!
//! `pam-sys` was not an option: it runs bindgen at build time (libclang and
//! the PAM headers on every build machine) and also links `-lpam -lpam_misc`.
//!
//! # Choices worth knowing
//! - The code is never put into PAM_AUTHTOK for the modules that follow: a
//!   spent one-time code is worth nothing to them, and handing it on only
//!   spreads it.
//! - The application's `PAM_DISALLOW_NULL_AUTHTOK` flag (sshd sets it unless
//!   `PermitEmptyPasswords yes`) does not turn `nullok` off: `nullok` here is
//!   about users without a token, not about empty passwords, and it yields
//!   PAM_IGNORE, never PAM_SUCCESS.
//! - Logs go to syslog (authpriv, ident `pam_otp`) through the module's own
//!   writer on /dev/log ([`syslog`]), never through `openlog`, which would
//!   change the host's ident, and never to the host's stdout or stderr. A
//!   panic, should one happen despite the lints against it, is caught but
//!   its message still goes through the process's panic hook (stderr by
//!   default): replacing the hook would change global state of the host.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod args;
pub mod auth;
pub mod client;
pub mod ffi;
pub mod radius;
pub mod syslog;

use std::ffi::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};

use auth::{Level, Log, PamCode};

/// Runs `body`, turning a panic into PAM_SERVICE_ERR (never PAM_SUCCESS) so
/// that no unwind crosses into the C host.
pub fn guard(body: impl FnOnce() -> PamCode) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(code) => code.raw(),
        Err(payload) => {
            // Dropping the payload may itself panic: catch that too, and
            // leak what cannot be dropped.
            let _ = catch_unwind(AssertUnwindSafe(|| drop(payload))).map_err(std::mem::forget);
            let _ = catch_unwind(|| {
                syslog::Syslog::default().log(Level::Err, "internal error (panic); failing closed");
            })
            .map_err(std::mem::forget);
            PamCode::SERVICE_ERR.raw()
        }
    }
}

/// `auth` stack: prompts for the code and has otpd verify it.
///
/// # Safety
///
/// Called by libpam only: `pamh` is the handle of the running transaction
/// (or null), and `argv` points to `argc` NUL-terminated strings (or is
/// null when `argc` is 0), all valid for the duration of the call.
#[allow(unsafe_code)] // the C entry point: `no_mangle`
#[no_mangle]
pub unsafe extern "C" fn pam_sm_authenticate(
    pamh: *mut ffi::pam_handle_t,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    guard(|| {
        let log = syslog::Syslog::default();
        // SAFETY: the caller (libpam) hands us a handle that is null or
        // valid for this call, which is all `LibPam::new` requires.
        let Some(handle) = (unsafe { ffi::LibPam::new(pamh) }) else {
            log.log(Level::Err, "called without a PAM handle; failing closed");
            return PamCode::SERVICE_ERR;
        };
        // SAFETY: libpam passes `argc` valid C strings in `argv`, alive for
        // this call; `module_args` copies them out.
        let Some(args) = (unsafe { ffi::module_args(argc, argv) }) else {
            log.log(Level::Err, "called with a malformed argv; failing closed");
            return PamCode::SERVICE_ERR;
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        auth::authenticate(&handle, &args, &log)
    })
}

/// Defines an entry point that only answers `$code`: the stacks where the
/// module has nothing to do.
macro_rules! fixed_answer {
    ($(#[$doc:meta])* $name:ident => $code:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        ///
        /// Called by libpam only; no pointer is dereferenced.
        #[allow(unsafe_code)] // the C entry point: `no_mangle`
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            _pamh: *mut ffi::pam_handle_t,
            _flags: c_int,
            _argc: c_int,
            _argv: *const *const c_char,
        ) -> c_int {
            guard(|| $code)
        }
    };
}

fixed_answer!(
    /// `auth` stack, credentials: nothing to establish; success.
    pam_sm_setcred => PamCode::SUCCESS
);
fixed_answer!(
    /// `account` stack: the module has no say about accounts; ignored.
    pam_sm_acct_mgmt => PamCode::IGNORE
);
fixed_answer!(
    /// `session` stack: nothing to do; ignored.
    pam_sm_open_session => PamCode::IGNORE
);
fixed_answer!(
    /// `session` stack: nothing to do; ignored.
    pam_sm_close_session => PamCode::IGNORE
);

/// `password` stack: a one-time password cannot be changed through PAM
/// (tokens are managed with otpctl). A `password` line naming this module
/// is a misconfiguration: logged, PAM_SERVICE_ERR.
///
/// # Safety
///
/// Called by libpam only; no pointer is dereferenced.
#[allow(unsafe_code)] // the C entry point: `no_mangle`
#[no_mangle]
pub unsafe extern "C" fn pam_sm_chauthtok(
    _pamh: *mut ffi::pam_handle_t,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    guard(|| {
        syslog::Syslog::default().log(
            Level::Err,
            "pam_otp does not change passwords (manage tokens with otpctl); \
             remove it from the password stack",
        );
        PamCode::SERVICE_ERR
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::ptr;

    #[test]
    fn a_panic_is_a_service_error_never_success() {
        #[allow(clippy::panic)]
        let code = guard(|| panic!("boom"));
        assert_eq!(code, PamCode::SERVICE_ERR.raw());
        assert_eq!(guard(|| PamCode::SUCCESS), 0);
    }

    #[test]
    #[allow(unsafe_code)]
    fn entry_points_without_a_handle() {
        // SAFETY: null handle and argv with argc 0 are within the contract;
        // no libpam function is reached.
        let auth = unsafe { pam_sm_authenticate(ptr::null_mut(), 0, 0, ptr::null()) };
        assert_eq!(auth, PamCode::SERVICE_ERR.raw());
        // SAFETY: as above; these entry points dereference nothing.
        let setcred = unsafe { pam_sm_setcred(ptr::null_mut(), 0, 0, ptr::null()) };
        assert_eq!(setcred, PamCode::SUCCESS.raw());
        // SAFETY: as above.
        let account = unsafe { pam_sm_acct_mgmt(ptr::null_mut(), 0, 0, ptr::null()) };
        assert_eq!(account, PamCode::IGNORE.raw());
        // SAFETY: as above.
        let open = unsafe { pam_sm_open_session(ptr::null_mut(), 0, 0, ptr::null()) };
        assert_eq!(open, PamCode::IGNORE.raw());
        // SAFETY: as above.
        let close = unsafe { pam_sm_close_session(ptr::null_mut(), 0, 0, ptr::null()) };
        assert_eq!(close, PamCode::IGNORE.raw());
        // SAFETY: as above.
        let chauthtok = unsafe { pam_sm_chauthtok(ptr::null_mut(), 0, 0, ptr::null()) };
        assert_eq!(chauthtok, PamCode::SERVICE_ERR.raw());
    }
}
