//! Property tests of what a phone or a stranger can post to the activation
//! page and its JSON API, in process (the router, one request at a time):
//! whatever the body of `/api/v1/activate`, `/api/v1/confirm`, `/setup` or
//! `/setup/confirm`, the answer is a 4xx that delivers no secret and quotes
//! no password or code, nothing panics, and no enrolment changes. Whatever
//! the query of `GET /setup`, the form renders without the query's markup.
//!
//! The store holds an issued enrolment (alice) and an activated one (bob).
//! Requests that could rightly change them are left out: a well-formed
//! activation with alice's IDs and some password (a wrong password counts),
//! and a confirmation with bob's IDs and six digits (it could be his code).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use otpcore::rules::UserId;
use otpd::daemon::{unix_now, Daemon};
use otpd::http::{router, MAX_BODY};
use otpstore::Enrolment;
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;

use crate::common::{self, issue, reload};
use crate::socket_proptests::{field, json_value, object};

/// Passwords and codes with this prefix must appear in no answer and no
/// audit entry.
const MARK: &str = "Zq7";
/// Markup that must never reach the page unescaped.
const TAG: &str = "<zq7";

/// A daemon with alice's issued and bob's activated enrolment, and its
/// routes.
struct Site {
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    daemon: Arc<Daemon>,
    app: Router,
    alice: Enrolment,
    bob: Enrolment,
}

/// A request's fields as a handler reads them: `None` for a missing or
/// non-string field.
struct Fields {
    service_id: Option<String>,
    user_id: Option<String>,
    /// `activation_password` or `otp`.
    proof: Option<String>,
}

impl Site {
    fn new() -> Site {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let (dir, daemon) = common::daemon_with(|config| {
            if let Some(http) = config.http.as_mut() {
                http.rate_limit_per_minute = u32::MAX;
            }
        });
        let alice = issue(&daemon, "alice", 3600);
        let bob = issue(&daemon, "bob", 3600);
        daemon
            .store()
            .activate(bob.id, unix_now())
            .expect("activate")
            .expect("bob was issued");
        Site {
            runtime,
            _dir: dir,
            app: router(Arc::clone(&daemon)),
            alice: reload(&daemon, &alice),
            bob: reload(&daemon, &bob),
            daemon,
        }
    }

    /// Fails the case unless both enrolments are as they were.
    fn unchanged(&self) -> Result<(), TestCaseError> {
        for e in [&self.alice, &self.bob] {
            let now = format!("{:?}", reload(&self.daemon, e));
            prop_assert_eq!(now, format!("{e:?}"));
        }
        Ok(())
    }

    /// Whether `fields` name `e`, as an attempt reads the IDs.
    fn names(&self, fields: &Fields, e: &Enrolment) -> bool {
        let service = fields
            .service_id
            .as_deref()
            .is_some_and(|s| s.trim().eq_ignore_ascii_case(&e.service_id));
        let user = fields.user_id.as_deref().and_then(UserId::parse);
        service && user.as_ref() == Some(&e.user_id)
    }

    /// Whether the activation form with `fields` tries a password on
    /// alice's enrolment (a form with a blank field is refused first).
    fn form_tries_alice(&self, fields: &Fields) -> bool {
        self.names(fields, &self.alice)
            && fields
                .proof
                .as_deref()
                .is_some_and(|p| !p.trim().is_empty())
    }

    /// Whether a confirmation with `fields` could be bob's first code.
    fn may_confirm_bob(&self, fields: &Fields) -> bool {
        let digits = |p: &str| -> String {
            p.chars()
                .filter(|c| !c.is_whitespace() && *c != '-')
                .collect()
        };
        self.names(fields, &self.bob)
            && fields.proof.as_deref().is_some_and(|p| {
                let code = digits(p);
                code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
            })
    }

    /// Sends `request` from 192.0.2.1; the status, content type and body.
    fn send(&self, mut request: Request<Body>) -> (StatusCode, String, String) {
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 1], 40000))));
        self.runtime.block_on(async {
            let response = self.app.clone().oneshot(request).await.expect("infallible");
            let status = response.status();
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            (
                status,
                content_type,
                String::from_utf8_lossy(&body).into_owned(),
            )
        })
    }

    /// POSTs `body` to `path`, then checks what every refusal must be: a
    /// 400, 401 or 410 of `content_type`, without a secret or a marked
    /// password or code; and both enrolments unchanged. The status.
    fn refused(
        &self,
        path: &str,
        request_type: Option<&str>,
        body: &[u8],
        content_type: &str,
    ) -> Result<StatusCode, TestCaseError> {
        let mut request = Request::post(path);
        if let Some(request_type) = request_type {
            request = request.header(header::CONTENT_TYPE, request_type);
        }
        let request = request.body(Body::from(body.to_vec())).expect("request");
        let (status, answer_type, answer) = self.send(request);
        prop_assert!(
            [
                StatusCode::BAD_REQUEST,
                StatusCode::UNAUTHORIZED,
                StatusCode::GONE
            ]
            .contains(&status),
            "{path}: {status} {answer}"
        );
        prop_assert!(answer_type.starts_with(content_type), "{answer_type}");
        prop_assert!(
            !answer.contains("otpauth://") && !answer.contains("\"secret\""),
            "{path}: {answer}"
        );
        prop_assert!(!answer.contains(MARK), "{path} quotes a password: {answer}");
        self.unchanged()?;
        Ok(status)
    }

    /// Fails unless no audit entry holds a marked password or code.
    fn audit_quotes_nothing(&self) {
        let entries = self.daemon.store().audit_entries(None, 0).expect("audit");
        for entry in entries {
            assert!(!format!("{entry:?}").contains(MARK), "{entry:?}");
        }
    }
}

/// `cases` cases, not shrunk: an enrolment that a case changed stays
/// changed, so every later case would fail too; the first failing input is
/// the one to read.
fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 0,
        ..ProptestConfig::default()
    }
}

/// Service IDs: the deployment's in its spellings, and others.
fn service_ids() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("OTPD".to_owned()),
        Just(" otpd ".to_owned()),
        "[A-Z]{1,8}",
        ".{0,20}",
    ]
}

/// User IDs: alice's and bob's in their spellings, and others.
fn user_ids(site: &Site) -> impl Strategy<Value = String> {
    let known = |e: &Enrolment| {
        prop_oneof![
            Just(e.user_id.as_str().to_owned()),
            Just(e.user_id.to_string()),
            Just(e.user_id.to_string().replace('-', " ")),
        ]
    };
    prop_oneof![
        known(&site.alice),
        known(&site.bob),
        "[0-9]{14}",
        "[0-9 -]{0,20}",
        ".{0,20}",
    ]
}

/// Passwords and codes: digits, anything, and marked ones.
fn proofs() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{4,8}",
        "[0-9 ]{0,9}",
        ".{0,20}",
        "[a-z0-9]{5,9}".prop_map(|s| format!("{MARK}{s}")),
    ]
}

/// A JSON API body: random bytes, any JSON, the three fields as an array,
/// or an object with the fields of the right or the wrong kind, missing or
/// not, other keys, and at times padding past [`MAX_BODY`].
fn api_bodies(site: &Site) -> impl Strategy<Value = Vec<u8>> {
    let text = |s: BoxedStrategy<String>| s.prop_map(Value::from);
    let object = (
        field(text(service_ids().boxed())),
        field(text(user_ids(site).boxed())),
        field(text(proofs().boxed())),
        field(text(proofs().boxed())),
        proptest::collection::btree_map("[a-z_]{1,10}", json_value(), 0..3),
        proptest::option::weighted(0.1, Just("x".repeat(MAX_BODY))),
    )
        .prop_map(|(service_id, user_id, password, otp, extra, padding)| {
            let fields = [
                ("service_id", service_id),
                ("user_id", user_id),
                ("activation_password", password),
                ("otp", otp),
                ("padding", padding.map(Value::from)),
            ];
            object(extra, fields).to_string().into_bytes()
        });
    let array = (service_ids(), user_ids(site), proofs())
        .prop_map(|(s, u, p)| Value::from(vec![s, u, p]).to_string().into_bytes());
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..2 * MAX_BODY),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => array,
        4 => object,
    ]
}

/// The fields of a JSON API body, as the handler reads them: from an
/// object, or from an array of the three in order (serde reads a struct
/// from either); `proof` is `proof_key` of an object. `None` when the
/// handler refuses the body before it reads any field.
fn api_fields(body: &[u8], proof_key: &str) -> Option<Fields> {
    if body.len() > MAX_BODY {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let fields = match &value {
        Value::Array(items) if items.len() == 3 => Fields {
            service_id: text(items.first()),
            user_id: text(items.get(1)),
            proof: text(items.get(2)),
        },
        _ => Fields {
            service_id: text(value.get("service_id")),
            user_id: text(value.get("user_id")),
            proof: text(value.get(proof_key)),
        },
    };
    Some(fields)
}

#[test]
fn api_bodies_are_refused_with_a_4xx_and_change_nothing() {
    let site = Site::new();
    let strategy = api_bodies(&site);
    proptest!(cases(256), |(body in strategy)| {
        for (path, proof_key) in [
            ("/api/v1/activate", "activation_password"),
            ("/api/v1/confirm", "otp"),
        ] {
            let fields = api_fields(&body, proof_key);
            // Every field a string: the request is read, else refused.
            let read = fields.as_ref().is_some_and(|f| {
                f.service_id.is_some() && f.user_id.is_some() && f.proof.is_some()
            });
            // Any password tried on alice's enrolment counts, blank or not.
            let may_change = read && fields.as_ref().is_some_and(|f| match proof_key {
                "otp" => site.may_confirm_bob(f),
                _ => site.names(f, &site.alice),
            });
            if may_change {
                continue;
            }
            let status = site.refused(path, Some("application/json"), &body, "application/json")?;
            prop_assert_eq!(status == StatusCode::BAD_REQUEST, !read, "{} {}", path, status);
        }
    });
    site.audit_quotes_nothing();
}

/// `application/x-www-form-urlencoded` text of `pairs`, every byte but
/// the unreserved ones percent-encoded.
fn form_encoded(pairs: &[(String, String)]) -> Vec<u8> {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

/// Form fields: service and user ID, a password or code under `proof_key`,
/// `lang`, each missing or not, and other keys.
fn form_pairs(
    site: &Site,
    proof_key: &'static str,
) -> impl Strategy<Value = Vec<(String, String)>> {
    let maybe = |s: BoxedStrategy<String>| proptest::option::weighted(0.85, s);
    (
        maybe(service_ids().boxed()),
        maybe(user_ids(site).boxed()),
        maybe(proofs().boxed()),
        maybe(prop_oneof![Just("ja".to_owned()), Just("en".to_owned()), ".{0,8}"].boxed()),
        proptest::collection::vec(("x_[a-z]{1,8}", ".{0,40}"), 0..3),
    )
        .prop_map(move |(service_id, user_id, proof, lang, extra)| {
            let named = [
                ("service_id", service_id),
                ("user_id", user_id),
                (proof_key, proof),
                ("lang", lang),
            ];
            let mut pairs: Vec<(String, String)> = named
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                .collect();
            pairs.extend(extra);
            pairs
        })
}

/// The fields of form pairs as a handler reads them (missing: empty).
fn form_fields(pairs: &[(String, String)], proof_key: &str) -> Fields {
    let get = |key: &str| {
        let value = pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        Some(value.unwrap_or_default())
    };
    Fields {
        service_id: get("service_id"),
        user_id: get("user_id"),
        proof: get(proof_key),
    }
}

const FORM: &str = "application/x-www-form-urlencoded";

#[test]
fn setup_forms_are_refused_with_a_4xx_and_change_nothing() {
    let site = Site::new();
    let forms = (
        form_pairs(&site, "activation_password"),
        form_pairs(&site, "otp"),
    );
    let junk = (
        proptest::collection::vec(any::<u8>(), 0..2 * MAX_BODY),
        proptest::sample::select(vec![
            Some(FORM),
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            Some("application/json"),
            Some("text/plain"),
            Some("multipart/form-data; boundary=x"),
            None,
        ]),
    );
    proptest!(cases(256), |((activate, confirm) in forms, (bytes, kind) in junk)| {
        let fields = form_fields(&activate, "activation_password");
        if !site.form_tries_alice(&fields) {
            site.refused("/setup", Some(FORM), &form_encoded(&activate), "text/html")?;
        }
        if !site.may_confirm_bob(&form_fields(&confirm, "otp")) {
            site.refused("/setup/confirm", Some(FORM), &form_encoded(&confirm), "text/html")?;
        }
        for path in ["/setup", "/setup/confirm"] {
            site.refused(path, kind, &bytes, "text/html")?;
        }
    });
    site.audit_quotes_nothing();
}

#[test]
fn the_setup_page_shows_any_query_without_its_markup() {
    let site = Site::new();
    let value = || {
        prop_oneof![
            service_ids(),
            user_ids(&site),
            ".{0,20}".prop_map(|s| format!("\"'>{TAG} onerror=x>{s}</zq7>&amp;")),
        ]
    };
    let query = proptest::collection::vec(
        (
            prop_oneof![Just("sid"), Just("uid"), Just("lang"), Just("x")],
            value(),
        ),
        0..5,
    );
    proptest!(ProptestConfig::with_cases(128), |(pairs in query)| {
        let pairs: Vec<(String, String)> =
            pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let query = String::from_utf8(form_encoded(&pairs)).expect("ASCII");
        let request = Request::get(format!("/setup?{query}"))
            .body(Body::empty())
            .expect("request");
        let (status, content_type, page) = site.send(request);
        prop_assert_eq!(status, StatusCode::OK, "{}", page);
        prop_assert!(content_type.starts_with("text/html"), "{}", content_type);
        prop_assert!(!page.contains(TAG), "unescaped markup: {page}");
    });
    site.unchanged().expect("the page changes no enrolment");
}
