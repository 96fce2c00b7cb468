#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::*;
use proptest::prelude::*;

fn line<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

fn enrol(otp: Option<&str>) -> Request {
    Request::Enrol(Enrol {
        email: "alice@example.jp".to_owned(),
        activation_password: "1234".to_owned(),
        language: Some("en".to_owned()),
        otp: otp.map(str::to_owned),
    })
}

#[test]
fn requests_are_written_as_otpd_reads_them() {
    let full = Request::Enrol(Enrol {
        email: "alice@example.jp",
        activation_password: "1234",
        language: Some("ja"),
        otp: Some("123456"),
    });
    assert_eq!(
        line(&full),
        "{\"op\":\"enrol\",\"email\":\"alice@example.jp\",\"activation_password\":\"1234\",\
         \"language\":\"ja\",\"otp\":\"123456\"}"
    );
    let bare = Request::Enrol(Enrol {
        email: "a@b.c",
        activation_password: "1234",
        language: None,
        otp: None,
    });
    assert_eq!(
        line(&bare),
        "{\"op\":\"enrol\",\"email\":\"a@b.c\",\"activation_password\":\"1234\"}"
    );
    assert_eq!(line(&Request::<&str>::Status {}), "{\"op\":\"status\"}");
    assert_eq!(
        line(&Request::Confirm(Confirm { otp: "654321" })),
        "{\"op\":\"confirm\",\"otp\":\"654321\"}"
    );
    for request in [enrol(None), enrol(Some("12345-67890")), Request::Status {}] {
        assert_eq!(parse_request(line(&request).as_bytes()), Ok(request));
    }
    assert_eq!(
        parse_request(b"{\"op\":\"confirm\",\"otp\":\"1\"}\r\n"),
        Ok(Request::Confirm(Confirm {
            otp: "1".to_owned()
        }))
    );
}

#[test]
fn a_request_that_names_a_user_is_refused() {
    for text in [
        r#"{"op":"enrol","email":"a@b.c","activation_password":"1234","user":"root"}"#,
        r#"{"op":"enrol","user":"root","email":"a@b.c","activation_password":"1234"}"#,
        r#"{"op":"enrol","email":"a@b.c","activation_password":"1234","uid":0}"#,
        r#"{"op":"enrol","email":"a@b.c","activation_password":"1234","name":"root"}"#,
        r#"{"op":"status","user":"root"}"#,
        r#"{"op":"status","uid":0}"#,
        r#"{"op":"confirm","otp":"123456","user":"root"}"#,
        r#"{"op":"confirm","otp":"123456","name":null}"#,
    ] {
        assert_eq!(
            parse_request(text.as_bytes()),
            Err(Fault::UnknownField),
            "{text}"
        );
    }
}

#[test]
fn malformed_requests_are_named() {
    for (text, fault) in [
        (&b"\xff\xfe"[..], Fault::NotUtf8),
        (b"not json", Fault::NotObject),
        (b"", Fault::NotObject),
        (b"[\"status\"]", Fault::NotObject),
        (b"\"status\"", Fault::NotObject),
        (b"{\"op\":\"status\"} x", Fault::NotObject),
        (b"{}", Fault::UnknownOp),
        (b"{\"op\":\"verify\"}", Fault::UnknownOp),
        (b"{\"op\":1}", Fault::UnknownOp),
        (
            b"{\"op\":\"enrol\",\"email\":\"a@b.c\"}",
            Fault::MissingField("activation_password"),
        ),
        (b"{\"op\":\"confirm\"}", Fault::MissingField("otp")),
        (b"{\"op\":\"confirm\",\"otp\":123456}", Fault::WrongType),
        (b"{\"op\":\"confirm\",\"otp\":null}", Fault::WrongType),
        (
            b"{\"op\":\"confirm\",\"otp\":\"1\",\"otp\":\"2\"}",
            Fault::WrongType,
        ),
        (b"{\"op\":\"status\",\"op\":\"status\"}", Fault::WrongType),
        (
            b"{\"op\":\"confirm\",\"otp\":\"12345678901234567\"}",
            Fault::TooLongField("otp"),
        ),
    ] {
        assert_eq!(
            parse_request(text),
            Err(fault),
            "{}",
            String::from_utf8_lossy(text)
        );
    }
    let long = format!(
        "{{\"op\":\"enrol\",\"email\":\"{}\",\"activation_password\":\"1\"}}",
        "a".repeat(MAX_TEXT_LEN + 1)
    );
    assert_eq!(
        parse_request(long.as_bytes()),
        Err(Fault::TooLongField("email"))
    );
    assert_eq!(
        parse_request(&vec![b' '; MAX_LINE + 1]),
        Err(Fault::TooLong)
    );
}

#[test]
fn no_fault_quotes_what_the_peer_sent() {
    let secret = "98765432";
    for text in [
        format!(r#"{{"op":"enrol","email":"a@b.c","activation_password":{secret}}}"#),
        format!(r#"{{"op":"enrol","email":"a@b.c","activation_password":"{secret}","x":1}}"#),
        format!(r#"{{"op":"confirm","otp":[{secret}]}}"#),
        format!(r#"{{"op":"{secret}"}}"#),
    ] {
        let fault = parse_request(text.as_bytes()).unwrap_err();
        let answer = line(&Answer::from(fault));
        assert!(!answer.contains(secret), "{answer}");
    }
}

#[test]
fn answers_are_written_and_read_back() {
    let answers = [
        Answer::Issued(Issued {
            user: "alice".to_owned(),
            email: "alice@example.jp".to_owned(),
            service_id: "EXAMPLE".to_owned(),
            user_id: "12345678901234".to_owned(),
            setup_url: "https://otp.example.com/setup?sid=EXAMPLE&uid=12345678901234".to_owned(),
            expires_at: 1_767_225_600,
        }),
        Answer::Status(EnrolStatus {
            user: "alice".to_owned(),
            state: "activated".to_owned(),
        }),
        Answer::Confirmed(Confirmed {
            user: "alice".to_owned(),
            period: 60,
            adapted: false,
            recovery_codes: vec!["12345-67890".to_owned()],
        }),
        Answer::error(ErrorCode::CodeRequired, "give a code"),
    ];
    for answer in answers {
        assert_eq!(parse_answer(line(&answer).as_bytes()).unwrap(), answer);
    }
    assert_eq!(
        line(&Answer::error(ErrorCode::WrongFirstCode, "no")),
        r#"{"result":"error","error":"wrong_first_code","message":"no"}"#
    );
    assert_eq!(
        line(&Answer::Status(EnrolStatus {
            user: "a".to_owned(),
            state: "none".to_owned()
        })),
        r#"{"result":"status","user":"a","state":"none"}"#
    );
}

#[test]
fn answers_of_a_later_otpd_are_read() {
    let answer =
        parse_answer(br#"{"result":"error","error":"new_reason","message":"m","extra":1}"#)
            .unwrap();
    assert_eq!(answer, Answer::error(ErrorCode::Unknown, "m"));
    let answer = parse_answer(br#"{"result":"status","user":"a","state":"x","since":5}"#).unwrap();
    assert!(matches!(answer, Answer::Status(_)));
    assert!(parse_answer(br#"{"result":"accept"}"#).is_err());
    assert!(parse_answer(b"not json").is_err());
    assert!(matches!(
        parse_answer(&vec![b' '; MAX_LINE + 1]),
        Err(AnswerError::TooLong)
    ));
}

/// JSON objects made of the protocol's keys and a few others, with values
/// of every kind: most are refused, some are requests.
fn request_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("op"),
        Just("email"),
        Just("activation_password"),
        Just("language"),
        Just("otp"),
        Just("user"),
        Just("uid"),
    ];
    let value = prop_oneof![
        Just("\"enrol\"".to_owned()),
        Just("\"status\"".to_owned()),
        Just("\"confirm\"".to_owned()),
        "\"[a-z0-9@.-]{0,20}\"",
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("123".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
    ];
    proptest::collection::vec((key, value), 0..6).prop_map(|fields| {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    })
}

fn typed_request() -> impl Strategy<Value = Request> {
    let text = "[ -~]{0,64}";
    prop_oneof![
        (
            text,
            text,
            proptest::option::of(text),
            proptest::option::of("[0-9-]{0,16}")
        )
            .prop_map(|(email, activation_password, language, otp)| {
                Request::Enrol(Enrol {
                    email,
                    activation_password,
                    language,
                    otp,
                })
            }),
        Just(Request::Status {}),
        "[0-9 -]{0,16}".prop_map(|otp| Request::Confirm(Confirm { otp })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn any_bytes_are_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(request) = parse_request(&bytes) {
            prop_assert_eq!(parse_request(line(&request).as_bytes()), Ok(request));
        }
        let _ = parse_answer(&bytes);
    }

    #[test]
    fn request_like_lines_are_read_without_panic(text in request_text()) {
        let names_someone = text.contains("\"user\"") || text.contains("\"uid\"");
        match parse_request(text.as_bytes()) {
            Ok(request) => {
                prop_assert!(!names_someone, "{}", text);
                prop_assert_eq!(parse_request(line(&request).as_bytes()), Ok(request));
            }
            Err(fault) => prop_assert!(
                !matches!(fault, Fault::TooLong | Fault::NotUtf8),
                "{:?}", fault
            ),
        }
    }

    #[test]
    fn any_extra_field_refuses_a_request(request in typed_request(), key in "[a-z_]{1,12}", value in "[a-z0-9]{0,8}") {
        let mut object = serde_json::to_value(&request).unwrap();
        let known = ["op", "email", "activation_password", "language", "otp"];
        prop_assume!(!known.contains(&key.as_str()));
        object.as_object_mut().unwrap().insert(key, serde_json::Value::String(value));
        prop_assert_eq!(parse_request(object.to_string().as_bytes()), Err(Fault::UnknownField));
    }

    #[test]
    fn written_requests_are_read_back(request in typed_request()) {
        prop_assert_eq!(parse_request(line(&request).as_bytes()), Ok(request));
    }
}
