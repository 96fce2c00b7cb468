//! Checks a directory that otpcore/tests/data/pskc/generate.py wrote with
//! the python3-pskc library: every file reads back as its expected.json
//! says, field by field, or is refused for the reason it names. Shared by
//! the committed-fixture test and the end-to-end test that generates fresh
//! files.

use std::fs;
use std::path::Path;

use otpcore::pskc::{parse, Kind, PreSharedKey, PskcError};
use otpcore::totp::Algorithm;
use serde_json::Value;

/// What a refusal's message says, by the reason expected.json gives.
fn refusal_text(reason: &str) -> &'static str {
    match reason {
        "pbkdf2" => "derived from a password (PBKDF2), which is not supported",
        "encryption" => "is not supported: only AES-128-CBC with a pre-shared key is",
        other => panic!("expected.json names an unknown refusal {other:?}"),
    }
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("expected.json: {key} is not a string in {value}"))
}

fn number(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("expected.json: {key} is not a number in {value}"))
}

/// Checks every file `dir/expected.json` lists; returns how many.
pub fn check_generated(dir: &Path) -> usize {
    let expected: Value =
        serde_json::from_slice(&fs::read(dir.join("expected.json")).expect("expected.json"))
            .expect("expected.json is JSON");
    let files = expected["files"].as_object().expect("a files object");
    for (name, entry) in files {
        let document = fs::read(dir.join(name)).expect("a listed file");
        let key = entry["psk_file"].as_str().map(|f| {
            let hex = fs::read_to_string(dir.join(f)).expect("the key file");
            PreSharedKey::from_hex(&hex).expect("a key in hex")
        });
        let result = parse(&document, key.as_ref());
        if let Some(reason) = entry["refused"].as_str() {
            let errors = result
                .err()
                .unwrap_or_else(|| panic!("{name} was accepted"));
            let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
            assert!(
                shown.iter().any(|e| e.contains(refusal_text(reason))),
                "{name}: {shown:?}"
            );
            continue;
        }
        let tokens = result.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let wanted = entry["tokens"].as_array().expect("a tokens array");
        assert_eq!(tokens.len(), wanted.len(), "{name}");
        for (token, want) in tokens.iter().zip(wanted) {
            let context = format!("{name}, serial {}", token.serial);
            assert_eq!(token.serial, text(want, "serial"), "{context}");
            assert_eq!(
                token.manufacturer.as_deref(),
                Some(text(want, "manufacturer")),
                "{context}"
            );
            assert_eq!(
                token.model.as_deref(),
                Some(text(want, "model")),
                "{context}"
            );
            assert_eq!(
                Some(token.algorithm),
                Algorithm::parse(text(want, "algorithm")),
                "{context}"
            );
            assert_eq!(u64::from(token.digits), number(want, "digits"), "{context}");
            assert_eq!(
                data_encoding::HEXLOWER.encode(&token.secret),
                text(want, "secret_hex"),
                "{context}"
            );
            let kind = match text(want, "kind") {
                "hotp" => Kind::Hotp {
                    counter: number(want, "counter"),
                },
                "totp" => Kind::Totp {
                    period: number(want, "period"),
                    drift: want["drift"].as_i64().expect("a drift"),
                },
                other => panic!("{context}: unknown kind {other:?}"),
            };
            assert_eq!(token.kind, kind, "{context}");
        }
        if key.is_some() {
            // The same file with another key, or none, is refused whole.
            let hex = fs::read_to_string(dir.join(text(entry, "psk_file"))).expect("key file");
            let mut wrong: Vec<char> = hex.trim().chars().collect();
            wrong[0] = if wrong[0] == '0' { '1' } else { '0' };
            let wrong = PreSharedKey::from_hex(&wrong.iter().collect::<String>()).expect("hex");
            assert_eq!(
                parse(&document, Some(&wrong)).err(),
                Some(vec![PskcError::WrongKey]),
                "{name}"
            );
            assert!(
                matches!(
                    parse(&document, None).err().as_deref(),
                    Some([PskcError::KeyNeeded { .. }])
                ),
                "{name}"
            );
        }
    }
    files.len()
}
