//! Property tests of the listener, over a real socket: whatever a peer
//! sends, a line within [`MAX_LINE`] gets exactly one answer line and the
//! connection goes on; a longer line gets one refusal and the connection
//! closes. Nothing panics, nothing is accepted for a user without a token,
//! and no answer quotes a code. (The properties of the parser alone are
//! otpproto's.) The JSON strategies serve the property tests of the HTTP
//! bodies too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use otpd::socket::SocketListener;
use otpproto::socket::MAX_LINE;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::common::{daemon_with, Serving};

const STATUS: &[u8] = b"{\"op\":\"status\"}\n";

/// One daemon for all the cases of a property, serving the socket to the
/// user the tests run as; each case is a connection.
struct Socket {
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    path: PathBuf,
    _serving: Serving,
}

impl Socket {
    fn new() -> Socket {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let own_uid = nix::unistd::Uid::current().as_raw();
        let (dir, daemon) = daemon_with(|config| {
            if let Some(socket) = config.socket.as_mut() {
                socket.allowed_uids = vec![own_uid];
            }
        });
        let socket = daemon.config.socket.as_ref().expect("socket section");
        let listener = SocketListener::bind(socket).expect("bind");
        let path = listener.path().to_owned();
        let serving = {
            let _entered = runtime.enter();
            Serving::start(&daemon, |daemon, verifier, shutdown| {
                listener.serve(daemon, verifier, shutdown)
            })
        };
        Socket {
            runtime,
            _dir: dir,
            path,
            _serving: serving,
        }
    }

    /// Sends `bytes` on a new connection; the answer lines until otpd
    /// closes it or `lines` came, and whether it was closed first. Ask for
    /// no more lines than are due: otpd keeps an idle connection open.
    fn converse(&self, bytes: &[u8], lines: usize) -> (Vec<String>, bool) {
        let exchange = converse(&self.path, bytes, lines);
        self.runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(20), exchange).await })
            .expect("otpd answers within 20 s")
    }
}

async fn converse(path: &Path, bytes: &[u8], lines: usize) -> (Vec<String>, bool) {
    let stream = UnixStream::connect(path).await.expect("connect");
    let (reader, mut writer) = stream.into_split();
    // otpd may hang up before it has read everything (a line too long):
    // what it answered is still there to read.
    let _ = writer.write_all(bytes).await;
    let mut reader = BufReader::new(reader);
    let mut answers = Vec::new();
    while answers.len() < lines {
        let mut line = String::new();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return (answers, true),
            Ok(_) => answers.push(line),
        }
    }
    (answers, false)
}

/// Checks one answer line: a JSON object of `result` (never `accept`: no
/// user has a token), `message` with errors, `version` with `ok`, and
/// nothing else.
fn well_formed(line: &str) -> Result<Value, TestCaseError> {
    prop_assert!(line.ends_with('\n'), "unterminated answer {line:?}");
    let answer: Value = serde_json::from_str(line)
        .map_err(|e| TestCaseError::fail(format!("answer is not JSON ({e}): {line:?}")))?;
    let result = answer["result"].as_str().unwrap_or_default();
    prop_assert!(
        ["ok", "reject", "ignore", "error"].contains(&result),
        "{answer}"
    );
    let object = answer.as_object().expect("an object has a result");
    let allowed = match result {
        "error" => &["result", "message"][..],
        "ok" => &["result", "version"][..],
        _ => &["result"][..],
    };
    prop_assert!(
        object.keys().all(|k| allowed.contains(&k.as_str())),
        "{answer}"
    );
    if result == "error" {
        prop_assert!(answer["message"].is_string(), "{answer}");
    }
    Ok(answer)
}

/// Checks the answer to the status request that ends a case.
fn status_ok(line: &str) -> Result<(), TestCaseError> {
    let answer = well_formed(line)?;
    prop_assert_eq!(answer["result"].as_str(), Some("ok"), "{}", answer);
    Ok(())
}

/// Checks the answers to a request line of `len` bytes (its newline
/// included) followed by a status request: when the line fits, its answer
/// (returned) and the status answer on a connection still open; else one
/// refusal naming the limit, and the connection closed.
fn answered(len: usize, answers: &[String], closed: bool) -> Result<Option<Value>, TestCaseError> {
    if len > MAX_LINE {
        prop_assert!(
            closed && answers.len() == 1,
            "a {len}-byte line got {answers:?}, closed: {closed}"
        );
        let refusal = well_formed(&answers[0])?;
        prop_assert_eq!(refusal["result"].as_str(), Some("error"));
        prop_assert!(
            refusal["message"]
                .as_str()
                .is_some_and(|m| m.contains("4096")),
            "{refusal}"
        );
        return Ok(None);
    }
    prop_assert!(
        !closed && answers.len() == 2,
        "expected an answer and the status answer, got {answers:?}"
    );
    let answer = well_formed(&answers[0])?;
    status_ok(&answers[1])?;
    Ok(Some(answer))
}

/// Bytes without a newline: the content of one request line.
fn line_bytes(len: impl Into<proptest::collection::SizeRange>) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_map(|b| if b == b'\n' { b' ' } else { b }),
        len,
    )
}

#[test]
fn every_line_of_random_bytes_gets_one_answer() {
    let socket = Socket::new();
    let strategy = proptest::collection::vec(line_bytes(0..600), 1..6);
    proptest!(ProptestConfig::with_cases(256), |(lines in strategy)| {
        let mut bytes = lines.join(&b'\n');
        bytes.push(b'\n');
        bytes.extend_from_slice(STATUS);
        let (answers, closed) = socket.converse(&bytes, lines.len() + 1);
        prop_assert!(
            !closed && answers.len() == lines.len() + 1,
            "{} lines and a status request got {answers:?}",
            lines.len()
        );
        for answer in &answers {
            well_formed(answer)?;
        }
        status_ok(&answers[lines.len()])?;
    });
}

/// Any JSON value.
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A field that is absent, of the expected kind (mostly) or any JSON value.
pub(crate) fn field(
    expected: impl Strategy<Value = Value>,
) -> impl Strategy<Value = Option<Value>> {
    proptest::option::weighted(0.8, prop_oneof![3 => expected, 1 => json_value()])
}

/// Something like a request: `op`, `user`, `otp`, `service`, `rhost` and
/// `nullok` of the right or the wrong kind, missing or not, and other keys.
fn request_like() -> impl Strategy<Value = Value> {
    let op = prop_oneof![
        Just(json!("verify")),
        Just(json!("status")),
        "[a-zA-Z]{0,8}".prop_map(Value::from),
    ];
    let user = ".{0,300}".prop_map(Value::from);
    let code = prop_oneof![
        "[0-9]{6,16}".prop_map(Value::from),
        (100_000u64..).prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    let text = || ".{0,80}".prop_map(Value::from);
    let extra = proptest::collection::btree_map("[a-z_]{1,10}", json_value(), 0..3);
    (
        field(op),
        field(user),
        field(code),
        field(text()),
        field(text()),
        field(any::<bool>().prop_map(Value::from)),
        extra,
    )
        .prop_map(|(op, user, otp, service, rhost, nullok, extra)| {
            object(
                extra,
                [
                    ("op", op),
                    ("user", user),
                    ("otp", otp),
                    ("service", service),
                    ("rhost", rhost),
                    ("nullok", nullok),
                ],
            )
        })
}

/// A JSON object of `extra` and those of `fields` that are there.
pub(crate) fn object<const N: usize>(
    extra: BTreeMap<String, Value>,
    fields: [(&str, Option<Value>); N],
) -> Value {
    let mut object: Map<String, Value> = extra.into_iter().collect();
    for (key, value) in fields {
        if let Some(value) = value {
            object.insert(key.to_owned(), value);
        }
    }
    Value::Object(object)
}

#[test]
fn every_json_request_gets_one_answer_that_quotes_no_code() {
    let socket = Socket::new();
    let strategy = prop_oneof![3 => request_like(), 1 => json_value()];
    proptest!(ProptestConfig::with_cases(256), |(request in strategy)| {
        let mut bytes = request.to_string().into_bytes();
        bytes.push(b'\n');
        let len = bytes.len();
        bytes.extend_from_slice(STATUS);
        let (answers, closed) = socket.converse(&bytes, 2);
        let answer = answered(len, &answers, closed)?;
        // A code is digits, sent as a string or (wrongly) as a number.
        let code = match &request["otp"] {
            Value::String(s) if s.len() >= 6 && s.bytes().all(|b| b.is_ascii_digit()) => {
                Some(s.clone())
            }
            Value::Number(n) if n.to_string().len() >= 6 => Some(n.to_string()),
            _ => None,
        };
        if let (Some(answer), Some(code)) = (answer, code) {
            prop_assert!(!answer.to_string().contains(&code), "{code} quoted in {answer}");
        }
    });
}

#[test]
fn a_line_longer_than_the_limit_is_refused_and_the_connection_closed() {
    let socket = Socket::new();
    // At the limit, around it and well past it; the newline counts.
    let strategy = prop_oneof![
        line_bytes(MAX_LINE - 2..MAX_LINE + 2),
        line_bytes(MAX_LINE - 64..MAX_LINE + 64),
        line_bytes(MAX_LINE..3 * MAX_LINE),
    ];
    proptest!(ProptestConfig::with_cases(128), |(content in strategy)| {
        let mut bytes = content;
        bytes.push(b'\n');
        let len = bytes.len();
        bytes.extend_from_slice(STATUS);
        let (answers, closed) = socket.converse(&bytes, 2);
        answered(len, &answers, closed)?;
    });
}
