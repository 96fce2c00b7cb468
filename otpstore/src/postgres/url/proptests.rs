//! Property tests of `[store] url` (and `otpctl store copy --to`): URLs
//! as an operator writes them, with any password, any hosts and any TLS
//! mode. The TLS rules hold for every combination, the password survives
//! its percent-encoding, and neither the redacted URL nor a refusal ever
//! shows it.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use proptest::prelude::*;

use super::*;

/// A host as written in the URL, and whether it is local (a Unix socket
/// directory or a loopback address).
fn hosts() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,6}){0,2}"
            .prop_filter("not localhost", |h| h != "localhost")
            .prop_map(|h| (h, false)),
        Just(("localhost".to_owned(), true)),
        any::<[u8; 4]>().prop_map(|o| {
            let ip = std::net::Ipv4Addr::from(o);
            (ip.to_string(), ip.is_loopback())
        }),
        Just(("[::1]".to_owned(), true)),
        Just(("[2001:db8::7]".to_owned(), false)),
        "(/[a-z]{1,8}){1,3}".prop_map(|dir| (
            utf8_percent_encode(&dir, NON_ALPHANUMERIC).to_string(),
            true
        )),
    ]
}

/// A URL with every part chosen, and what the parse must make of it.
#[derive(Debug)]
struct Written {
    text: String,
    user: String,
    password: String,
    database: String,
    hosts: Vec<(String, bool)>,
    sslmode: Option<&'static str>,
}

fn urls() -> impl Strategy<Value = Written> {
    (
        "[a-z][a-z0-9_]{0,11}",
        "\\PC{8,24}",
        proptest::collection::vec((hosts(), proptest::option::of(1u16..=65535)), 1..4),
        "[a-z][a-z0-9_]{0,11}",
        proptest::option::of(proptest::sample::select(vec![
            "verify-full",
            "disable",
            "require",
            "prefer",
            "allow",
            "verify-ca",
        ])),
        proptest::option::of("(/[a-z]{1,8}){1,3}\\.pem"),
        any::<bool>(),
    )
        .prop_map(
            |(user, password, hosts, database, sslmode, rootcert, short_scheme)| {
                let written_hosts: Vec<String> = hosts
                    .iter()
                    .map(|((host, _), port)| match port {
                        Some(port) => format!("{host}:{port}"),
                        None => host.clone(),
                    })
                    .collect();
                let mut query = Vec::new();
                if let Some(mode) = sslmode {
                    query.push(format!("sslmode={mode}"));
                }
                if let Some(path) = &rootcert {
                    query.push(format!(
                        "sslrootcert={}",
                        utf8_percent_encode(path, NON_ALPHANUMERIC)
                    ));
                }
                let scheme = if short_scheme {
                    "postgres"
                } else {
                    "postgresql"
                };
                let mut text = format!(
                    "{scheme}://{user}:{}@{}/{database}",
                    utf8_percent_encode(&password, NON_ALPHANUMERIC),
                    written_hosts.join(",")
                );
                if !query.is_empty() {
                    text.push('?');
                    text.push_str(&query.join("&"));
                }
                Written {
                    text,
                    user,
                    password,
                    database,
                    hosts: hosts.into_iter().map(|(host, _)| host).collect(),
                    sslmode,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// verify-full is always accepted, disable only when every host is
    /// local, the modes that do not check the server never; without a mode,
    /// TCP is verified and Unix sockets are not.
    #[test]
    fn tls_rules_hold_for_every_url(written in urls()) {
        let all_local = written.hosts.iter().all(|(_, local)| *local);
        let all_sockets = written.hosts.iter().all(|(host, _)| host.starts_with('%'));
        let expected = match written.sslmode {
            None => Some(!all_sockets),
            Some("verify-full") => Some(true),
            Some("disable") if all_local => Some(false),
            Some(_) => None,
        };
        match DatabaseUrl::parse(&written.text) {
            Ok(url) => prop_assert_eq!(Some(url.verify_with.is_some()), expected, "{}", written.text),
            Err(e) => {
                prop_assert_eq!(expected, None, "{} refused: {}", written.text, e);
                prop_assert!(e.0.contains("verify-full"), "{}", e);
            }
        }
    }

    /// The password comes through its percent-encoding unchanged, and is
    /// in neither the redacted URL nor a refusal, encoded or not; the
    /// redacted URL still says who, where, which database and how.
    #[test]
    fn the_password_is_kept_and_never_shown(written in urls()) {
        let encoded = utf8_percent_encode(&written.password, NON_ALPHANUMERIC).to_string();
        match DatabaseUrl::parse(&written.text) {
            Ok(url) => {
                prop_assert_eq!(url.config.get_password(), Some(written.password.as_bytes()));
                let shown = url.redacted();
                prop_assert!(!shown.contains(&written.password), "{}", shown);
                prop_assert!(!shown.contains(&encoded), "{}", shown);
                let who = format!("postgresql://{}@", written.user);
                let database = format!("/{}?sslmode=", written.database);
                prop_assert!(shown.starts_with(&who), "{}", shown);
                prop_assert!(shown.contains(&database), "{}", shown);
                for (host, _) in &written.hosts {
                    let name = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                        Some(ip) => ip.to_owned(),
                        None => percent_decode_str(host).decode_utf8_lossy().into_owned(),
                    };
                    let listed = format!("{name}:");
                    prop_assert!(shown.contains(&listed), "{} lacks {}", shown, name);
                }
            }
            Err(e) => {
                prop_assert!(!e.0.contains(&written.password) && !e.0.contains(&encoded));
            }
        }
    }
}
