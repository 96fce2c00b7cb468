//! The protocol of otpd's Unix socket, which `pam_otp.so` and `otpctl test`
//! ask: one JSON object per line each way, each line at most [`MAX_LINE`]
//! bytes with its newline. A connection carries any number of requests,
//! each answered by one line in order.
//!
//! ```text
//! → {"op":"verify","user":"alice","otp":"123456","service":"sshd","rhost":"203.0.113.5"}
//! ← {"result":"accept"}            or "reject", or "ignore" (no token, nullok)
//! → {"op":"status"}
//! ← {"result":"ok","version":"0.1.0"}
//! ← {"message":"permission denied","result":"error"}   to any request otpd does not serve
//! ```
//!
//! `service`, `rhost` and `nullok` may be left out. otpd reads a request
//! with [`read_request`] (or [`parse_request`]) and [`check_verify`] and
//! writes [`Answer`] and [`Status`]; a client writes a [`Request`] and
//! reads [`parse_answer`].
//! Nothing here does I/O.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest line either side sends, its newline included.
pub const MAX_LINE: usize = 4096;
/// The longest user name otpd accepts, in bytes.
pub const MAX_USER_LEN: usize = 256;
/// The longest code otpd accepts, in bytes.
pub const MAX_OTP_LEN: usize = 16;

/// One request line. `S` is the type of its texts: `&str` to write one
/// without copying the code, `String` (the default) when one is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request<S = String> {
    /// Checks a code.
    Verify(Verify<S>),
    /// Asks whether otpd serves, and its version.
    Status,
}

/// `{"op":"verify",...}`: whether `otp` is a good code of `user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verify<S = String> {
    pub user: S,
    pub otp: S,
    /// The PAM service asking, for the audit trail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<S>,
    /// The remote host of the login, for the audit trail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rhost: Option<S>,
    /// A user without a token gets [`Answer::Ignore`] rather than
    /// [`Answer::Reject`].
    #[serde(default, skip_serializing_if = "is_false")]
    pub nullok: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// otpd's answer to a verify request, or to any request it does not serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `{"result":"accept"}`: the code is good, and now spent.
    Accept,
    /// `{"result":"reject"}`.
    Reject,
    /// `{"result":"ignore"}`: the user has no token and the request carried
    /// `nullok`.
    Ignore,
    /// `{"message":...,"result":"error"}`.
    Error(String),
}

impl Answer {
    fn result(&self) -> &'static str {
        match self {
            Answer::Accept => "accept",
            Answer::Reject => "reject",
            Answer::Ignore => "ignore",
            Answer::Error(_) => "error",
        }
    }
}

/// otpd writes the keys of an answer in alphabetical order.
impl Serialize for Answer {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        let message = match self {
            Answer::Error(message) => Some(message),
            _ => None,
        };
        let mut answer =
            serializer.serialize_struct("Answer", 1 + usize::from(message.is_some()))?;
        if let Some(message) = message {
            answer.serialize_field("message", message)?;
        }
        answer.serialize_field("result", self.result())?;
        answer.end()
    }
}

impl From<Fault> for Answer {
    fn from(fault: Fault) -> Answer {
        Answer::Error(fault.to_string())
    }
}

/// otpd's answer to a status request: `{"result":"ok","version":...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub version: String,
}

impl Serialize for Status {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        let mut status = serializer.serialize_struct("Status", 2)?;
        status.serialize_field("result", "ok")?;
        status.serialize_field("version", &self.version)?;
        status.end()
    }
}

/// Why otpd answers a request with an error; its text is the message. No
/// variant carries anything the peer sent, so an answer never quotes a
/// code back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The line is longer than [`MAX_LINE`]; otpd hangs up after the
    /// answer.
    TooLong,
    NotUtf8,
    /// Not JSON, or more than one JSON value.
    NotObject,
    /// `op`, `user` or `otp` is missing.
    MissingField(&'static str),
    UnknownOp,
    /// A field has the wrong type, or is given twice.
    WrongType,
    BadUser,
    OtpTooLong,
    /// The peer's user may not ask.
    PermissionDenied,
    /// otpd could not decide; its log says why.
    Internal,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::TooLong => write!(f, "request line longer than {MAX_LINE} bytes"),
            Fault::NotUtf8 => f.write_str("request is not valid UTF-8"),
            Fault::NotObject => f.write_str("malformed request: not a JSON object"),
            Fault::MissingField(field) => write!(f, "malformed request: missing field `{field}`"),
            Fault::UnknownOp => {
                f.write_str("malformed request: op must be \"verify\" or \"status\"")
            }
            Fault::WrongType => f.write_str(
                "malformed request: a field has the wrong type \
                 (user, otp, service and rhost are strings)",
            ),
            Fault::BadUser => write!(f, "user must be 1 to {MAX_USER_LEN} printable characters"),
            Fault::OtpTooLong => write!(f, "otp must be at most {MAX_OTP_LEN} characters"),
            Fault::PermissionDenied => f.write_str("permission denied"),
            Fault::Internal => f.write_str("internal error; see the otpd log"),
        }
    }
}

/// Reads one request line (its newline and any whitespace before it
/// ignored). What is accepted is [`Request`]'s JSON form: besides the
/// object, the array form serde gives an internally tagged enum
/// (`["status"]`, `["verify",user,otp,service,rhost]` with an optional
/// `nullok` after).
pub fn parse_request(line: &[u8]) -> Result<Request, Fault> {
    parse(line)
}

/// [`parse_request`] with the texts borrowed from `line` where they hold
/// no JSON escape, as otpd reads a request: the same requests read, the
/// same faults.
pub fn read_request(line: &[u8]) -> Result<Request<Text<'_>>, Fault> {
    common_verify(line).map_or_else(|| parse(line), |v| Ok(Request::Verify(v)))
}

/// The common request, `{"op":"verify",...}` as an object, read straight
/// into its fields: [`Request`]'s deserializer first buffers the whole
/// object to find `op`. `None` for anything else (a status request, the
/// array form, anything refused): then [`Request`]'s deserializer reads
/// the line, and names the fault. Whatever this reads, that deserializer
/// reads alike.
fn common_verify(line: &[u8]) -> Option<Verify<Text<'_>>> {
    /// A verify request's fields, `user` and `otp` optional here (`null`
    /// reads as missing: then the whole line is read again). A field given
    /// twice or of the wrong kind fails the read, and
    /// so does any other key: its value would be skipped here, not read
    /// whole (a number out of range is an error only when read).
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Fields<'a> {
        #[serde(borrow)]
        op: Text<'a>,
        #[serde(borrow)]
        user: Option<Text<'a>>,
        #[serde(borrow)]
        otp: Option<Text<'a>>,
        #[serde(borrow)]
        service: Option<Text<'a>>,
        #[serde(borrow)]
        rhost: Option<Text<'a>>,
        #[serde(default)]
        nullok: bool,
    }
    let text = std::str::from_utf8(line).ok()?.trim_end();
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let fields: Fields<'_> = serde_json::from_str(text).ok()?;
    if fields.op.as_str() != "verify" {
        return None;
    }
    Some(Verify {
        user: fields.user?,
        otp: fields.otp?,
        service: fields.service,
        rhost: fields.rhost,
        nullok: fields.nullok,
    })
}

fn parse<'a, S: Deserialize<'a>>(line: &'a [u8]) -> Result<Request<S>, Fault> {
    let text = std::str::from_utf8(line).map_err(|_| Fault::NotUtf8)?;
    let text = text.trim_end();
    serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            diagnose(text)
        } else {
            Fault::NotObject
        }
    })
}

/// A text of a request as [`read_request`] reads it: borrowed from the
/// line, or copied when JSON escapes had to be undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(Cow<'a, str>);

impl<'a> Text<'a> {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text as a string of its own (a copy only when it is borrowed).
    pub fn into_owned(self) -> String {
        self.0.into_owned()
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text<'a>, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(text)))
    }
}

/// Whether otpd takes a verify request of `user` and `otp`: a user name of
/// 1 to [`MAX_USER_LEN`] bytes without control characters, a code of at
/// most [`MAX_OTP_LEN`] bytes.
pub fn check_verify(user: &str, otp: &str) -> Result<(), Fault> {
    if user.is_empty() || user.len() > MAX_USER_LEN || user.chars().any(char::is_control) {
        return Err(Fault::BadUser);
    }
    if otp.len() > MAX_OTP_LEN {
        return Err(Fault::OtpTooLong);
    }
    Ok(())
}

/// Which fault a text has that JSON reads but [`Request`] refuses: the
/// text is read again the way [`Request`]'s deserializer reads it, in the
/// same order, and the first thing it would refuse is named. Where it
/// stops (an unknown `op` before the rest of the line is read), this read
/// stops too, so the answer is the same whatever follows.
fn diagnose(text: &str) -> Fault {
    let found = Cell::new(None);
    let mut reader = serde_json::Deserializer::from_str(text);
    let read = Shape { found: &found }.deserialize(&mut reader);
    // Where nothing was named, serde_json itself refused a value where `op`
    // stands (a number, say): a type error.
    found.get().unwrap_or(match read {
        Err(e) if !e.is_data() => Fault::NotObject,
        _ => Fault::WrongType,
    })
}

/// The value of `op`.
enum Op {
    Verify,
    Status,
}

/// A field of [`Verify`] as its deserializer takes it.
struct Field {
    name: &'static str,
    /// The kinds of value it takes.
    kinds: &'static [Kind],
    /// Whether a request without it is refused.
    required: bool,
}

/// The fields of [`Verify`], in their order.
const FIELDS: [Field; 5] = [
    Field {
        name: "user",
        kinds: &[Kind::Text],
        required: true,
    },
    Field {
        name: "otp",
        kinds: &[Kind::Text],
        required: true,
    },
    Field {
        name: "service",
        kinds: &[Kind::Text, Kind::Null],
        required: false,
    },
    Field {
        name: "rhost",
        kinds: &[Kind::Text, Kind::Null],
        required: false,
    },
    Field {
        name: "nullok",
        kinds: &[Kind::Bool],
        required: false,
    },
];

/// The kind of a JSON value, all that [`diagnose`] needs of a field (the
/// value itself, perhaps a code, is not kept).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Null,
    Bool,
    Other,
}

/// Reads a whole request line for [`diagnose`]; puts the fault into
/// `found` and stops at the first one.
struct Shape<'a> {
    found: &'a Cell<Option<Fault>>,
}

impl Shape<'_> {
    fn stop<E: de::Error>(&self, fault: Fault) -> E {
        self.found.set(Some(fault));
        E::custom(format_args!("{fault}"))
    }
}

/// The fault of the fields of a verify request (`op` left out), read whole
/// as the deserializer reads them: in the order they came, a field given
/// twice or with a value of the wrong kind; then the first required field
/// that is missing.
fn verify_fault(fields: &[(String, Kind)]) -> Fault {
    let mut seen = [false; FIELDS.len()];
    for (name, kind) in fields {
        let known = FIELDS
            .iter()
            .zip(seen.iter_mut())
            .find(|(field, _)| field.name == name);
        if let Some((field, seen)) = known {
            if *seen || !field.kinds.contains(kind) {
                return Fault::WrongType;
            }
            *seen = true;
        }
    }
    let missing = FIELDS
        .iter()
        .zip(seen)
        .find(|(field, seen)| field.required && !seen);
    match missing {
        Some((field, _)) => Fault::MissingField(field.name),
        // Nothing wrong: no fault to name but the deserializer's own.
        None => Fault::WrongType,
    }
}

impl<'de> DeserializeSeed<'de> for Shape<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Shape<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a request")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let mut op = None;
        let mut fields = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "op" {
                if op.is_some() {
                    return Err(self.stop(Fault::WrongType));
                }
                op = Some(map.next_value_seed(OpSeed { shape: &self })?);
            } else {
                fields.push((key, map.next_value::<KindOf>()?.0));
            }
        }
        let fault = match op {
            None => Fault::MissingField("op"),
            Some(Op::Verify) => verify_fault(&fields),
            // The deserializer takes any object with this `op`: no fault
            // to name but its own.
            Some(Op::Status) => Fault::WrongType,
        };
        Err(self.stop(fault))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // The array form: `op` first, then the fields by position; anything
        // wrong after `op` is a type error.
        let fault = match seq.next_element_seed(OpSeed { shape: &self })? {
            None => Fault::MissingField("op"),
            Some(_) => Fault::WrongType,
        };
        Err(self.stop(fault))
    }
}

/// Reads the value of `op` as the deserializer does: a string, `verify` or
/// `status`.
struct OpSeed<'a, 'b> {
    shape: &'a Shape<'b>,
}

impl<'de> DeserializeSeed<'de> for OpSeed<'_, '_> {
    type Value = Op;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Op, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for OpSeed<'_, '_> {
    type Value = Op;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"verify\" or \"status\"")
    }

    fn visit_str<E: de::Error>(self, op: &str) -> Result<Op, E> {
        match op {
            "verify" => Ok(Op::Verify),
            "status" => Ok(Op::Status),
            _ => Err(self.shape.stop(Fault::UnknownOp)),
        }
    }
}

/// The [`Kind`] of a value, read and dropped.
struct KindOf(Kind);

impl<'de> Deserialize<'de> for KindOf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KindOf, D::Error> {
        deserializer.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = KindOf;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E>(self, _: &str) -> Result<KindOf, E> {
        Ok(KindOf(Kind::Text))
    }

    fn visit_unit<E>(self) -> Result<KindOf, E> {
        Ok(KindOf(Kind::Null))
    }

    fn visit_bool<E>(self, _: bool) -> Result<KindOf, E> {
        Ok(KindOf(Kind::Bool))
    }

    fn visit_u64<E>(self, _: u64) -> Result<KindOf, E> {
        Ok(KindOf(Kind::Other))
    }

    fn visit_i64<E>(self, _: i64) -> Result<KindOf, E> {
        Ok(KindOf(Kind::Other))
    }

    fn visit_f64<E>(self, _: f64) -> Result<KindOf, E> {
        Ok(KindOf(Kind::Other))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KindOf, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(KindOf(Kind::Other))
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<KindOf, M::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(KindOf(Kind::Other))
    }
}

/// Why an answer line is not one of otpd's answers to a verify request.
#[derive(Debug)]
pub enum AnswerError {
    NotJson(serde_json::Error),
    NotObject,
    /// No `result`, or one that is not a string.
    NoResult,
    /// A `result` other than `accept`, `reject`, `ignore` and `error`
    /// (`ok` answers a status request).
    Unexpected(String),
}

/// Reads otpd's answer to a verify request (one line, its newline and
/// surrounding whitespace ignored). Keys besides `result` and `message`
/// are ignored; an error without a `message` string has an empty one.
pub fn parse_answer(line: &[u8]) -> Result<Answer, AnswerError> {
    let value: serde_json::Value = serde_json::from_slice(line).map_err(AnswerError::NotJson)?;
    let object = value.as_object().ok_or(AnswerError::NotObject)?;
    let result = object
        .get("result")
        .and_then(serde_json::Value::as_str)
        .ok_or(AnswerError::NoResult)?;
    match result {
        "accept" => Ok(Answer::Accept),
        "reject" => Ok(Answer::Reject),
        "ignore" => Ok(Answer::Ignore),
        "error" => Ok(Answer::Error(
            object
                .get("message")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        )),
        other => Err(AnswerError::Unexpected(other.to_owned())),
    }
}

#[cfg(test)]
mod tests;
