#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::*;
use proptest::prelude::*;

fn line<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

fn verify<'a>(user: &'a str, otp: &'a str) -> Verify<&'a str> {
    Verify {
        user,
        otp,
        service: None,
        rhost: None,
        nullok: false,
    }
}

fn owned(request: &Request<&str>) -> Request {
    match request {
        Request::Verify(v) => Request::Verify(Verify {
            user: v.user.to_owned(),
            otp: v.otp.to_owned(),
            service: v.service.map(str::to_owned),
            rhost: v.rhost.map(str::to_owned),
            nullok: v.nullok,
        }),
        Request::Status => Request::Status,
    }
}

#[test]
fn requests_are_written_as_otpd_reads_them() {
    let full = Request::Verify(Verify {
        service: Some("sshd"),
        rhost: Some("203.0.113.5"),
        ..verify("alice", "123456")
    });
    assert_eq!(
        line(&full),
        "{\"op\":\"verify\",\"user\":\"alice\",\"otp\":\"123456\",\"service\":\"sshd\",\
         \"rhost\":\"203.0.113.5\"}"
    );
    let nullok = Request::Verify(Verify {
        nullok: true,
        ..verify("bob", "")
    });
    assert_eq!(
        line(&nullok),
        "{\"op\":\"verify\",\"user\":\"bob\",\"otp\":\"\",\"nullok\":true}"
    );
    assert_eq!(line(&Request::<&str>::Status), "{\"op\":\"status\"}");
    let quoted = line(&Request::Verify(verify("a\"b\n", "1")));
    assert_eq!(
        parse_request(quoted.as_bytes()),
        Ok(owned(&Request::Verify(verify("a\"b\n", "1"))))
    );
}

#[test]
fn the_field_table_names_the_fields_of_a_verify_request() {
    let full = Request::Verify(Verify {
        service: Some("s"),
        rhost: Some("r"),
        nullok: true,
        ..verify("u", "1")
    });
    let value = serde_json::to_value(full).unwrap();
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "op")
        .collect();
    let mut names: Vec<&str> = FIELDS.iter().map(|field| field.name).collect();
    names.sort_unstable();
    assert_eq!(keys, names);
}

#[test]
fn answers_are_written_as_otpd_always_wrote_them() {
    assert_eq!(line(&Answer::Accept), r#"{"result":"accept"}"#);
    assert_eq!(line(&Answer::Reject), r#"{"result":"reject"}"#);
    assert_eq!(line(&Answer::Ignore), r#"{"result":"ignore"}"#);
    assert_eq!(
        line(&Answer::from(Fault::PermissionDenied)),
        r#"{"message":"permission denied","result":"error"}"#
    );
    assert_eq!(
        line(&Status {
            version: "0.1.0".to_owned()
        }),
        r#"{"result":"ok","version":"0.1.0"}"#
    );
}

/// Request lines and what otpd has always answered them (the texts come
/// from the earlier implementation, which matched serde's error text).
#[test]
fn malformed_requests_get_the_answers_they_always_got() {
    let wrong_type = "malformed request: a field has the wrong type \
                      (user, otp, service and rhost are strings)";
    let not_object = "malformed request: not a JSON object";
    let unknown_op = "malformed request: op must be \"verify\" or \"status\"";
    for (request, expected) in [
        (&b"\xff\xfe"[..], "request is not valid UTF-8"),
        (b"not json", not_object),
        (b"", not_object),
        (b"{\"op\":\"status\"} x", not_object),
        (b"{\"op\":\"status\"}{}", not_object),
        (b"{\"op\":\"verify\",\"user\":", not_object),
        (b"{\"op\":nul}", not_object),
        (b"{\"op\":1e999}", not_object),
        (
            b"{\"op\":\"verify\",\"user\":\"a\",\"otp\":\"1\"} x",
            not_object,
        ),
        (b"{}", "malformed request: missing field `op`"),
        (b"[]", "malformed request: missing field `op`"),
        (
            b"{\"user\":\"a\",\"otp\":\"1\"}",
            "malformed request: missing field `op`",
        ),
        (
            b"{\"op\":\"verify\"}",
            "malformed request: missing field `user`",
        ),
        (
            b"{\"op\":\"verify\",\"user\":\"a\"}",
            "malformed request: missing field `otp`",
        ),
        // The fields are read whole before a missing one is named, so
        // what follows the object does not matter.
        (
            b"{\"op\":\"verify\"} x",
            "malformed request: missing field `user`",
        ),
        (b"{\"op\":\"reboot\"}", unknown_op),
        (b"[\"reboot\"]", unknown_op),
        (b"{\"op\":\"Status\"}", unknown_op),
        // An unknown op is refused as soon as it is read.
        (b"{\"op\":\"reboot\",", unknown_op),
        (b"{\"op\":\"reboot\" garbage", unknown_op),
        (b"{\"user\":5,\"op\":\"reboot\"}", unknown_op),
        (b"{\"op\":\"reboot\",\"op\":\"status\"}", unknown_op),
        (b"{\"op\":\"status\",\"op\":\"reboot\"}", wrong_type),
        (b"{\"op\":\"status\",\"op\":\"status\"}", wrong_type),
        (b"{\"op\":0}", wrong_type),
        (b"{\"op\":null}", wrong_type),
        (b"{\"op\":[garbage", wrong_type),
        (b"{\"op\":123abc", wrong_type),
        (b"[1]", wrong_type),
        (b"[1,2]", wrong_type),
        (b"[\"status\",1]", wrong_type),
        (b"[\"verify\",\"a\"]", wrong_type),
        (b"\"status\"", wrong_type),
        (b"null", wrong_type),
        (b"42", wrong_type),
        (
            b"{\"op\":\"verify\",\"user\":\"a\",\"otp\":123456}",
            wrong_type,
        ),
        (
            b"{\"op\":\"verify\",\"user\":null,\"otp\":\"1\"}",
            wrong_type,
        ),
        (b"{\"op\":\"verify\",\"otp\":5}", wrong_type),
        (
            b"{\"op\":\"verify\",\"user\":\"a\",\"user\":\"b\"}",
            wrong_type,
        ),
        (
            b"{\"op\":\"verify\",\"user\":\"a\",\"otp\":\"1\",\"nullok\":null}",
            wrong_type,
        ),
        (
            b"{\"op\":\"verify\",\"user\":\"a\",\"otp\":\"1\",\"service\":1}",
            wrong_type,
        ),
        (
            b"{\"op\":\"verify\",\"user\":\"a\",\"otp\":\"1\",\"rhost\":{}}",
            wrong_type,
        ),
    ] {
        assert_eq!(
            parse_request(request).map_err(|f| f.to_string()),
            Err(expected.to_owned()),
            "{:?}",
            String::from_utf8_lossy(request)
        );
    }
    let too_long = Answer::from(Fault::TooLong);
    assert_eq!(
        line(&too_long),
        r#"{"message":"request line longer than 4096 bytes","result":"error"}"#
    );
    assert_eq!(
        Fault::BadUser.to_string(),
        "user must be 1 to 256 printable characters"
    );
    assert_eq!(
        Fault::OtpTooLong.to_string(),
        "otp must be at most 16 characters"
    );
    assert_eq!(
        Fault::Internal.to_string(),
        "internal error; see the otpd log"
    );
}

#[test]
fn odd_forms_that_have_always_been_accepted() {
    for (request, expected) in [
        (&b"{\"op\":\"status\",\"user\":5}\n"[..], Request::Status),
        (b"  {\"op\" : \"status\"}  \r\n", Request::Status),
        (b"[\"status\"]", Request::Status),
        (b"{\"op\":\"st\\u0061tus\"}", Request::Status),
        (
            b"[\"verify\",\"a\",\"1\",null,\"h\"]",
            owned(&Request::Verify(Verify {
                rhost: Some("h"),
                ..verify("a", "1")
            })),
        ),
        (
            b"{\"otp\":\"1\",\"user\":\"a\",\"extra\":[1],\"service\":null,\"op\":\"verify\"}",
            owned(&Request::Verify(verify("a", "1"))),
        ),
    ] {
        assert_eq!(
            parse_request(request),
            Ok(expected),
            "{:?}",
            String::from_utf8_lossy(request)
        );
    }
}

/// A request read with borrowed texts, made owned to compare.
fn read_owned(line: &[u8]) -> Result<Request, Fault> {
    read_request(line).map(|request| match request {
        Request::Verify(v) => Request::Verify(Verify {
            user: v.user.into_owned(),
            otp: v.otp.into_owned(),
            service: v.service.map(Text::into_owned),
            rhost: v.rhost.map(Text::into_owned),
            nullok: v.nullok,
        }),
        Request::Status => Request::Status,
    })
}

#[test]
fn texts_are_borrowed_from_the_line_unless_escaped() {
    let line =
        b"{\"op\":\"verify\",\"user\":\"alice\",\"otp\":\"12\\u0033\",\"service\":\"sshd\"}\n";
    let v = match read_request(line).unwrap() {
        Request::Verify(v) => v,
        Request::Status => unreachable!("a verify request"),
    };
    assert!(matches!(v.user.0, Cow::Borrowed("alice")));
    assert!(matches!(&v.otp.0, Cow::Owned(otp) if otp == "123"));
    assert_eq!(v.service.as_deref(), Some("sshd"));
    assert_eq!(v.rhost, None);
    assert_eq!(&*v.user, "alice");
    assert_eq!(v.otp.as_str(), "123");
    // Lines the common form does not take, read as the deserializer
    // reads them: the first six are refused.
    let odd: [&[u8]; 15] = [
        b"{\"op\":\"verify\",\"user\":\"a\",\"otp\":\"1\",\"nullok\":null}",
        b"{\"op\":\"verify\",\"user\":\"a\",\"otp\":\"1\",\"x\":1e999}",
        b"{\"op\":\"verify\",\"user\":null,\"otp\":\"1\"}",
        b"{\"op\":\"verify\",\"user\":1,\"otp\":\"1\"}",
        b"{\"op\":\"verify\",\"otp\":\"1\"}",
        b"[\"verify\",\"a\"]",
        b"{\"op\":\"verify\",\"user\":\"a\",\"otp\":\"1\",\"x\":[1]}",
        b"{\"user\":\"a\",\"otp\":\"1\",\"op\":\"verify\"}",
        b"{\"op\":\"verify\",\"user\":\"a\",\"otp\":\"1\",\"service\":null}",
        b"{\"op\":\"status\",\"user\":5}",
        b"[\"verify\",\"a\",\"1\"]",
        b"  {\"op\":\"verify\",\"user\":\"a\",\"otp\":\"1\"}  \r\n",
        b"{\"op\":\"verify\",\"op\":\"verify\",\"user\":\"a\",\"otp\":\"1\"}",
        b"\xff",
        b"{",
    ];
    for (n, line) in odd.into_iter().enumerate() {
        assert_eq!(read_owned(line), parse_request(line), "{line:?}");
        if n < 6 {
            assert!(read_owned(line).is_err(), "{line:?}");
        }
    }
}

#[test]
fn no_fault_quotes_what_the_peer_sent() {
    // Texts that read like serde's own errors are values like any other.
    for request in [
        &b"{\"op\":\"verify\",\"nullok\":\"missing field `123456\"}"[..],
        b"{\"op\":\"missing field `123456`\"}",
        b"{\"op\":\"verify\",\"user\":\"a\",\"otp\":\"1\",\"nullok\":\"unknown variant 123456\"}",
    ] {
        let fault = parse_request(request).unwrap_err();
        assert!(!fault.to_string().contains("123456"), "{fault}");
    }
}

#[test]
fn user_names_and_codes_otpd_takes() {
    assert_eq!(check_verify("alice", "123456"), Ok(()));
    assert_eq!(check_verify("alice", ""), Ok(()));
    assert_eq!(
        check_verify(&"x".repeat(MAX_USER_LEN), &"1".repeat(MAX_OTP_LEN)),
        Ok(())
    );
    assert_eq!(check_verify("", "1"), Err(Fault::BadUser));
    assert_eq!(
        check_verify(&"x".repeat(MAX_USER_LEN + 1), "1"),
        Err(Fault::BadUser)
    );
    assert_eq!(check_verify("a\nb", "1"), Err(Fault::BadUser));
    assert_eq!(check_verify("a\u{85}b", "1"), Err(Fault::BadUser));
    // Bytes, not characters.
    assert_eq!(check_verify(&"é".repeat(129), "1"), Err(Fault::BadUser));
    assert_eq!(check_verify("", &"1".repeat(17)), Err(Fault::BadUser));
    assert_eq!(check_verify("a", &"1".repeat(17)), Err(Fault::OtpTooLong));
}

#[test]
fn answers_are_read_as_pam_otp_reads_them() {
    assert_eq!(
        parse_answer(br#"{"result":"accept"}"#).unwrap(),
        Answer::Accept
    );
    assert_eq!(
        parse_answer(br#"{"result":"reject"}"#).unwrap(),
        Answer::Reject
    );
    assert_eq!(
        parse_answer(br#"{"result":"ignore"}"#).unwrap(),
        Answer::Ignore
    );
    assert_eq!(
        parse_answer(b" {\"result\":\"error\",\"message\":\"permission denied\"} \n").unwrap(),
        Answer::Error("permission denied".to_owned())
    );
    assert_eq!(
        parse_answer(br#"{"result":"error","message":5}"#).unwrap(),
        Answer::Error(String::new())
    );
    assert_eq!(
        parse_answer(br#"{"result":"accept","extra":1}"#).unwrap(),
        Answer::Accept
    );
    assert!(matches!(
        parse_answer(br#"{"result":"ok","version":"0.1.0"}"#),
        Err(AnswerError::Unexpected(r)) if r == "ok"
    ));
    assert!(matches!(
        parse_answer(br#"{"result":"ACCEPT"}"#),
        Err(AnswerError::Unexpected(r)) if r == "ACCEPT"
    ));
    for no_result in [&b"{}"[..], br#"{"result":true}"#] {
        assert!(matches!(
            parse_answer(no_result),
            Err(AnswerError::NoResult)
        ));
    }
    assert!(matches!(
        parse_answer(br#"["accept"]"#),
        Err(AnswerError::NotObject)
    ));
    for not_json in [
        &b""[..],
        b"accept",
        br#"{"result":"accept"} {"result":"accept"}"#,
        br#"{"result":"accept""#,
        b"\xff\xfe",
    ] {
        assert!(
            matches!(parse_answer(not_json), Err(AnswerError::NotJson(_))),
            "{:?}",
            String::from_utf8_lossy(not_json)
        );
    }
}

/// A JSON object as text, of keys and values as text.
fn object_text<K: AsRef<str>>(entries: &[(K, String)]) -> String {
    let entries: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("\"{}\":{v}", k.as_ref()))
        .collect();
    format!("{{{}}}", entries.join(","))
}

/// A JSON value as text, often one a request field might hold, sometimes
/// broken.
fn value_text() -> impl Strategy<Value = String> {
    let string = prop_oneof![
        Just("verify".to_owned()),
        Just("status".to_owned()),
        "[a-zA-Z]{0,8}",
        "[0-9]{6,16}",
        any::<String>(),
    ]
    .prop_map(|s| serde_json::to_string(&s).unwrap());
    let leaf = prop_oneof![
        4 => string,
        1 => Just("\"st\\u0061tus\"".to_owned()),
        1 => Just("\"bad \\x escape\"".to_owned()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => prop_oneof![Just("0"), Just("1"), Just("1.5"), Just("1e999"), Just("123abc"), Just("-")]
            .prop_map(str::to_owned),
        2 => prop_oneof![Just("null"), Just("true"), Just("false"), Just("nul")].prop_map(str::to_owned),
        1 => prop_oneof![Just("[]"), Just("{}"), Just("[1,\"a\"]"), Just("{\"a\":1,\"a\":2}"), Just("[")]
            .prop_map(str::to_owned),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec(("[a-z]{1,4}", inner), 0..4)
                .prop_map(|entries| object_text(&entries)),
        ]
    })
}

/// Something like a request line: an object of the request's keys (in any
/// order, repeated or not) and others, an array, or a lone value; now and
/// then cut short or followed by more.
fn request_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("op"),
        Just("user"),
        Just("otp"),
        Just("service"),
        Just("rhost"),
        Just("nullok"),
        Just("extra"),
    ];
    // Mostly there and of the right kind.
    let field = |right: BoxedStrategy<String>| {
        proptest::option::weighted(0.85, prop_oneof![6 => right, 1 => value_text()])
    };
    let string = |s: &'static str| s.prop_map(|s| serde_json::to_string(&s).unwrap()).boxed();
    let op = prop_oneof![
        4 => Just("\"verify\"".to_owned()),
        1 => Just("\"status\"".to_owned()),
    ];
    // `op`, then the fields of a verify request in the table's order.
    let values = vec![
        field(op.boxed()),
        field(string(".{0,12}")),
        field(string("[0-9]{0,18}")),
        field(prop_oneof![string(".{0,12}"), Just("null".to_owned()).boxed()].boxed()),
        field(string(".{0,12}")),
        field(any::<bool>().prop_map(|b| b.to_string()).boxed()),
    ];
    let object = (values, proptest::collection::vec((key, value_text()), 0..3))
        .prop_map(|(values, extra)| {
            let names = std::iter::once("op").chain(FIELDS.iter().map(|field| field.name));
            let mut entries: Vec<(&str, String)> = names
                .zip(values)
                .filter_map(|(name, value)| Some((name, value?)))
                .collect();
            entries.extend(extra);
            entries
        })
        .prop_shuffle()
        .prop_map(|entries| object_text(&entries));
    let array =
        proptest::collection::vec(value_text(), 0..7).prop_map(|v| format!("[{}]", v.join(",")));
    let whole = prop_oneof![6 => object, 2 => array, 1 => value_text()];
    let suffix = prop_oneof![
        8 => Just(""),
        1 => Just(" x"),
        1 => Just("}"),
        1 => Just(","),
        1 => Just("{\"op\":\"status\"}"),
        1 => Just(" \t\r\n"),
    ];
    (
        whole,
        proptest::option::weighted(0.15, any::<prop::sample::Index>()),
        suffix,
    )
        .prop_map(|(text, cut, suffix)| {
            let text = match cut {
                Some(at) => {
                    let at = at.index(text.len() + 1);
                    let at = (0..=at)
                        .rev()
                        .find(|&i| text.is_char_boundary(i))
                        .unwrap_or(0);
                    text[..at].to_owned()
                }
                None => text,
            };
            text + suffix
        })
}

/// Any text that can stand in a request field.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,40}", "[a-z]{1,12}", "[0-9]{0,20}", any::<String>()]
}

fn typed_request() -> impl Strategy<Value = Request> {
    let verify = (
        text(),
        text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
        any::<bool>(),
    )
        .prop_map(|(user, otp, service, rhost, nullok)| {
            Request::Verify(Verify {
                user,
                otp,
                service,
                rhost,
                nullok,
            })
        });
    prop_oneof![4 => verify, 1 => Just(Request::Status)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn any_bytes_are_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(request) = parse_request(&bytes) {
            prop_assert_eq!(parse_request(line(&request).as_bytes()), Ok(request));
        }
    }

    #[test]
    fn borrowed_and_owned_reads_agree(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        prop_assert_eq!(read_owned(&bytes), parse_request(&bytes));
    }

    #[test]
    fn borrowed_and_owned_reads_agree_on_request_like_lines(text in request_text()) {
        prop_assert_eq!(read_owned(text.as_bytes()), parse_request(text.as_bytes()));
    }

    #[test]
    fn request_like_lines_are_read_without_panic(text in request_text()) {
        match parse_request(text.as_bytes()) {
            Ok(request) => prop_assert_eq!(parse_request(line(&request).as_bytes()), Ok(request)),
            Err(fault) => prop_assert!(
                !matches!(fault, Fault::TooLong | Fault::NotUtf8 | Fault::BadUser
                    | Fault::OtpTooLong | Fault::PermissionDenied | Fault::Internal),
                "{fault:?}"
            ),
        }
    }

    #[test]
    fn an_unknown_op_is_refused_whatever_follows(op in "[a-z]{0,8}", rest in ".{0,40}") {
        prop_assume!(op != "verify" && op != "status");
        let text = format!("{{\"op\":{}{rest}", serde_json::to_string(&op).unwrap());
        prop_assert_eq!(parse_request(text.as_bytes()), Err(Fault::UnknownOp));
    }

    #[test]
    fn written_requests_are_read_back(request in typed_request()) {
        let text = line(&request);
        prop_assert!(!text.contains('\n'));
        prop_assert_eq!(parse_request(format!("{text}\n").as_bytes()), Ok(request.clone()));
        if let Request::Verify(v) = &request {
            let fits = !v.user.is_empty()
                && v.user.len() <= MAX_USER_LEN
                && !v.user.chars().any(char::is_control)
                && v.otp.len() <= MAX_OTP_LEN;
            prop_assert_eq!(check_verify(&v.user, &v.otp).is_ok(), fits);
        }
    }

    #[test]
    fn any_answer_bytes_are_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(answer) = parse_answer(&bytes) {
            prop_assert_eq!(parse_answer(line(&answer).as_bytes()).unwrap(), answer);
        }
    }

    #[test]
    fn written_answers_are_read_back(message in any::<String>(), which in 0..4u8) {
        let answer = match which {
            0 => Answer::Accept,
            1 => Answer::Reject,
            2 => Answer::Ignore,
            _ => Answer::Error(message),
        };
        let text = line(&answer);
        prop_assert!(!text.contains('\n'));
        prop_assert_eq!(parse_answer(format!("{text}\n").as_bytes()).unwrap(), answer);
    }
}

#[test]
fn every_fault_fits_in_an_answer_line() {
    for fault in [
        Fault::TooLong,
        Fault::NotUtf8,
        Fault::NotObject,
        Fault::MissingField("user"),
        Fault::UnknownOp,
        Fault::WrongType,
        Fault::BadUser,
        Fault::OtpTooLong,
        Fault::PermissionDenied,
        Fault::Internal,
    ] {
        let answer = line(&Answer::from(fault));
        assert!(answer.len() < MAX_LINE, "{answer}");
        assert_eq!(
            parse_answer(answer.as_bytes()).unwrap(),
            Answer::Error(fault.to_string())
        );
    }
}
