//! The protocol of otpd's self-service socket, which `otpctl enrol` asks
//! when a user sets up a token for themselves: one JSON object per line
//! each way, each line at most [`MAX_LINE`] bytes with its newline. A
//! connection carries any number of requests, each answered by one line in
//! order.
//!
//! ```text
//! → {"op":"enrol","email":"alice@example.jp","activation_password":"1234","language":"en","otp":"123456"}
//! ← {"result":"issued","user":"alice","email":"alice@example.jp","service_id":"EXAMPLE",
//!    "user_id":"12345678901234","setup_url":"https://...","expires_at":1767225600}
//! → {"op":"status"}
//! ← {"result":"status","user":"alice","state":"activated"}
//! → {"op":"confirm","otp":"654321"}
//! ← {"result":"confirmed","user":"alice","period":60,"adapted":false,"recovery_codes":["12345-67890",...]}
//! ← {"result":"error","error":"code_required","message":"..."}   to a request otpd refuses
//! ```
//!
//! No request names a user: the user is the one the connection's peer runs
//! as, which otpd reads from the socket (SO_PEERCRED). A field a request
//! does not define (`user`, `uid`, ...) refuses the whole request, as does
//! a field given twice. `language` and `otp` of an enrol request may be
//! left out; `otp` is the current code (or a recovery code) of a user who
//! already has an active token.
//!
//! otpd reads a request with [`parse_request`] and writes [`Answer`]; a
//! client writes a [`Request`] and reads [`parse_answer`]. Nothing here
//! does I/O.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest line either side sends, its newline included.
pub const MAX_LINE: usize = 4096;
/// The longest mail address, activation password or language a request
/// may carry, in bytes. otpd's input rules are narrower; this bound only
/// keeps what it looks at small.
pub const MAX_TEXT_LEN: usize = 256;
/// The longest code (a one-time password or a recovery code), in bytes.
pub const MAX_OTP_LEN: usize = crate::socket::MAX_OTP_LEN;

/// One request line. `S` is the type of its texts: `&str` to write one
/// without copying the password, `String` (the default) when one is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request<S = String> {
    /// Issues a token to the peer's user and mails the setup link.
    Enrol(Enrol<S>),
    /// Asks how far the peer's user's newest token has come.
    Status {},
    /// Confirms the peer's user's activated token with its first code.
    Confirm(Confirm<S>),
}

/// `{"op":"enrol",...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrol<S = String> {
    /// The phone's mail address.
    pub email: S,
    pub activation_password: S,
    /// `ja` or `en`: the language of the setup mail; otpd's own when left
    /// out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<S>,
    /// A current code or a recovery code of the user's active token;
    /// needed when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otp: Option<S>,
}

/// `{"op":"confirm","otp":...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirm<S = String> {
    /// The first code the app shows.
    pub otp: S,
}

/// otpd's answer to any request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Answer {
    /// The token is issued and its setup mail sent.
    Issued(Issued),
    /// Where the user's newest token stands.
    Status(EnrolStatus),
    /// The token is active.
    Confirmed(Confirmed),
    /// The request is refused; nothing was changed unless `error` says so.
    Error(Failure),
}

/// `{"result":"issued",...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// The login name the token is for: the peer's user.
    pub user: String,
    pub email: String,
    pub service_id: String,
    pub user_id: String,
    pub setup_url: String,
    /// When the setup link expires, in seconds since the Unix epoch.
    pub expires_at: u64,
}

/// `{"result":"status","user":...,"state":...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolStatus {
    pub user: String,
    /// The state of the user's newest token (`issued`, `activated`,
    /// `active`, `invalidated`, ...), `expired` for an issued one whose
    /// link has expired, or `none`.
    pub state: String,
}

/// `{"result":"confirmed",...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmed {
    pub user: String,
    /// The token's period in seconds.
    pub period: u64,
    /// Whether the token was switched to 30-second codes because the app
    /// shows those.
    pub adapted: bool,
    /// Shown this once; empty when the deployment hands out none.
    pub recovery_codes: Vec<String>,
}

/// `{"result":"error","error":...,"message":...}`: a stable code for
/// programs and a sentence for people. The message never quotes a code or
/// a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub error: ErrorCode,
    pub message: String,
}

/// Why otpd refuses a request, as a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not a request this protocol defines ([`Fault`]).
    Malformed,
    /// The peer's user may not use self-service.
    PermissionDenied,
    /// The mail address, activation password or language breaks an input
    /// rule.
    BadInput,
    /// The user has an active token: a current code or a recovery code
    /// must come with the request.
    CodeRequired,
    /// The current code or recovery code is wrong (or the token is locked);
    /// the failure counts toward the lockout.
    WrongCode,
    /// The user has no token waiting for its first code.
    NoEnrolment,
    /// The token has not been unlocked on the phone yet.
    NotActivated,
    /// The first code does not match.
    WrongFirstCode,
    /// The setup mail could not be sent; nothing was issued.
    MailFailed,
    /// Too many requests at once, or too many of this user lately: try
    /// again later.
    Busy,
    /// otpd could not decide; its log says why.
    Internal,
    /// A code of a later otpd.
    #[serde(other)]
    Unknown,
}

impl Answer {
    /// An error answer with `message`.
    pub fn error(error: ErrorCode, message: impl Into<String>) -> Answer {
        Answer::Error(Failure {
            error,
            message: message.into(),
        })
    }
}

impl From<Fault> for Answer {
    fn from(fault: Fault) -> Answer {
        Answer::error(ErrorCode::Malformed, fault.to_string())
    }
}

/// Why a request line is not a request. No variant carries anything the
/// peer sent, so an answer never quotes a password or a code back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The line is longer than [`MAX_LINE`]; otpd hangs up after the
    /// answer.
    TooLong,
    NotUtf8,
    /// Not JSON, or more than one JSON value, or not an object.
    NotObject,
    /// No `op`, or an `op` this protocol does not define.
    UnknownOp,
    /// A field the request does not define: the user is who the peer is,
    /// never a field.
    UnknownField,
    /// A field the request needs is missing.
    MissingField(&'static str),
    /// A field has the wrong type, or is given twice.
    WrongType,
    /// A field is longer than its bound.
    TooLongField(&'static str),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::TooLong => write!(f, "request line longer than {MAX_LINE} bytes"),
            Fault::NotUtf8 => f.write_str("request is not valid UTF-8"),
            Fault::NotObject => f.write_str("malformed request: not a JSON object"),
            Fault::UnknownOp => {
                f.write_str("malformed request: op must be \"enrol\", \"status\" or \"confirm\"")
            }
            Fault::UnknownField => f.write_str(
                "malformed request: a field this request does not take \
                 (the user is the one you are logged in as; no request names one)",
            ),
            Fault::MissingField(field) => write!(f, "malformed request: missing field `{field}`"),
            Fault::WrongType => f.write_str(
                "malformed request: a field has the wrong type or is given twice \
                 (every field is a string)",
            ),
            Fault::TooLongField(field) => write!(f, "malformed request: `{field}` is too long"),
        }
    }
}

/// The fields each `op` takes: name, and whether it is required.
const OPS: [(&str, &[(&str, bool)]); 3] = [
    (
        "enrol",
        &[
            ("email", true),
            ("activation_password", true),
            ("language", false),
            ("otp", false),
        ],
    ),
    ("status", &[]),
    ("confirm", &[("otp", true)]),
];

/// Reads one request line (its newline and any whitespace before it
/// ignored): a JSON object with a known `op` and exactly the fields that
/// `op` takes, each a string within its bound.
pub fn parse_request(line: &[u8]) -> Result<Request, Fault> {
    if line.len() > MAX_LINE {
        return Err(Fault::TooLong);
    }
    let text = std::str::from_utf8(line).map_err(|_| Fault::NotUtf8)?;
    let text = text.trim_end();
    // serde would also read an array (`["status"]`): only objects are
    // requests.
    if !text.trim_start().starts_with('{') {
        return Err(Fault::NotObject);
    }
    let request: Request = match serde_json::from_str(text) {
        Ok(request) => request,
        Err(e) if e.is_data() => return Err(diagnose(text)),
        Err(_) => return Err(Fault::NotObject),
    };
    check_bounds(&request)?;
    Ok(request)
}

/// Which fault a line has that JSON reads but [`Request`] refuses. The
/// value is read again as a plain JSON value and looked at field by field;
/// a line that passes every look was refused for a field given twice.
fn diagnose(text: &str) -> Fault {
    let Ok(serde_json::Value::Object(object)) = serde_json::from_str(text) else {
        return Fault::NotObject;
    };
    let Some(op) = object.get("op") else {
        return Fault::UnknownOp;
    };
    let Some((_, fields)) = OPS.iter().find(|(name, _)| Some(*name) == op.as_str()) else {
        return Fault::UnknownOp;
    };
    let known = |key: &str| key == "op" || fields.iter().any(|(name, _)| *name == key);
    if object.keys().any(|key| !known(key)) {
        return Fault::UnknownField;
    }
    for (name, required) in fields.iter() {
        match object.get(*name) {
            None if *required => return Fault::MissingField(name),
            Some(value) if !value.is_string() => return Fault::WrongType,
            _ => {}
        }
    }
    Fault::WrongType
}

fn bounded(name: &'static str, text: &str, limit: usize) -> Result<(), Fault> {
    if text.len() > limit {
        Err(Fault::TooLongField(name))
    } else {
        Ok(())
    }
}

/// Every text within its bound.
fn check_bounds(request: &Request) -> Result<(), Fault> {
    match request {
        Request::Enrol(enrol) => {
            bounded("email", &enrol.email, MAX_TEXT_LEN)?;
            bounded(
                "activation_password",
                &enrol.activation_password,
                MAX_TEXT_LEN,
            )?;
            if let Some(language) = &enrol.language {
                bounded("language", language, MAX_TEXT_LEN)?;
            }
            if let Some(otp) = &enrol.otp {
                bounded("otp", otp, MAX_OTP_LEN)?;
            }
            Ok(())
        }
        Request::Status {} => Ok(()),
        Request::Confirm(confirm) => bounded("otp", &confirm.otp, MAX_OTP_LEN),
    }
}

/// Why an answer line is not one of otpd's answers.
#[derive(Debug)]
pub enum AnswerError {
    /// Not JSON, or not an answer this protocol defines.
    NotAnswer(serde_json::Error),
    /// Longer than [`MAX_LINE`].
    TooLong,
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerError::NotAnswer(e) => write!(f, "not an answer of otpd: {e}"),
            AnswerError::TooLong => write!(f, "answer line longer than {MAX_LINE} bytes"),
        }
    }
}

/// Reads otpd's answer (one line, its newline and surrounding whitespace
/// ignored). Fields an answer does not define are ignored, so a later otpd
/// may add some.
pub fn parse_answer(line: &[u8]) -> Result<Answer, AnswerError> {
    if line.len() > MAX_LINE {
        return Err(AnswerError::TooLong);
    }
    serde_json::from_slice(line).map_err(AnswerError::NotAnswer)
}

#[cfg(test)]
mod tests;
