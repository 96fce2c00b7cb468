//! The module's logic, free of FFI: [`authenticate`] over a [`PamHandle`]
//! (libpam in production, a scripted fake in tests) and a [`Log`], asking
//! otpd over its Unix socket or over RADIUS.

#![forbid(unsafe_code)]

use std::ffi::c_int;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use otpproto::socket::{Answer, MAX_OTP_LEN, MAX_USER_LEN};
use zeroize::Zeroizing;

use crate::args::{Backend, FirstPass, Options};
use crate::client;
use crate::radius::{self, Remote, RemoteError, SecretError};

/// A PAM return code (Linux-PAM's values).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PamCode(c_int);

impl PamCode {
    pub const SUCCESS: PamCode = PamCode(0);
    pub const SERVICE_ERR: PamCode = PamCode(3);
    pub const SYSTEM_ERR: PamCode = PamCode(4);
    pub const BUF_ERR: PamCode = PamCode(5);
    pub const AUTH_ERR: PamCode = PamCode(7);
    pub const AUTHINFO_UNAVAIL: PamCode = PamCode(9);
    pub const USER_UNKNOWN: PamCode = PamCode(10);
    pub const CONV_ERR: PamCode = PamCode(19);
    pub const IGNORE: PamCode = PamCode(25);

    /// The value handed back to libpam.
    pub const fn raw(self) -> c_int {
        self.0
    }

    /// A code libpam returned for a failed call. Should a failure path
    /// ever carry PAM_SUCCESS or PAM_IGNORE, it becomes PAM_SERVICE_ERR:
    /// a failure never lets the user through.
    pub fn failure(raw: c_int) -> PamCode {
        match PamCode(raw) {
            PamCode::SUCCESS | PamCode::IGNORE => PamCode::SERVICE_ERR,
            code => code,
        }
    }

    fn name(self) -> Option<&'static str> {
        Some(match self {
            PamCode::SUCCESS => "PAM_SUCCESS",
            PamCode::SERVICE_ERR => "PAM_SERVICE_ERR",
            PamCode::SYSTEM_ERR => "PAM_SYSTEM_ERR",
            PamCode::BUF_ERR => "PAM_BUF_ERR",
            PamCode::AUTH_ERR => "PAM_AUTH_ERR",
            PamCode::AUTHINFO_UNAVAIL => "PAM_AUTHINFO_UNAVAIL",
            PamCode::USER_UNKNOWN => "PAM_USER_UNKNOWN",
            PamCode::CONV_ERR => "PAM_CONV_ERR",
            PamCode::IGNORE => "PAM_IGNORE",
            _ => return None,
        })
    }
}

impl fmt::Debug for PamCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "PAM error {}", self.0),
        }
    }
}

/// What the module needs from libpam. Every failure is a PAM code that is
/// neither PAM_SUCCESS nor PAM_IGNORE.
pub trait PamHandle {
    /// The user name: PAM_USER (through `pam_get_user`, which asks the
    /// application's conversation only when the application set none).
    fn user(&self) -> Result<String, PamCode>;
    /// PAM_AUTHTOK as an earlier module left it, if any.
    fn authtok(&self) -> Option<Zeroizing<String>>;
    /// Asks the user through the conversation with echo off
    /// (PAM_PROMPT_ECHO_OFF) and returns the answer.
    fn prompt_hidden(&self, text: &str) -> Result<Zeroizing<String>, PamCode>;
    /// PAM_SERVICE (e.g. "sshd").
    fn service(&self) -> Option<String>;
    /// PAM_RHOST, the remote host, if the application set it.
    fn rhost(&self) -> Option<String>;
}

/// Syslog severities used by the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Err,
    Warning,
    Notice,
    Info,
    Debug,
}

/// Where the module's log lines go (syslog authpriv in production). Must
/// not fail or panic; a line that cannot be written is dropped.
pub trait Log {
    fn log(&self, level: Level, message: &str);
}

/// A value from PAM or otpd as one field of a log line: at most 64
/// characters in double quotes (`…` after the closing quote when cut), a
/// quote inside doubled, so the field ends only at its closing quote.
/// Control, format and separator characters are escaped with the whole
/// line, where it is written ([`crate::syslog::format_line`]).
pub fn shown(text: &str) -> String {
    let mut chars = text.chars();
    let mut field = String::with_capacity(text.len().min(256) + 2);
    field.push('"');
    for c in chars.by_ref().take(64) {
        if c == '"' {
            field.push_str("\"\"");
        } else {
            field.push(c);
        }
    }
    field.push('"');
    if chars.next().is_some() {
        field.push('…');
    }
    field
}

fn who(user: &str, service: Option<&str>, rhost: Option<&str>) -> String {
    let mut who = format!("user {}", shown(user));
    if let Some(service) = service {
        who.push_str(&format!(" service {}", shown(service)));
    }
    if let Some(rhost) = rhost {
        who.push_str(&format!(" rhost {}", shown(rhost)));
    }
    who
}

/// Who checks the code: otpd over its Unix socket, or otpd nodes over
/// RADIUS. The only difference between the two modes; everything around
/// the question (arguments, user, prompt, answers, log lines) is shared.
enum Checker<'a> {
    Socket(&'a Path),
    Radius(Remote),
}

impl fmt::Display for Checker<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checker::Socket(path) => write!(f, "{}", path.display()),
            Checker::Radius(remote) => write!(f, "{remote}"),
        }
    }
}

/// Why a question got no answer.
enum Failure {
    /// The question cannot be asked (too long for the transport): the
    /// user is refused without asking.
    Refused(String),
    /// No usable answer: fail closed.
    Unusable(String),
}

/// What is asked.
struct Question<'a> {
    user: &'a str,
    otp: &'a str,
    service: Option<&'a str>,
    rhost: Option<&'a str>,
    nullok: bool,
}

impl Checker<'_> {
    /// Prepares the checker of `options`: for RADIUS, reads the secret
    /// file, which must belong to `secret_owner` and to nobody else's eyes.
    fn new(options: &Options, secret_owner: u32) -> Result<Checker<'_>, SecretError> {
        match &options.backend {
            Backend::Socket(path) => Ok(Checker::Socket(path)),
            Backend::Radius {
                servers,
                secret_file,
            } => {
                let secret = radius::load_secret(secret_file, secret_owner)?;
                Ok(Checker::Radius(Remote::new(
                    servers.clone(),
                    secret,
                    options.timeout,
                )))
            }
        }
    }

    fn ask(
        &self,
        question: &Question<'_>,
        timeout: Duration,
        log: &dyn Log,
        who: &str,
    ) -> Result<Answer, Failure> {
        match self {
            Checker::Socket(path) => {
                let request = client::verify_request(
                    question.user,
                    question.otp,
                    question.service,
                    question.rhost,
                    question.nullok,
                )
                .ok_or_else(|| Failure::Refused("the request would exceed 4 KiB".to_owned()))?;
                client::exchange(path, &request, timeout)
                    .map_err(|e| Failure::Unusable(e.to_string()))
            }
            Checker::Radius(remote) => {
                remote
                    .ask(question.user, question.otp, log, who)
                    .map_err(|e| match e {
                        RemoteError::Request(e) => {
                            Failure::Refused(format!("the RADIUS request cannot carry it ({e})"))
                        }
                        RemoteError::NoAnswer(_) => Failure::Unusable(e.to_string()),
                    })
            }
        }
    }
}

/// `pam_sm_authenticate`: the code from the user (or PAM_AUTHTOK), checked
/// by otpd, over its socket or over RADIUS.
///
/// accept → PAM_SUCCESS; reject → PAM_AUTH_ERR; ignore (a user without a
/// token, `nullok` sent) → PAM_IGNORE; an error answer, no daemon, a
/// timeout, a malformed answer, or an unusable RADIUS secret file →
/// PAM_AUTHINFO_UNAVAIL; bad arguments → PAM_SERVICE_ERR. Nothing else
/// lets a user through, and there is no fallback to local files. Neither
/// the code nor the RADIUS secret ever reaches a log line.
pub fn authenticate(pam: &dyn PamHandle, args: &[&str], log: &dyn Log) -> PamCode {
    authenticate_with(pam, args, log, SECRET_OWNER)
}

/// Who must own the RADIUS secret file: root.
const SECRET_OWNER: u32 = 0;

/// [`authenticate`] with the owner the RADIUS secret file must have (root,
/// but for tests that cannot make root's files).
fn authenticate_with(
    pam: &dyn PamHandle,
    args: &[&str],
    log: &dyn Log,
    secret_owner: u32,
) -> PamCode {
    let options = match Options::parse(args) {
        Ok(options) => options,
        Err(e) => {
            log.log(
                Level::Err,
                &format!("bad module arguments in the PAM configuration: {e}; failing closed"),
            );
            return PamCode::SERVICE_ERR;
        }
    };
    let checker = match Checker::new(&options, secret_owner) {
        Ok(checker) => checker,
        Err(e) => {
            log.log(
                Level::Err,
                &format!(
                    "cannot use the RADIUS secret file: {e}; PAM_AUTHINFO_UNAVAIL \
                     (no fallback)"
                ),
            );
            return PamCode::AUTHINFO_UNAVAIL;
        }
    };
    let user = match pam.user() {
        Ok(user) => user,
        Err(code) => {
            let code = PamCode::failure(code.raw());
            log.log(
                Level::Err,
                &format!("cannot get the user name (PAM_USER): {code:?}"),
            );
            return code;
        }
    };
    let service = pam.service();
    let rhost = pam.rhost();
    let who = who(&user, service.as_deref(), rhost.as_deref());
    if user.is_empty() || user.len() > MAX_USER_LEN || user.chars().any(char::is_control) {
        log.log(
            Level::Notice,
            &format!("refused {who}: not a user name otpd accepts"),
        );
        return PamCode::AUTH_ERR;
    }

    let otp = match code_from_user(pam, &options, log, &who) {
        Ok(otp) => otp,
        Err(code) => return code,
    };
    if otp.len() > MAX_OTP_LEN {
        log.log(
            Level::Notice,
            &format!("refused {who}: the code is longer than {MAX_OTP_LEN} characters"),
        );
        return PamCode::AUTH_ERR;
    }

    if options.debug {
        log.log(
            Level::Debug,
            &format!(
                "asking otpd at {checker} (timeout {} ms{}{}) about {who}",
                options.timeout.as_millis(),
                if matches!(checker, Checker::Radius(_)) {
                    " each"
                } else {
                    ""
                },
                if options.nullok { ", nullok" } else { "" }
            ),
        );
    }
    let question = Question {
        user: &user,
        otp: &otp,
        service: service.as_deref(),
        rhost: rhost.as_deref(),
        nullok: options.nullok,
    };
    let answer = checker.ask(&question, options.timeout, log, &who);
    drop(otp);
    match answer {
        Ok(Answer::Accept) => {
            log.log(Level::Info, &format!("accepted {who}"));
            PamCode::SUCCESS
        }
        Ok(Answer::Reject) => {
            log.log(
                Level::Notice,
                &format!("refused {who}: otpd rejected the code"),
            );
            PamCode::AUTH_ERR
        }
        Ok(Answer::Ignore) if options.nullok => {
            log.log(
                Level::Info,
                &format!("{who} has no token; nullok: PAM_IGNORE, the rest of the stack decides"),
            );
            PamCode::IGNORE
        }
        Ok(Answer::Ignore) => {
            log.log(
                Level::Err,
                &format!(
                    "otpd at {checker} answered \"ignore\" to a request without nullok; \
                     refusing {who}"
                ),
            );
            PamCode::AUTH_ERR
        }
        Ok(Answer::Error(message)) => {
            log.log(
                Level::Err,
                &format!(
                    "otpd at {checker} answered an error for {who}: {}; \
                     PAM_AUTHINFO_UNAVAIL",
                    shown(&message)
                ),
            );
            PamCode::AUTHINFO_UNAVAIL
        }
        Err(Failure::Refused(why)) => {
            log.log(Level::Notice, &format!("refused {who}: {why}"));
            PamCode::AUTH_ERR
        }
        Err(Failure::Unusable(e)) => {
            log.log(
                Level::Err,
                &format!(
                    "otpd at {checker} unusable for {who}: {e}; PAM_AUTHINFO_UNAVAIL \
                     (no fallback)"
                ),
            );
            PamCode::AUTHINFO_UNAVAIL
        }
    }
}

/// The code: PAM_AUTHTOK under `try_first_pass`/`use_first_pass` when an
/// earlier module set it, otherwise the answer to the prompt.
fn code_from_user(
    pam: &dyn PamHandle,
    options: &Options,
    log: &dyn Log,
    who: &str,
) -> Result<Zeroizing<String>, PamCode> {
    let authtok = match options.first_pass {
        FirstPass::Prompt => None,
        FirstPass::Try | FirstPass::Use => pam.authtok().filter(|t| !t.is_empty()),
    };
    if let Some(authtok) = authtok {
        if options.debug {
            log.log(
                Level::Debug,
                &format!("code for {who} taken from PAM_AUTHTOK"),
            );
        }
        return Ok(authtok);
    }
    if options.first_pass == FirstPass::Use {
        log.log(
            Level::Notice,
            &format!("refused {who}: use_first_pass, but no earlier module set PAM_AUTHTOK"),
        );
        return Err(PamCode::AUTH_ERR);
    }
    pam.prompt_hidden(&options.prompt).map_err(|code| {
        let code = PamCode::failure(code.raw());
        log.log(
            Level::Err,
            &format!("the conversation failed for {who}: {code:?}"),
        );
        code
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    const CODE: &str = "924683";

    /// A scripted PAM handle.
    struct FakePam {
        user: Result<String, PamCode>,
        authtok: Option<String>,
        answers: RefCell<VecDeque<Result<String, PamCode>>>,
        prompts: RefCell<Vec<String>>,
        service: Option<String>,
        rhost: Option<String>,
    }

    impl FakePam {
        fn new(user: &str, answer: &str) -> FakePam {
            FakePam {
                user: Ok(user.to_owned()),
                authtok: None,
                answers: RefCell::new(VecDeque::from([Ok(answer.to_owned())])),
                prompts: RefCell::new(Vec::new()),
                service: Some("sshd".to_owned()),
                rhost: Some("203.0.113.5".to_owned()),
            }
        }

        fn prompts(&self) -> Vec<String> {
            self.prompts.borrow().clone()
        }
    }

    impl PamHandle for FakePam {
        fn user(&self) -> Result<String, PamCode> {
            self.user.clone()
        }
        fn authtok(&self) -> Option<Zeroizing<String>> {
            self.authtok.clone().map(Zeroizing::new)
        }
        fn prompt_hidden(&self, text: &str) -> Result<Zeroizing<String>, PamCode> {
            self.prompts.borrow_mut().push(text.to_owned());
            self.answers
                .borrow_mut()
                .pop_front()
                .unwrap_or(Err(PamCode::CONV_ERR))
                .map(Zeroizing::new)
        }
        fn service(&self) -> Option<String> {
            self.service.clone()
        }
        fn rhost(&self) -> Option<String> {
            self.rhost.clone()
        }
    }

    #[derive(Default)]
    struct FakeLog(RefCell<Vec<(Level, String)>>);

    impl Log for FakeLog {
        fn log(&self, level: Level, message: &str) {
            self.0.borrow_mut().push((level, message.to_owned()));
        }
    }

    impl FakeLog {
        fn text(&self) -> String {
            self.0
                .borrow()
                .iter()
                .map(|(l, m)| format!("{l:?}: {m}\n"))
                .collect()
        }

        fn assert_no_code(&self) {
            assert!(
                !self.text().contains(CODE),
                "the code was logged:\n{}",
                self.text()
            );
        }
    }

    /// What the fake otpd does with the one connection it accepts.
    enum Behaviour {
        Reply(Vec<u8>),
        Silent(Duration),
        Close,
    }

    /// A fake otpd on a Unix socket in a temp dir: accepts one connection,
    /// reads one line, acts; `join` returns the request line.
    struct FakeOtpd {
        _dir: tempfile::TempDir,
        path: PathBuf,
        thread: JoinHandle<String>,
    }

    impl FakeOtpd {
        fn start(behaviour: Behaviour) -> FakeOtpd {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("otpd.sock");
            let listener = UnixListener::bind(&path).unwrap();
            let thread = std::thread::spawn(move || {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut stream = reader.into_inner();
                match behaviour {
                    Behaviour::Reply(bytes) => {
                        let _ = stream.write_all(&bytes);
                    }
                    Behaviour::Silent(time) => std::thread::sleep(time),
                    Behaviour::Close => {}
                }
                line
            });
            FakeOtpd {
                _dir: dir,
                path,
                thread,
            }
        }

        fn replying(line: &str) -> FakeOtpd {
            FakeOtpd::start(Behaviour::Reply(format!("{line}\n").into_bytes()))
        }

        fn arg(&self) -> String {
            format!("socket={}", self.path.display())
        }

        fn request(self) -> serde_json::Value {
            let line = self.thread.join().unwrap();
            assert!(line.ends_with('\n'), "request not one line: {line:?}");
            serde_json::from_str(&line).unwrap()
        }
    }

    fn run(pam: &FakePam, args: &[&str]) -> (PamCode, FakeLog) {
        let log = FakeLog::default();
        let code = authenticate(pam, args, &log);
        log.assert_no_code();
        (code, log)
    }

    #[test]
    fn accept_is_success_and_the_request_is_the_contract() {
        let otpd = FakeOtpd::replying(r#"{"result":"accept"}"#);
        let pam = FakePam::new("alice", CODE);
        let (code, log) = run(&pam, &[&otpd.arg()]);
        assert_eq!(code, PamCode::SUCCESS, "{}", log.text());
        assert_eq!(pam.prompts(), vec!["One-time password: ".to_owned()]);
        assert_eq!(
            otpd.request(),
            serde_json::json!({"op":"verify","user":"alice","otp":CODE,
                               "service":"sshd","rhost":"203.0.113.5"})
        );
        assert!(
            log.text().contains("accepted user \"alice\""),
            "{}",
            log.text()
        );
    }

    #[test]
    fn reject_is_auth_err() {
        let otpd = FakeOtpd::replying(r#"{"result":"reject"}"#);
        let pam = FakePam::new("alice", CODE);
        let (code, log) = run(&pam, &[&otpd.arg()]);
        assert_eq!(code, PamCode::AUTH_ERR, "{}", log.text());
        assert!(otpd.request().get("nullok").is_none());
    }

    #[test]
    fn ignore_only_with_nullok() {
        let otpd = FakeOtpd::replying(r#"{"result":"ignore"}"#);
        let mut pam = FakePam::new("carol", "");
        pam.service = None;
        pam.rhost = None;
        let (code, log) = run(&pam, &[&otpd.arg(), "nullok"]);
        assert_eq!(code, PamCode::IGNORE, "{}", log.text());
        assert_eq!(
            otpd.request(),
            serde_json::json!({"op":"verify","user":"carol","otp":"","nullok":true})
        );

        let otpd = FakeOtpd::replying(r#"{"result":"ignore"}"#);
        let pam = FakePam::new("carol", CODE);
        let (code, log) = run(&pam, &[&otpd.arg()]);
        assert_eq!(
            code,
            PamCode::AUTH_ERR,
            "ignore without nullok: {}",
            log.text()
        );
        assert!(log.text().contains("without nullok"), "{}", log.text());
    }

    #[test]
    fn error_answer_is_authinfo_unavail_and_logged() {
        let otpd = FakeOtpd::replying(r#"{"result":"error","message":"permission denied"}"#);
        let pam = FakePam::new("alice", CODE);
        let (code, log) = run(&pam, &[&otpd.arg()]);
        assert_eq!(code, PamCode::AUTHINFO_UNAVAIL);
        assert!(log.text().contains("permission denied"), "{}", log.text());
        assert!(log.0.borrow().iter().any(|(l, _)| *l == Level::Err));
    }

    #[test]
    fn garbage_answers_are_authinfo_unavail() {
        let long = format!("{{\"result\":\"accept\",\"x\":\"{}\"}}\n", "y".repeat(5000));
        for reply in [
            b"accept\n".to_vec(),
            b"{\"result\":\"ok\",\"version\":\"0.1.0\"}\n".to_vec(),
            b"{\"result\":\"accept\"".to_vec(),
            b"\n".to_vec(),
            b"\xff\n".to_vec(),
            long.into_bytes(),
            vec![b'x'; 9000],
        ] {
            let otpd = FakeOtpd::start(Behaviour::Reply(reply.clone()));
            let pam = FakePam::new("alice", CODE);
            let (code, log) = run(&pam, &[&otpd.arg()]);
            assert_eq!(
                code,
                PamCode::AUTHINFO_UNAVAIL,
                "{:?}: {}",
                String::from_utf8_lossy(&reply),
                log.text()
            );
            otpd.request();
        }
        // A whole last line without its newline is still an answer.
        let otpd = FakeOtpd::start(Behaviour::Reply(b"{\"result\":\"reject\"}".to_vec()));
        let (code, _) = run(&FakePam::new("alice", CODE), &[&otpd.arg()]);
        assert_eq!(code, PamCode::AUTH_ERR);
    }

    #[test]
    fn a_closed_connection_is_authinfo_unavail() {
        let otpd = FakeOtpd::start(Behaviour::Close);
        let (code, log) = run(&FakePam::new("alice", CODE), &[&otpd.arg()]);
        assert_eq!(code, PamCode::AUTHINFO_UNAVAIL, "{}", log.text());
        assert!(log.text().contains("closed"), "{}", log.text());
    }

    #[test]
    fn no_daemon_is_authinfo_unavail() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing at the path.
        let missing = dir.path().join("missing.sock");
        let (code, log) = run(
            &FakePam::new("alice", CODE),
            &[&format!("socket={}", missing.display())],
        );
        assert_eq!(code, PamCode::AUTHINFO_UNAVAIL, "{}", log.text());
        assert!(log.text().contains("no fallback"), "{}", log.text());
        // A socket file that nobody listens on any more (a dead daemon).
        let stale = dir.path().join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        let (code, log) = run(
            &FakePam::new("alice", CODE),
            &[&format!("socket={}", stale.display())],
        );
        assert_eq!(code, PamCode::AUTHINFO_UNAVAIL, "{}", log.text());
        // Not a socket at all.
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let (code, _) = run(
            &FakePam::new("alice", CODE),
            &[&format!("socket={}", file.display())],
        );
        assert_eq!(code, PamCode::AUTHINFO_UNAVAIL);
    }

    #[test]
    fn a_silent_daemon_times_out() {
        let otpd = FakeOtpd::start(Behaviour::Silent(Duration::from_secs(3)));
        let started = Instant::now();
        let (code, log) = run(
            &FakePam::new("alice", CODE),
            &[&otpd.arg(), "timeout_ms=300"],
        );
        let took = started.elapsed();
        assert_eq!(code, PamCode::AUTHINFO_UNAVAIL, "{}", log.text());
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert!(log.text().contains("300 ms"), "{}", log.text());
        otpd.request();
    }

    #[test]
    fn a_full_backlog_times_out() {
        // A listener that never accepts, with room for one pending
        // connection: the first run fills it (and times out reading), the
        // second blocks in connect until the deadline.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.sock");
        let listener =
            socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        listener
            .bind(&socket2::SockAddr::unix(&path).unwrap())
            .unwrap();
        listener.listen(0).unwrap();
        let arg = format!("socket={}", path.display());
        for _ in 0..2 {
            let started = Instant::now();
            let (code, log) = run(&FakePam::new("alice", CODE), &[&arg, "timeout_ms=200"]);
            let took = started.elapsed();
            assert_eq!(code, PamCode::AUTHINFO_UNAVAIL, "{}", log.text());
            assert!(
                log.text().contains("no answer within 200 ms"),
                "{}",
                log.text()
            );
            assert!(
                took >= Duration::from_millis(150) && took < Duration::from_secs(2),
                "{took:?}"
            );
        }
    }

    #[test]
    fn unknown_argument_fails_before_prompting() {
        let pam = FakePam::new("alice", CODE);
        let (code, log) = run(&pam, &["nullok", "no_such_option"]);
        assert_eq!(code, PamCode::SERVICE_ERR);
        assert!(pam.prompts().is_empty());
        assert!(log.text().contains("no_such_option"), "{}", log.text());
        let (code, _) = run(&pam, &["prompt=[Code", "please:"]);
        assert_eq!(code, PamCode::SERVICE_ERR);
    }

    #[test]
    fn custom_prompt() {
        let otpd = FakeOtpd::replying(r#"{"result":"accept"}"#);
        let pam = FakePam::new("alice", CODE);
        let (code, _) = run(&pam, &[&otpd.arg(), "prompt=[Code", "please:", "]"]);
        assert_eq!(code, PamCode::SUCCESS);
        assert_eq!(pam.prompts(), vec!["Code please: ".to_owned()]);
        otpd.request();
    }

    #[test]
    fn first_pass_options() {
        // use_first_pass with PAM_AUTHTOK: no prompt.
        let otpd = FakeOtpd::replying(r#"{"result":"accept"}"#);
        let mut pam = FakePam::new("alice", "unused");
        pam.authtok = Some(CODE.to_owned());
        let (code, _) = run(&pam, &[&otpd.arg(), "use_first_pass"]);
        assert_eq!(code, PamCode::SUCCESS);
        assert!(pam.prompts().is_empty());
        assert_eq!(otpd.request()["otp"], CODE);

        // use_first_pass without PAM_AUTHTOK: refused, no prompt, no daemon.
        let pam = FakePam::new("alice", CODE);
        let (code, log) = run(&pam, &["socket=/nonexistent/otpd.sock", "use_first_pass"]);
        assert_eq!(code, PamCode::AUTH_ERR, "{}", log.text());
        assert!(pam.prompts().is_empty());

        // try_first_pass with PAM_AUTHTOK: no prompt.
        let otpd = FakeOtpd::replying(r#"{"result":"reject"}"#);
        let mut pam = FakePam::new("alice", "unused");
        pam.authtok = Some(CODE.to_owned());
        let (code, _) = run(&pam, &[&otpd.arg(), "try_first_pass"]);
        assert_eq!(code, PamCode::AUTH_ERR);
        assert!(pam.prompts().is_empty());
        otpd.request();

        // try_first_pass without (or with an empty) PAM_AUTHTOK: prompts.
        let otpd = FakeOtpd::replying(r#"{"result":"accept"}"#);
        let mut pam = FakePam::new("alice", CODE);
        pam.authtok = Some(String::new());
        let (code, _) = run(&pam, &[&otpd.arg(), "try_first_pass"]);
        assert_eq!(code, PamCode::SUCCESS);
        assert_eq!(pam.prompts().len(), 1);
        assert_eq!(otpd.request()["otp"], CODE);

        // Without either option PAM_AUTHTOK is not looked at.
        let otpd = FakeOtpd::replying(r#"{"result":"accept"}"#);
        let mut pam = FakePam::new("alice", CODE);
        pam.authtok = Some("unix password".to_owned());
        let (code, _) = run(&pam, &[&otpd.arg()]);
        assert_eq!(code, PamCode::SUCCESS);
        assert_eq!(otpd.request()["otp"], CODE);
    }

    #[test]
    fn pam_failures_fail_closed() {
        // The conversation fails: its code, never success, no daemon.
        let pam = FakePam::new("alice", CODE);
        pam.answers.borrow_mut().clear();
        let (code, _) = run(&pam, &["socket=/nonexistent/otpd.sock"]);
        assert_eq!(code, PamCode::CONV_ERR);
        // A handle that claims success or ignore as its failure code.
        for bogus in [PamCode::SUCCESS, PamCode::IGNORE] {
            let pam = FakePam::new("alice", CODE);
            *pam.answers.borrow_mut() = VecDeque::from([Err(bogus)]);
            let (code, _) = run(&pam, &["socket=/nonexistent/otpd.sock"]);
            assert_eq!(code, PamCode::SERVICE_ERR);
            let mut pam = FakePam::new("alice", CODE);
            pam.user = Err(bogus);
            let (code, _) = run(&pam, &["socket=/nonexistent/otpd.sock"]);
            assert_eq!(code, PamCode::SERVICE_ERR);
        }
        // No user name.
        let mut pam = FakePam::new("alice", CODE);
        pam.user = Err(PamCode::USER_UNKNOWN);
        let (code, _) = run(&pam, &["socket=/nonexistent/otpd.sock"]);
        assert_eq!(code, PamCode::USER_UNKNOWN);
        assert!(pam.prompts().is_empty());
    }

    #[test]
    fn unacceptable_input_is_refused_locally() {
        for user in ["", "bad\nuser", &"u".repeat(257)] {
            let pam = FakePam::new(user, CODE);
            let (code, log) = run(&pam, &["socket=/nonexistent/otpd.sock", "nullok"]);
            assert_eq!(code, PamCode::AUTH_ERR, "{user:?}");
            let lines: Vec<String> = log
                .0
                .borrow()
                .iter()
                .map(|(level, m)| crate::syslog::format_line(*level, m, 0, 1))
                .collect();
            assert!(
                !lines.iter().any(|l| l.contains('\n')),
                "a raw newline reached the log: {lines:?}"
            );
        }
        let pam = FakePam::new("alice", &"1".repeat(17));
        let (code, _) = run(&pam, &["socket=/nonexistent/otpd.sock"]);
        assert_eq!(code, PamCode::AUTH_ERR);
    }

    #[test]
    fn debug_adds_lines_without_the_code() {
        let otpd = FakeOtpd::replying(r#"{"result":"accept"}"#);
        let pam = FakePam::new("alice", CODE);
        let (code, log) = run(&pam, &[&otpd.arg(), "debug"]);
        assert_eq!(code, PamCode::SUCCESS);
        assert!(
            log.0.borrow().iter().any(|(l, _)| *l == Level::Debug),
            "{}",
            log.text()
        );
        otpd.request();
    }

    // -----------------------------------------------------------------
    // Over RADIUS: the same paths, another transport.

    use crate::radius::tests::{secret_file, silent, FakeNode, SECRET};
    use otpcore::radius::{code, Packet};
    use std::os::unix::fs::MetadataExt;

    /// `authenticate` with the secret file's owner, asserting that neither
    /// the code nor the secret was logged.
    fn run_radius(pam: &FakePam, args: &[&str], owner: u32) -> (PamCode, FakeLog) {
        let log = FakeLog::default();
        let code = authenticate_with(pam, args, &log, owner);
        log.assert_no_code();
        let secret = String::from_utf8_lossy(SECRET).into_owned();
        assert!(
            !log.text().contains(&secret),
            "the secret was logged:\n{}",
            log.text()
        );
        (code, log)
    }

    /// `radius=ADDRESSES secret_file=PATH` with a good secret file; the
    /// file's dir, the owner, and the two arguments.
    fn radius_args(servers: &[std::net::SocketAddr]) -> (tempfile::TempDir, u32, [String; 2]) {
        let (dir, path, owner) = secret_file(&[SECRET, b"\n"].concat(), 0o600);
        let list: Vec<String> = servers.iter().map(ToString::to_string).collect();
        let args = [
            format!("radius={}", list.join(",")),
            format!("secret_file={}", path.display()),
        ];
        (dir, owner, args)
    }

    #[test]
    fn radius_accept_and_reject_take_the_socket_paths() {
        let node = FakeNode::answering(code::ACCESS_ACCEPT);
        let (_dir, owner, [servers, file]) = radius_args(&[node.address]);
        let pam = FakePam::new("alice", CODE);
        let (code, log) = run_radius(&pam, &[&servers, &file], owner);
        assert_eq!(code, PamCode::SUCCESS, "{}", log.text());
        assert_eq!(pam.prompts(), vec!["One-time password: ".to_owned()]);
        assert!(
            log.text()
                .contains("accepted user \"alice\" service \"sshd\""),
            "{}",
            log.text()
        );
        let request = node.request();
        let request = Packet::decode(&request).unwrap();
        assert_eq!(request.user_name(), Some(&b"alice"[..]));
        assert_eq!(
            request.user_password(SECRET).unwrap().unwrap().as_slice(),
            CODE.as_bytes()
        );

        let node = FakeNode::answering(code::ACCESS_REJECT);
        let (_dir, owner, [servers, file]) = radius_args(&[node.address]);
        let pam = FakePam::new("alice", CODE);
        let (code, log) = run_radius(&pam, &[&servers, &file, "prompt=[Code:]"], owner);
        assert_eq!(code, PamCode::AUTH_ERR, "{}", log.text());
        assert_eq!(pam.prompts(), vec!["Code:".to_owned()]);
        assert!(
            log.text().contains("otpd rejected the code"),
            "{}",
            log.text()
        );
        node.request();
    }

    #[test]
    fn radius_first_pass_and_debug() {
        let node = FakeNode::answering(code::ACCESS_ACCEPT);
        let (_dir, owner, [servers, file]) = radius_args(&[node.address]);
        let mut pam = FakePam::new("alice", "unused");
        pam.authtok = Some(CODE.to_owned());
        let (code, log) = run_radius(&pam, &[&servers, &file, "use_first_pass", "debug"], owner);
        assert_eq!(code, PamCode::SUCCESS, "{}", log.text());
        assert!(pam.prompts().is_empty());
        assert!(
            log.text().contains(&format!(
                "Debug: asking otpd at RADIUS {} (timeout 3000 ms each)",
                node.address
            )),
            "{}",
            log.text()
        );
        let request = node.request();
        let request = Packet::decode(&request).unwrap();
        assert_eq!(
            request.user_password(SECRET).unwrap().unwrap().as_slice(),
            CODE.as_bytes()
        );
    }

    #[test]
    fn radius_failover_and_no_answer() {
        let (_silent, dead) = silent();
        let node = FakeNode::answering(code::ACCESS_ACCEPT);
        let (_dir, owner, [servers, file]) = radius_args(&[dead, node.address]);
        let (code, log) = run_radius(
            &FakePam::new("alice", CODE),
            &[&servers, &file, "timeout_ms=150"],
            owner,
        );
        assert_eq!(code, PamCode::SUCCESS, "{}", log.text());
        assert!(
            log.text().contains(&format!(
                "Warning: RADIUS server {dead} unusable for user \"alice\""
            )),
            "{}",
            log.text()
        );
        node.request();

        let (_a, first) = silent();
        let (_b, second) = silent();
        let (_dir, owner, [servers, file]) = radius_args(&[first, second]);
        let (code, log) = run_radius(
            &FakePam::new("alice", CODE),
            &[&servers, &file, "timeout_ms=100"],
            owner,
        );
        assert_eq!(code, PamCode::AUTHINFO_UNAVAIL, "{}", log.text());
        assert!(
            log.text().contains(&format!(
                "otpd at RADIUS {first}, {second} unusable for user \"alice\" service \"sshd\" \
                 rhost \"203.0.113.5\": {first}: no answer within 100 ms; {second}: no answer \
                 within 100 ms; PAM_AUTHINFO_UNAVAIL (no fallback)"
            )),
            "{}",
            log.text()
        );
    }

    #[test]
    fn an_unusable_secret_file_fails_closed_before_the_prompt() {
        let (_socket, address) = silent();
        let (dir, owner, [servers, file]) = radius_args(&[address]);
        // Not the owner asked for.
        let pam = FakePam::new("alice", CODE);
        let (code, log) = run_radius(&pam, &[&servers, &file], owner.wrapping_add(1));
        assert_eq!(code, PamCode::AUTHINFO_UNAVAIL, "{}", log.text());
        assert!(pam.prompts().is_empty());
        assert!(
            log.text().contains(&format!("owned by uid {owner}")),
            "{}",
            log.text()
        );
        assert!(log.text().contains("no fallback"), "{}", log.text());
        // Readable by others.
        let path = dir.path().join("secret");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let (code, log) = run_radius(&pam, &[&servers, &file], owner);
        assert_eq!(code, PamCode::AUTHINFO_UNAVAIL, "{}", log.text());
        assert!(
            log.text().contains(&format!(
                "{} has mode 0644, readable by group or others",
                path.display()
            )),
            "{}",
            log.text()
        );
        assert!(pam.prompts().is_empty());
        // The real entry point wants root's file: the test's own is
        // refused unless the test runs as root.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        if std::fs::metadata(&path).unwrap().uid() != 0 {
            let (code, _) = run(&pam, &[&servers, &file]);
            assert_eq!(code, PamCode::AUTHINFO_UNAVAIL);
        }
    }

    #[test]
    fn radius_refusals_before_asking() {
        let (_socket, address) = silent();
        let (_dir, owner, [servers, file]) = radius_args(&[address]);
        // nullok cannot work over RADIUS: a configuration error.
        let pam = FakePam::new("carol", "");
        let (code, log) = run_radius(&pam, &[&servers, &file, "nullok"], owner);
        assert_eq!(code, PamCode::SERVICE_ERR, "{}", log.text());
        assert!(pam.prompts().is_empty());
        assert!(
            log.text().contains("nullok does not work with radius="),
            "{}",
            log.text()
        );
        // A user name longer than RADIUS carries: refused, nobody asked
        // (the silent server would make this a timeout).
        let pam = FakePam::new(&"u".repeat(254), CODE);
        let (code, log) = run_radius(&pam, &[&servers, &file, "timeout_ms=30000"], owner);
        assert_eq!(code, PamCode::AUTH_ERR, "{}", log.text());
        assert!(log.text().contains("cannot carry"), "{}", log.text());
    }

    #[test]
    fn shown_is_short_and_quoted() {
        assert_eq!(shown("alice"), "\"alice\"");
        assert_eq!(shown("a\" rhost \"b"), "\"a\"\" rhost \"\"b\"");
        assert_eq!(shown(&"x".repeat(64)).chars().count(), 64 + 2);
        assert_eq!(shown(&"x".repeat(100)).chars().count(), 64 + 3);
        assert!(shown(&"x".repeat(100)).ends_with("\"…"));
    }

    #[test]
    fn codes() {
        assert_eq!(PamCode::failure(0), PamCode::SERVICE_ERR);
        assert_eq!(PamCode::failure(25), PamCode::SERVICE_ERR);
        assert_eq!(PamCode::failure(19), PamCode::CONV_ERR);
        assert_eq!(format!("{:?}", PamCode::failure(31)), "PAM error 31");
        assert_eq!(
            format!("{:?}", PamCode::AUTHINFO_UNAVAIL),
            "PAM_AUTHINFO_UNAVAIL"
        );
    }
}
