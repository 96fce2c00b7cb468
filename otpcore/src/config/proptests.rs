//! Property tests of `otpd.toml` as an operator may write it: any value
//! for any key of the shipped examples (commented-out keys too), and any
//! text. The parser loads it or refuses it without a panic; a refusal is
//! one line that names the key and where it is, and never quotes a value.

use proptest::prelude::*;

use super::tests::SHIPPED_EXAMPLE;
use super::*;

/// The annotated cluster example, for the keys of `[store]`.
const SHIPPED_CLUSTER: &str = include_str!("../../../conf/otpd-cluster.toml");

/// A `key = value` line of an example, commented out or not.
#[derive(Debug, Clone)]
struct KeyLine {
    example: &'static str,
    /// 0-based index of the line.
    index: usize,
    /// 0-based index of the line of its table's header; `None` at the top.
    header: Option<usize>,
    table: String,
    key: String,
}

/// Every key that the shipped examples set or show commented out.
fn key_lines() -> Vec<KeyLine> {
    let mut found = Vec::new();
    for example in [SHIPPED_EXAMPLE, SHIPPED_CLUSTER] {
        let mut table = String::new();
        let mut header = None;
        for (index, line) in example.lines().enumerate() {
            if line.starts_with('[') {
                table = line.trim_matches(['[', ']']).to_owned();
                header = Some(index);
                continue;
            }
            let bare = line.strip_prefix("# ").unwrap_or(line);
            let Some((key, _)) = bare.split_once(" = ") else {
                continue;
            };
            if !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                found.push(KeyLine {
                    example,
                    index,
                    header,
                    table: table.clone(),
                    key: key.to_owned(),
                });
            }
        }
    }
    found
}

/// `line` of `example` replaced by `key = value`.
fn with_line(at: &KeyLine, value: &str) -> String {
    at.example
        .lines()
        .enumerate()
        .map(|(n, line)| {
            if n == at.index {
                format!("{} = {value}", at.key)
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("otpd.toml"), false).map_err(|e| e.to_string())
}

/// Any TOML value: every scalar type, arrays and inline tables of them.
fn toml_values() -> impl Strategy<Value = toml::Value> {
    let scalar = prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        (-1000i64..100_000).prop_map(toml::Value::Integer),
        any::<f64>().prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
        "\\PC{0,24}".prop_map(toml::Value::String),
        "(/|https?://|postgresql://)?[!-~]{0,24}".prop_map(toml::Value::String),
        prop_oneof![
            Just("1979-05-27T07:32:00Z"),
            Just("1979-05-27"),
            Just("07:32:00")
        ]
        .prop_filter_map("a TOML datetime", |d| d
            .parse()
            .ok()
            .map(toml::Value::Datetime)),
    ];
    scalar.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

/// A value that no message of the parser can hold unless it quotes it: a
/// string that carries the marker `Zq8`, or an integer of ten or more
/// digits beginning with 9 (the bounds of the keys have other digits).
fn quotable_values() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        "\\PC{0,8}Zq8\\PC{0,8}".prop_map(|s| {
            let value = toml::Value::String(s).to_string();
            (value, "Zq8".to_owned())
        }),
        (9_000_000_000i64..10_000_000_000, any::<bool>()).prop_map(|(n, negative)| {
            let n = if negative { -n } else { n };
            (n.to_string(), n.unsigned_abs().to_string())
        }),
    ]
}

/// Text the parser may be handed: an example with a few bytes inserted
/// or cut out, or anything at all.
fn texts() -> impl Strategy<Value = String> {
    let example = SHIPPED_EXAMPLE.replacen("change-me", SECRET, 1);
    let edit = (
        any::<prop::sample::Index>(),
        0usize..6,
        prop_oneof!["\\PC{0,8}", "[\\[\\]\"'=#.,{}\n a-z0-9_]{1,8}"],
    );
    prop_oneof![
        3 => proptest::collection::vec(edit, 1..4).prop_map(move |edits| {
            let mut text: Vec<char> = example.chars().collect();
            for (at, cut, insert) in edits {
                let at = at.index(text.len() + 1);
                let end = (at + cut).min(text.len());
                text.splice(at..end, insert.chars());
            }
            text.into_iter().collect()
        }),
        1 => "\\PC{0,120}",
        1 => proptest::collection::vec(
            prop_oneof![
                "\\[{1,2}[a-z_.]{0,10}\\]{1,2}",
                "[a-z_]{1,12} = (\"[^\"\n]{0,10}\"|-?[0-9]{1,12}|true|\\[\\]|\\{\\})",
                "\\PC{0,16}",
            ],
            0..12,
        )
        .prop_map(|lines| lines.join("\n")),
    ]
}

/// The secret of the client in [`texts`]; no message may show it.
const SECRET: &str = "Xq9-radius-SECRET-5v7";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any value for any key: loaded, or refused in one line that names
    /// the key and its line (or its table's header, for a rule between
    /// keys of one table).
    #[test]
    fn any_value_for_a_known_key_loads_or_names_the_key_and_line(
        at in proptest::sample::select(key_lines()),
        value in toml_values(),
    ) {
        let value = value.to_string();
        let text = with_line(&at, &value);
        if let Err(message) = parse(&text) {
            prop_assert!(!message.contains('\n'), "{}", message);
            prop_assert!(message.contains(&at.key), "{} = {}: {}", at.key, value, message);
            let named = [Some(at.index), at.header]
                .into_iter()
                .flatten()
                .map(|n| format!("line {}", n + 1))
                .chain([format!("[{}]:", at.table)])
                .any(|place| message.contains(&place));
            prop_assert!(
                named,
                "{} = {} (line {}): {}", at.key, value, at.index + 1, message
            );
        }
    }

    /// A refused value is never quoted back: it may be a secret, or a
    /// password typed in the wrong place.
    #[test]
    fn a_refused_value_is_never_quoted(
        at in proptest::sample::select(key_lines()),
        (value, telltale) in quotable_values(),
    ) {
        if let Err(message) = parse(&with_line(&at, &value)) {
            prop_assert!(!message.contains(&telltale), "{} = {}: {}", at.key, value, message);
        }
    }

    /// Any text: loaded, or refused in one line without the client's
    /// secret; broken TOML is refused with its line and column.
    #[test]
    fn any_text_loads_or_is_refused_in_one_line_without_the_secret(text in texts()) {
        if let Err(message) = parse(&text) {
            prop_assert!(!message.contains('\n'), "{}", message);
            prop_assert!(!message.contains(SECRET), "{}", message);
            if toml::from_str::<toml::Table>(&text).is_err() {
                let lines = text.split('\n').count();
                let named = message
                    .split_once(": line ")
                    .and_then(|(_, rest)| rest.split_once(", column "))
                    .and_then(|(line, _)| line.parse::<usize>().ok());
                prop_assert!(
                    named.is_some_and(|n| (1..=lines).contains(&n)),
                    "no line of 1 to {} in {}", lines, message
                );
            }
        }
    }

    /// `[mail] notify`: any list of names loads exactly when every name is
    /// an event and none comes twice, and then holds them in order.
    #[test]
    fn notify_loads_known_names_once_each(
        names in proptest::collection::vec(
            prop_oneof![
                4 => proptest::sample::select(
                    crate::notice::Event::ALL.map(|e| e.as_str()).to_vec()
                ).prop_map(str::to_owned),
                1 => "[a-z_]{0,14}",
            ],
            0..6,
        ),
    ) {
        let list = toml::Value::Array(names.iter().cloned().map(toml::Value::String).collect());
        let text = SHIPPED_EXAMPLE.replacen(
            "notify = [\"activated\", \"replaced\", \"locked\", \"recovery_used\"]",
            &format!("notify = {list}"),
            1,
        );
        let events: Option<Vec<crate::notice::Event>> = names
            .iter()
            .map(|n| crate::notice::Event::ALL.into_iter().find(|e| e.as_str() == n))
            .collect();
        let unique = names.iter().enumerate().all(|(i, n)| !names[..i].contains(n));
        match (parse(&text), events) {
            (Ok(config), Some(events)) if unique => {
                prop_assert_eq!(config.mail.map(|m| m.notify), Some(events));
            }
            (Ok(_), _) => prop_assert!(false, "loaded {:?}", names),
            (Err(message), events) => {
                prop_assert!(events.is_none() || !unique, "refused {:?}: {}", names, message);
                prop_assert!(message.contains("mail.notify"), "{}", message);
                prop_assert!(message.contains("line "), "{}", message);
            }
        }
    }
}
