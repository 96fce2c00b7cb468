//! The part of the Linux-PAM ABI the module uses, and [`LibPam`], which
//! turns the raw handle into the safe [`PamHandle`] trait. All of the
//! crate's `unsafe` blocks but the entry points' are here; each says why it
//! is sound.
//!
//! Declarations follow `<security/pam_modules.h>` / `<security/_pam_types.h>`
//! of Linux-PAM; the values are part of its stable ABI.

#![allow(unsafe_code)] // this module is the FFI boundary

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::marker::{PhantomData, PhantomPinned};
use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};

use zeroize::{Zeroize, Zeroizing};

use crate::auth::{PamCode, PamHandle};

/// `pam_handle_t`: opaque, owned by libpam.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct pam_handle_t {
    _opaque: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// `struct pam_message`.
#[repr(C)]
pub struct PamMessage {
    pub msg_style: c_int,
    pub msg: *const c_char,
}

/// `struct pam_response`: `resp` is malloc'ed by the application and
/// freed by the module.
#[repr(C)]
pub struct PamResponse {
    pub resp: *mut c_char,
    pub resp_retcode: c_int,
}

/// The application's conversation function.
pub type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int;

/// `struct pam_conv`.
#[repr(C)]
pub struct PamConv {
    pub conv: Option<ConvFn>,
    pub appdata_ptr: *mut c_void,
}

const PAM_SERVICE: c_int = 1;
const PAM_RHOST: c_int = 4;
const PAM_CONV: c_int = 5;
const PAM_AUTHTOK: c_int = 6;

/// Message style: prompt, echo off.
pub const PAM_PROMPT_ECHO_OFF: c_int = 1;

// `libpam.so.0` by its verbatim name: the runtime library every Linux-PAM
// system has; the unversioned `libpam.so` comes only with libpam0g-dev.
#[link(name = "libpam.so.0", kind = "dylib", modifiers = "+verbatim")]
extern "C" {
    fn pam_get_item(pamh: *const pam_handle_t, item_type: c_int, item: *mut *const c_void)
        -> c_int;
    fn pam_get_user(
        pamh: *mut pam_handle_t,
        user: *mut *const c_char,
        prompt: *const c_char,
    ) -> c_int;
}

/// The handle libpam passed to an entry point, valid for that call only
/// (`LibPam` is neither `Send` nor `Sync`, and is never stored).
pub struct LibPam {
    pamh: NonNull<pam_handle_t>,
}

impl LibPam {
    /// `None` for a null handle.
    ///
    /// # Safety
    ///
    /// `pamh` is null or the handle libpam passed to the running
    /// `pam_sm_*` call, and the `LibPam` does not outlive that call.
    pub unsafe fn new(pamh: *mut pam_handle_t) -> Option<LibPam> {
        NonNull::new(pamh).map(|pamh| LibPam { pamh })
    }

    /// A string item, copied out of libpam's memory into a zeroizing
    /// buffer (`None`: unset or unavailable).
    fn item_bytes(&self, item_type: c_int) -> Option<Zeroizing<Vec<u8>>> {
        let mut item: *const c_void = ptr::null();
        // SAFETY: `pamh` is valid for this call (`LibPam::new`); `item` is a
        // valid out-pointer; `item_type` names a string item.
        let rc = unsafe { pam_get_item(self.pamh.as_ptr(), item_type, &mut item) };
        if rc != PamCode::SUCCESS.raw() || item.is_null() {
            return None;
        }
        // SAFETY: libpam stores string items NUL-terminated and keeps them
        // until the item is set again or `pam_end`; nothing in between runs
        // before the copy below.
        let text = unsafe { CStr::from_ptr(item.cast::<c_char>()) };
        Some(Zeroizing::new(text.to_bytes().to_vec()))
    }

    fn item_text(&self, item_type: c_int) -> Option<String> {
        self.item_bytes(item_type)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl PamHandle for LibPam {
    fn user(&self) -> Result<String, PamCode> {
        let mut user: *const c_char = ptr::null();
        // SAFETY: `pamh` is valid for this call; `user` is a valid
        // out-pointer; a null prompt means libpam's default prompt.
        let rc = unsafe { pam_get_user(self.pamh.as_ptr(), &mut user, ptr::null()) };
        if rc != PamCode::SUCCESS.raw() {
            return Err(PamCode::failure(rc));
        }
        if user.is_null() {
            return Err(PamCode::SYSTEM_ERR);
        }
        // SAFETY: on success `user` points to PAM_USER, a NUL-terminated
        // string owned by libpam and alive until it is set again; it is
        // copied at once.
        let bytes = unsafe { CStr::from_ptr(user) }.to_bytes().to_vec();
        String::from_utf8(bytes).map_err(|_| PamCode::USER_UNKNOWN)
    }

    fn authtok(&self) -> Option<Zeroizing<String>> {
        self.item_bytes(PAM_AUTHTOK).map(secret_string)
    }

    fn prompt_hidden(&self, text: &str) -> Result<Zeroizing<String>, PamCode> {
        let mut item: *const c_void = ptr::null();
        // SAFETY: as in `item_bytes`; PAM_CONV is a `struct pam_conv`.
        let rc = unsafe { pam_get_item(self.pamh.as_ptr(), PAM_CONV, &mut item) };
        if rc != PamCode::SUCCESS.raw() || item.is_null() {
            return Err(PamCode::CONV_ERR);
        }
        // SAFETY: the PAM_CONV item is the application's `struct pam_conv`,
        // which libpam keeps alive for the whole transaction.
        let conv = unsafe { &*item.cast::<PamConv>() };
        converse(conv, PAM_PROMPT_ECHO_OFF, text)
    }

    fn service(&self) -> Option<String> {
        self.item_text(PAM_SERVICE)
    }

    fn rhost(&self) -> Option<String> {
        self.item_text(PAM_RHOST).filter(|r| !r.is_empty())
    }
}

/// Owns the response array a conversation returned: on drop, wipes and
/// frees the answer string and frees the array (the module's duty).
struct Responses(*mut PamResponse);

impl Responses {
    /// The answer to the one message, if the application gave one.
    fn answer(&self) -> Option<&CStr> {
        if self.0.is_null() {
            return None;
        }
        // SAFETY: non-null: the application's array of (at least) one
        // `pam_response`, owned by us until drop.
        let resp = unsafe { (*self.0).resp };
        if resp.is_null() {
            return None;
        }
        // SAFETY: `resp` is a NUL-terminated string the application
        // allocated for us; it lives until drop.
        Some(unsafe { CStr::from_ptr(resp) })
    }
}

impl Drop for Responses {
    fn drop(&mut self) {
        if self.0.is_null() {
            return;
        }
        if let Some(len) = self.answer().map(|a| a.to_bytes().len()) {
            // SAFETY: `answer` returned Some, so the array is non-null and
            // holds a response.
            let resp = unsafe { (*self.0).resp };
            // SAFETY: `resp` holds `len` bytes before its NUL and is ours to
            // write (the application handed it over).
            unsafe { std::slice::from_raw_parts_mut(resp.cast::<u8>(), len) }.zeroize();
            // SAFETY: allocated by the application with malloc, handed over
            // to us, freed once, never used after.
            unsafe { libc::free(resp.cast::<c_void>()) };
        }
        // SAFETY: the array was allocated with malloc by the application
        // and handed over to us; freed once.
        unsafe { libc::free(self.0.cast::<c_void>()) };
    }
}

/// Sends one message of `style` through the application's conversation
/// and returns its answer. A failed conversation, or one without an
/// answer, is PAM_CONV_ERR; a prompt holding a NUL is PAM_BUF_ERR.
pub fn converse(conv: &PamConv, style: c_int, text: &str) -> Result<Zeroizing<String>, PamCode> {
    let text = CString::new(text).map_err(|_| PamCode::BUF_ERR)?;
    let Some(conv_fn) = conv.conv else {
        return Err(PamCode::CONV_ERR);
    };
    let message = PamMessage {
        msg_style: style,
        msg: text.as_ptr(),
    };
    let mut messages: [*const PamMessage; 1] = [&message];
    let mut responses: *mut PamResponse = ptr::null_mut();
    // SAFETY: the function and `appdata_ptr` come from the application's
    // `struct pam_conv`; `messages` is an array of one valid message whose
    // text outlives the call; `responses` is a valid out-pointer.
    let rc = unsafe { conv_fn(1, messages.as_mut_ptr(), &mut responses, conv.appdata_ptr) };
    // Like libpam's own pam_prompt: whatever array came back is ours to
    // free, even when the conversation reports a failure.
    let responses = Responses(responses);
    if rc != PamCode::SUCCESS.raw() {
        return Err(PamCode::CONV_ERR);
    }
    let answer = responses.answer().ok_or(PamCode::CONV_ERR)?;
    let answer = Zeroizing::new(answer.to_bytes().to_vec());
    drop(responses);
    Ok(secret_string(answer))
}

/// Bytes of a secret as text, without leaving an un-wiped copy behind
/// (invalid UTF-8 is replaced, so a garbled code is still checked, and
/// refused, by otpd).
pub fn secret_string(mut bytes: Zeroizing<Vec<u8>>) -> Zeroizing<String> {
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Zeroizing::new(text),
        Err(e) => {
            let raw = Zeroizing::new(e.into_bytes());
            Zeroizing::new(String::from_utf8_lossy(&raw).into_owned())
        }
    }
}

/// The module arguments of the PAM configuration line, copied (`None` for
/// a malformed argv).
///
/// # Safety
///
/// When `argc > 0`, `argv` points to `argc` pointers, each null or a
/// NUL-terminated string, all valid for the duration of the call.
pub unsafe fn module_args(argc: c_int, argv: *const *const c_char) -> Option<Vec<String>> {
    let count = usize::try_from(argc).ok()?;
    if count == 0 {
        return Some(Vec::new());
    }
    if argv.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees `argc` readable pointers at `argv`.
    let pointers = unsafe { std::slice::from_raw_parts(argv, count) };
    pointers
        .iter()
        .map(|&arg| {
            if arg.is_null() {
                return None;
            }
            // SAFETY: non-null, so a NUL-terminated string (caller's
            // guarantee), alive for this call; copied at once.
            let text = unsafe { CStr::from_ptr(arg) };
            Some(text.to_string_lossy().into_owned())
        })
        .collect()
}

/// The host's name as gethostname(2) gives it; `None` when it has none,
/// or when it is not UTF-8.
pub fn host_name() -> Option<String> {
    let mut buffer = [0u8; 256];
    // SAFETY: the pointer and length describe `buffer`, which
    // gethostname writes at most that many bytes into.
    let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast::<c_char>(), buffer.len()) };
    if rc != 0 {
        return None;
    }
    // A name cut to the buffer may lack its NUL: no name then.
    let end = buffer.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(buffer.get(..end)?).ok()?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// `Mmm dd hh:mm:ss` in local time, as syslog(3) stamps its lines.
pub fn local_timestamp(unix: libc::time_t) -> Option<String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut tm = MaybeUninit::<libc::tm>::uninit();
    // SAFETY: both pointers are valid; localtime_r is the thread-safe form
    // and writes only into `tm`.
    let filled = unsafe { libc::localtime_r(&unix, tm.as_mut_ptr()) };
    if filled.is_null() {
        return None;
    }
    // SAFETY: localtime_r returned non-null, so it initialised `tm`.
    let tm = unsafe { tm.assume_init() };
    let month = MONTHS.get(usize::try_from(tm.tm_mon).ok()?)?;
    Some(format!(
        "{month} {:>2} {:02}:{:02}:{:02}",
        tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec
    ))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// What a fake application's conversation does.
    struct Script {
        answer: Option<&'static [u8]>,
        rc: c_int,
        give_array: bool,
        seen: RefCell<Vec<(c_int, c_int, String)>>,
    }

    impl Script {
        fn new(answer: Option<&'static [u8]>, rc: c_int, give_array: bool) -> Script {
            Script {
                answer,
                rc,
                give_array,
                seen: RefCell::new(Vec::new()),
            }
        }

        fn conv(&self) -> PamConv {
            PamConv {
                conv: Some(fake_conv),
                appdata_ptr: ptr::from_ref(self).cast_mut().cast::<c_void>(),
            }
        }
    }

    /// An application's conversation: records the message, answers with
    /// malloc'ed memory as applications do. Never panics (it is C ABI).
    unsafe extern "C" fn fake_conv(
        num_msg: c_int,
        msg: *mut *const PamMessage,
        resp: *mut *mut PamResponse,
        appdata_ptr: *mut c_void,
    ) -> c_int {
        // SAFETY: the tests pass a `&Script` as appdata.
        let script = unsafe { &*appdata_ptr.cast::<Script>() };
        // SAFETY: `converse` passes an array of one message pointer.
        let first = unsafe { *msg };
        // SAFETY: that pointer is valid for the call.
        let message = unsafe { &*first };
        // SAFETY: the message text is a valid C string for the call.
        let text = unsafe { CStr::from_ptr(message.msg) };
        script.seen.borrow_mut().push((
            num_msg,
            message.msg_style,
            text.to_string_lossy().into_owned(),
        ));
        if script.give_array {
            // SAFETY: plain allocation of one zeroed response.
            let array = unsafe { libc::calloc(1, std::mem::size_of::<PamResponse>()) }
                .cast::<PamResponse>();
            if let (false, Some(answer)) = (array.is_null(), script.answer) {
                let owned = CString::new(answer).unwrap_or_default();
                // SAFETY: strdup copies a valid C string into malloc'ed memory.
                let copy = unsafe { libc::strdup(owned.as_ptr()) };
                // SAFETY: `array` is a non-null allocation of one response.
                unsafe { (*array).resp = copy };
            }
            // SAFETY: `resp` is converse's valid out-pointer.
            unsafe { *resp = array };
        }
        script.rc
    }

    #[test]
    fn conversation_answer() {
        let script = Script::new(Some(b"924683"), 0, true);
        let answer = converse(&script.conv(), PAM_PROMPT_ECHO_OFF, "One-time password: ");
        assert_eq!(answer.unwrap().as_str(), "924683");
        assert_eq!(
            *script.seen.borrow(),
            vec![(1, PAM_PROMPT_ECHO_OFF, "One-time password: ".to_owned())]
        );
        let script = Script::new(Some(b"12\xff34"), 0, true);
        let answer = converse(&script.conv(), PAM_PROMPT_ECHO_OFF, "x").unwrap();
        assert_eq!(answer.as_str(), "12\u{fffd}34");
    }

    #[test]
    fn conversation_failures() {
        // Failure with an answer anyway: CONV_ERR (and the array is freed).
        let script = Script::new(Some(b"924683"), PamCode::CONV_ERR.raw(), true);
        assert_eq!(
            converse(&script.conv(), PAM_PROMPT_ECHO_OFF, "x").unwrap_err(),
            PamCode::CONV_ERR
        );
        // "Success" without an array, or with a null answer.
        for script in [Script::new(None, 0, false), Script::new(None, 0, true)] {
            assert_eq!(
                converse(&script.conv(), PAM_PROMPT_ECHO_OFF, "x").unwrap_err(),
                PamCode::CONV_ERR
            );
        }
        // No function at all.
        let none = PamConv {
            conv: None,
            appdata_ptr: ptr::null_mut(),
        };
        assert_eq!(
            converse(&none, PAM_PROMPT_ECHO_OFF, "x").unwrap_err(),
            PamCode::CONV_ERR
        );
        // A prompt with a NUL never reaches the application.
        let script = Script::new(Some(b"1"), 0, true);
        assert_eq!(
            converse(&script.conv(), PAM_PROMPT_ECHO_OFF, "a\0b").unwrap_err(),
            PamCode::BUF_ERR
        );
        assert!(script.seen.borrow().is_empty());
    }

    #[test]
    fn null_handle() {
        // SAFETY: null is allowed.
        assert!(unsafe { LibPam::new(ptr::null_mut()) }.is_none());
    }

    #[test]
    fn argv_copies() {
        let args = [c"socket=/run/x.sock".as_ptr(), c"nullok".as_ptr()];
        // SAFETY: two valid C strings.
        let copied = unsafe { module_args(2, args.as_ptr()) }.unwrap();
        assert_eq!(copied, vec!["socket=/run/x.sock", "nullok"]);
        // SAFETY: argc 0 never reads argv.
        assert_eq!(unsafe { module_args(0, ptr::null()) }, Some(Vec::new()));
        // SAFETY: negative argc is refused before reading.
        assert_eq!(unsafe { module_args(-1, args.as_ptr()) }, None);
        // SAFETY: null argv with argc > 0 is refused before reading.
        assert_eq!(unsafe { module_args(1, ptr::null()) }, None);
        let with_null = [c"nullok".as_ptr(), ptr::null()];
        // SAFETY: two pointers, the second null (refused).
        assert_eq!(unsafe { module_args(2, with_null.as_ptr()) }, None);
    }

    #[test]
    fn secrets_and_stamps() {
        assert_eq!(
            secret_string(Zeroizing::new(b"123".to_vec())).as_str(),
            "123"
        );
        assert_eq!(
            secret_string(Zeroizing::new(b"1\xff".to_vec())).as_str(),
            "1\u{fffd}"
        );
        let stamp = local_timestamp(86_400 * 40).unwrap();
        assert_eq!(stamp.len(), 15, "{stamp}");
        assert!(stamp.starts_with("Feb "), "{stamp}");
    }

    #[test]
    fn host_name_is_the_kernels() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(host_name().as_deref(), Some(kernel.trim_end()));
    }
}
