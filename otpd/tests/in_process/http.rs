//! The activation page and its JSON API in process: the router with one
//! request at a time, and the listener on a real socket (HTTP and HTTPS),
//! over a daemon with a store of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{self, daemon_with, PASSWORD};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use otpcore::config::{Config, HttpConfig, Language};
use otpcore::enrol::State as EnrolState;
use otpcore::totp::{self, TokenParams};
use otpd::daemon::{unix_now, Daemon, Shutdown};
use otpd::error::ListenError;
use otpd::http::{router, router_with, HttpListener, PasswordChecks, MAX_BODY};
use otpstore::{AuditResult, Enrolment};
use serde_json::{json, Value};
use tower::ServiceExt;
use zeroize::Zeroizing;

/// What the API answers to a wrong first code.
const WRONG_CODE: &str = "the code does not match";

struct Fixture {
    _dir: tempfile::TempDir,
    daemon: Arc<Daemon>,
    app: Router,
}

fn fixture_with(edit: impl FnOnce(&mut Config)) -> Fixture {
    let (dir, daemon) = daemon_with(|config| {
        if let Some(h) = config.http.as_mut() {
            h.rate_limit_per_minute = 1000;
        }
        edit(config);
    });
    let app = router(Arc::clone(&daemon));
    Fixture {
        _dir: dir,
        daemon,
        app,
    }
}

fn fixture() -> Fixture {
    fixture_with(|_| {})
}

impl Fixture {
    /// The same daemon behind routes with `checks`.
    fn with_checks(mut self, checks: PasswordChecks) -> Fixture {
        self.app = router_with(Arc::clone(&self.daemon), checks);
        self
    }

    /// Issues a token for `user` that expires `ttl` seconds from now
    /// (negative: already expired).
    fn issue(&self, user: &str, ttl: i64) -> Enrolment {
        common::issue(&self.daemon, user, ttl)
    }

    fn reload(&self, e: &Enrolment) -> Enrolment {
        common::reload(&self.daemon, e)
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let response = self.app.clone().oneshot(req).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, headers, body.to_vec())
    }

    /// Sends `req`; the status and body of its answer, which must be of
    /// `content_type`.
    async fn answer(&self, req: Request<Body>, content_type: &str) -> (StatusCode, Vec<u8>) {
        let (status, headers, body) = self.send(req).await;
        assert_eq!(
            headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(content_type.as_bytes())
        );
        (status, body)
    }

    async fn api(&self, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        let req = request(path, "application/json", body, 1);
        let (status, body) = self.answer(req, "application/json").await;
        (status, serde_json::from_slice(&body).expect("JSON answer"))
    }

    /// Posts `e`'s service ID, its user ID as `user_id` spells it and the
    /// password or code `proof` to the API's `path`.
    async fn api_step(
        &self,
        path: &str,
        e: &Enrolment,
        user_id: &str,
        proof: (&str, &str),
    ) -> (StatusCode, Value) {
        let mut body = json!({ "service_id": e.service_id, "user_id": user_id });
        body[proof.0] = json!(proof.1);
        self.api(path, body.to_string()).await
    }

    async fn activate(&self, e: &Enrolment, password: &str) -> (StatusCode, Value) {
        let grouped = e.user_id.to_string();
        let proof = ("activation_password", password);
        self.api_step("/api/v1/activate", e, &grouped, proof).await
    }

    async fn confirm(&self, e: &Enrolment, otp: &str) -> (StatusCode, Value) {
        self.api_step("/api/v1/confirm", e, e.user_id.as_str(), ("otp", otp))
            .await
    }

    async fn page(&self, req: Request<Body>) -> (StatusCode, String) {
        let (status, body) = self.answer(req, "text/html; charset=utf-8").await;
        (status, String::from_utf8(body).expect("UTF-8 page"))
    }
}

/// A POST from 192.0.2.`host`.
fn request(path: &str, content_type: &str, body: impl Into<Body>, host: u8) -> Request<Body> {
    let mut req = Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .expect("request");
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, host], 40000))));
    req
}

fn form(path: &str, fields: &[(&str, &str)]) -> Request<Body> {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace(' ', "+")))
        .collect();
    request(path, "application/x-www-form-urlencoded", body.join("&"), 1)
}

fn get(path: &str, accept_language: Option<&str>) -> Request<Body> {
    let mut builder = Request::get(path);
    if let Some(lang) = accept_language {
        builder = builder.header(header::ACCEPT_LANGUAGE, lang);
    }
    builder.body(Body::empty()).expect("request")
}

fn secret_of(value: &Value) -> Vec<u8> {
    totp::decode_base32(value["secret"].as_str().expect("secret"))
        .expect("base32")
        .to_vec()
}

fn audit(f: &Fixture) -> Vec<otpstore::AuditEntry> {
    f.daemon.store().audit_entries(None, 0).expect("audit")
}

#[tokio::test]
async fn activation_delivers_the_token_once() {
    let f = fixture();
    let e = f.issue("alice", 3600);
    let (_, headers, body) = f
        .send(request(
            "/api/v1/activate",
            "application/json",
            json!({
                "service_id": "otpd",
                "user_id": e.user_id.to_string(),
                "activation_password": PASSWORD,
            })
            .to_string(),
            1,
        ))
        .await;
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        headers.get(header::CACHE_CONTROL).map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    let uri = v["otpauth_uri"].as_str().expect("uri");
    assert!(uri.starts_with("otpauth://totp/otpd:alice?"), "{uri}");
    assert!(uri.contains("period=60"), "{uri}");
    assert!(uri.contains(&format!("secret={}", v["secret"].as_str().expect("s"))));
    assert_eq!(v["period"], 60);
    assert_eq!(v["digits"], 6);
    assert_eq!(v["algorithm"], "SHA1");
    let stored = f.daemon.store().secret(&e).expect("secret");
    assert_eq!(secret_of(&v), stored.to_vec());
    assert_eq!(f.reload(&e).state, EnrolState::Activated);

    let (status, v) = f.activate(&e, PASSWORD).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(v["error"].is_string() && v.get("secret").is_none());

    let entries = audit(&f);
    let first = &entries[0];
    assert_eq!(
        (
            first.user.as_str(),
            first.channel.as_str(),
            first.peer.as_str(),
            first.result
        ),
        ("alice", "http", "192.0.2.1", AuditResult::Ok)
    );
    assert_eq!(entries[1].result, AuditResult::Fail);
    let secret = totp::base32(&stored);
    for entry in &entries {
        assert!(!entry.reason.contains(PASSWORD) && !entry.reason.contains(secret.as_str()));
    }
}

#[tokio::test]
async fn wrong_passwords_count_down_then_invalidate() {
    let f = fixture();
    let e = f.issue("alice", 3600);
    for left in (0..5).rev() {
        let (status, v) = f.activate(&e, "9999").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(v["attempts_left"], left, "{v}");
        assert!(v["error"].is_string());
    }
    let (status, v) = f.activate(&e, PASSWORD).await;
    assert_eq!(status, StatusCode::GONE, "{v}");
    assert!(v.get("secret").is_none());
    assert_eq!(f.reload(&e).state, EnrolState::Invalidated);
    // Passwords that break the rules are just wrong ones.
    let other = f.issue("bob", 3600);
    let (status, v) = f.activate(&other, "12ab").await;
    assert_eq!(
        (status, v["attempts_left"].as_u64()),
        (StatusCode::UNAUTHORIZED, Some(4))
    );
}

#[tokio::test]
async fn concurrent_activations_check_at_most_the_limit() {
    // Waits long enough for every check even on a busy machine: this
    // test counts tries, not refusals.
    let f = fixture().with_checks(PasswordChecks::new(2, Duration::from_secs(300)));
    let e = f.issue("alice", 3600);
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let body = json!({
            "service_id": "OTPD",
            "user_id": e.user_id.as_str(),
            "activation_password": "9999",
        });
        let req = request("/api/v1/activate", "application/json", body.to_string(), 1);
        requests.spawn(f.app.clone().oneshot(req));
    }
    let mut answers = Vec::new();
    while let Some(response) = requests.join_next().await {
        let response = response.expect("joins").expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let v: Value = serde_json::from_slice(&body).expect("JSON answer");
        answers.push((status, v));
    }
    let counted: Vec<u64> = answers
        .iter()
        .filter_map(|(_, v)| v["attempts_left"].as_u64())
        .collect();
    assert_eq!(counted.len(), 5, "{answers:?}");
    assert!(counted.contains(&0), "{counted:?}");
    for (status, v) in &answers {
        assert!(
            matches!(
                *status,
                StatusCode::UNAUTHORIZED | StatusCode::GONE | StatusCode::SERVICE_UNAVAILABLE
            ),
            "{status} {v}"
        );
        assert!(v.get("secret").is_none());
    }
    let e = f.reload(&e);
    assert_eq!(
        (e.state, e.activation_failures),
        (EnrolState::Invalidated, 5)
    );
    let checks = audit(&f)
        .iter()
        .filter(|a| a.reason.contains("wrong activation password"))
        .count();
    assert_eq!(checks, 5);
}

#[tokio::test]
async fn a_right_password_after_wrong_ones_keeps_only_the_wrong_count() {
    let f = fixture();
    let e = f.issue("alice", 3600);
    for left in [4, 3] {
        let (_, v) = f.activate(&e, "9999").await;
        assert_eq!(v["attempts_left"], left, "{v}");
    }
    let (status, v) = f.activate(&e, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let e = f.reload(&e);
    assert_eq!((e.state, e.activation_failures), (EnrolState::Activated, 2));
}

#[tokio::test]
async fn no_free_password_check_is_503_and_takes_no_try() {
    // No check ever comes free.
    let f = fixture().with_checks(PasswordChecks::new(0, Duration::from_millis(200)));
    let e = f.issue("alice", 3600);
    let body = json!({
        "service_id": "OTPD",
        "user_id": e.user_id.as_str(),
        "activation_password": PASSWORD,
    });
    let (status, headers, body) = f
        .send(request(
            "/api/v1/activate",
            "application/json",
            body.to_string(),
            1,
        ))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        headers.get(header::RETRY_AFTER).map(|v| v.as_bytes()),
        Some(&b"60"[..])
    );
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert!(
        v["error"].as_str().expect("error").contains("try again"),
        "{v}"
    );
    let reloaded = f.reload(&e);
    assert_eq!(
        (reloaded.state, reloaded.activation_failures),
        (EnrolState::Issued, 0)
    );
    assert!(audit(&f)
        .iter()
        .any(|a| a.reason.contains("too many password checks at once")));
    // With checks to be had, the first wrong password takes the first try.
    let f = f.with_checks(PasswordChecks::default());
    let (status, v) = f.activate(&e, "9999").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["attempts_left"], 4, "{v}");
}

#[tokio::test]
async fn unknown_ids_look_like_a_wrong_password_without_a_count() {
    let f = fixture();
    let e = f.issue("alice", 3600);
    let cases = [
        json!({"service_id": "OTHER", "user_id": e.user_id.as_str(), "activation_password": PASSWORD}),
        json!({"service_id": "OTPD", "user_id": "0000-0000-0000-00", "activation_password": PASSWORD}),
        json!({"service_id": "OTPD", "user_id": "not an id", "activation_password": PASSWORD}),
        json!({"service_id": "OTPD", "user_id": "", "activation_password": ""}),
    ];
    let (_, wrong) = f.activate(&e, "9999").await;
    for body in cases {
        let (status, v) = f.api("/api/v1/activate", body.to_string()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(v.get("attempts_left").is_none(), "{v}");
        assert_eq!(v["error"], wrong["error"]);
    }
    let e = f.reload(&e);
    assert_eq!((e.state, e.activation_failures), (EnrolState::Issued, 1));
    assert!(audit(&f)
        .iter()
        .any(|a| a.user == "-" && a.reason.contains("unknown service ID or user ID")));
}

#[tokio::test]
async fn expired_link_is_gone_and_delivers_nothing() {
    let f = fixture();
    let e = f.issue("alice", -10);
    let (status, v) = f.activate(&e, PASSWORD).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(v["error"].as_str().expect("error").contains("expired"));
    assert!(v.get("secret").is_none());
    assert_eq!(f.reload(&e).state, EnrolState::Issued);
    let (status, page) = f
        .page(form(
            "/setup",
            &[
                ("service_id", "OTPD"),
                ("user_id", e.user_id.as_str()),
                ("activation_password", PASSWORD),
            ],
        ))
        .await;
    assert_eq!(status, StatusCode::GONE);
    assert!(page.contains("expired") && !page.contains("otpauth://"));
}

#[tokio::test]
async fn malformed_bodies_are_400_and_change_nothing() {
    let f = fixture();
    let e = f.issue("alice", 3600);
    let uid = e.user_id.as_str();
    let big = json!({
        "service_id": "OTPD", "user_id": uid, "activation_password": "9999",
        "padding": "x".repeat(MAX_BODY),
    })
    .to_string();
    let mut invalid_utf8 =
        format!("{{\"service_id\":\"OTPD\",\"user_id\":\"{uid}\",\"activation_password\":\"")
            .into_bytes();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, b'"', b'}']);
    let bodies: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        b"".to_vec(),
        b"[]".to_vec(),
        b"{\"service_id\":\"OTPD\"".to_vec(),
        format!("{{\"service_id\":\"OTPD\",\"user_id\":{uid},\"activation_password\":\"9999\"}}")
            .into_bytes(),
        format!("{{\"service_id\":\"OTPD\",\"user_id\":\"{uid}\",\"activation_password\":9999}}")
            .into_bytes(),
        format!("{{\"service_id\":\"OTPD\",\"user_id\":\"{uid}\"}}").into_bytes(),
        format!("{{\"service_id\":null,\"user_id\":\"{uid}\",\"activation_password\":\"9999\"}}")
            .into_bytes(),
        big.into_bytes(),
        invalid_utf8,
    ];
    for body in bodies {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(80)
            .collect::<String>();
        for path in ["/api/v1/activate", "/api/v1/confirm"] {
            let (status, v) = f.api(path, body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {shown}");
            let error = v["error"].as_str().expect("error");
            assert!(!error.contains("9999"), "input echoed: {error}");
        }
    }
    // Oversized forms too.
    let (status, _) = f
        .page(form("/setup", &[("service_id", &"x".repeat(MAX_BODY + 1))]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let e = f.reload(&e);
    assert_eq!((e.state, e.activation_failures), (EnrolState::Issued, 0));
    assert!(audit(&f).is_empty());
}

#[tokio::test]
async fn confirmation_at_the_token_period() {
    let f = fixture();
    let e = f.issue("alice", 3600);
    let (status, v) = f.confirm(&e, "123456").await;
    assert_eq!(status, StatusCode::GONE, "not activated yet: {v}");
    let (_, v) = f.activate(&e, PASSWORD).await;
    let secret = secret_of(&v);
    let (status, v) = f.confirm(&e, "000000").await;
    let wrong_expected = e
        .params
        .matching_step(&secret, "000000", unix_now(), 1)
        .is_none();
    if wrong_expected {
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(v, json!({"error": WRONG_CODE}));
    }
    let code = e.params.code_at(&secret, unix_now());
    let (status, mut v) = f.confirm(&e, &code).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let codes = v
        .as_object_mut()
        .and_then(|o| o.remove("recovery_codes"))
        .expect("recovery_codes");
    let codes: Vec<&str> = codes
        .as_array()
        .expect("an array")
        .iter()
        .map(|c| c.as_str().expect("a string"))
        .collect();
    assert_eq!(codes.len(), 10, "the default [policy] recovery_codes");
    assert!(codes
        .iter()
        .all(|c| c.len() == 11 && otpcore::recovery::digits(c).is_some()));
    assert_eq!(
        v,
        json!({"state": "active", "period": 60, "adapted": false})
    );
    let active = f.reload(&e);
    assert_eq!(
        (active.state, active.params.period),
        (EnrolState::Active, 60)
    );
    let (status, _) = f.confirm(&e, &code).await;
    assert_eq!(status, StatusCode::GONE);
}

/// A 30-second code that no 60-second step near `now` shares.
fn thirty_second_code(secret: &[u8], params: &TokenParams) -> Zeroizing<String> {
    let now = unix_now();
    let thirty = TokenParams {
        period: 30,
        ..*params
    };
    let code = thirty.code_at(secret, now);
    assert!(
        params.matching_step(secret, &code, now, 2).is_none(),
        "one-in-a-million collision"
    );
    code
}

#[tokio::test]
async fn thirty_second_apps_are_adapted_and_audited() {
    let f = fixture_with(|c| c.policy.recovery_codes = 0);
    let e = f.issue("alice", 3600);
    let (_, v) = f.activate(&e, PASSWORD).await;
    let code = thirty_second_code(&secret_of(&v), &e.params);
    let (status, v) = f.confirm(&e, &code).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"state": "active", "period": 30, "adapted": true, "recovery_codes": []})
    );
    assert_eq!(f.reload(&e).params.period, 30);
    let last = audit(&f).pop().expect("entry");
    assert_eq!(
        (last.result, last.channel.as_str()),
        (AuditResult::Ok, "http")
    );
    assert!(
        last.reason.contains("period adapted to 30 s"),
        "{}",
        last.reason
    );
    assert!(!last.reason.contains(code.as_str()));
}

#[tokio::test]
async fn adaptation_can_be_turned_off() {
    let f = fixture_with(|c| c.token.adapt_period = false);
    let e = f.issue("alice", 3600);
    let (_, v) = f.activate(&e, PASSWORD).await;
    let code = thirty_second_code(&secret_of(&v), &e.params);
    let (status, _) = f.confirm(&e, &code).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(f.reload(&e).state, EnrolState::Activated);
}

#[tokio::test]
async fn rate_limit_counts_pages_and_api_per_address() {
    let f = fixture_with(|c| {
        if let Some(h) = c.http.as_mut() {
            h.rate_limit_per_minute = 3;
        }
    });
    let bad = || request("/api/v1/activate", "application/json", "{}", 7);
    assert_eq!(f.send(bad()).await.0, StatusCode::BAD_REQUEST);
    let mut page = form("/setup", &[("service_id", "X")]);
    page.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 1))));
    assert_eq!(f.send(page).await.0, StatusCode::BAD_REQUEST);
    let confirm = request("/api/v1/confirm", "application/json", "{}", 7);
    assert_eq!(f.send(confirm).await.0, StatusCode::BAD_REQUEST);
    // The form page itself is not counted.
    assert_eq!(f.send(get("/setup", None)).await.0, StatusCode::OK);
    for _ in 0..2 {
        let (status, _, body) = f.send(bad()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert!(v["error"].is_string());
    }
    let other = request("/api/v1/activate", "application/json", "{}", 8);
    assert_eq!(f.send(other).await.0, StatusCode::BAD_REQUEST);
    // One audit line for the burst, not one per refused request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let limited: Vec<_> = audit(&f)
        .into_iter()
        .filter(|a| a.reason.contains("rate limit"))
        .collect();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].peer, "192.0.2.7");
}

/// Values of `attr="…"` attributes in `html`.
fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!(" {attr}=\"");
    html.match_indices(&needle)
        .filter_map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

fn assert_self_contained(page: &str) {
    for attr in ["src", "href", "action"] {
        for value in attribute_values(page, attr) {
            assert!(
                !value.contains("http") && !value.contains("//") || value.starts_with("otpauth://"),
                "external {attr}: {value}"
            );
        }
    }
    assert!(!page.contains("<script"));
    assert!(!page.contains("<link"));
    assert!(
        page.contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
    );
}

#[tokio::test]
async fn setup_page_prefills_ids_and_is_self_contained() {
    let f = fixture();
    let (status, page) = f
        .page(get("/setup?sid=OTPD&uid=12345678901234", None))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<html lang=\"en\">"));
    assert!(page.contains("value=\"OTPD\""));
    assert!(page.contains("value=\"1234-5678-9012-34\""));
    assert!(page.contains("Activation password"));
    assert_self_contained(&page);
    let (_, page) = f.page(get("/setup?sid=%22%3E%3Cscript%3E", None)).await;
    assert!(page.contains("value=\"&quot;&gt;&lt;script&gt;\""));
    assert_self_contained(&page);
}

#[tokio::test]
async fn japanese_page_from_accept_language() {
    let f = fixture();
    let (_, page) = f
        .page(get("/setup?sid=OTPD", Some("ja-JP,ja;q=0.9,en;q=0.8")))
        .await;
    assert!(page.contains("<html lang=\"ja\">"));
    for words in ["サービスID", "ユーザID", "利用開始パスワード"] {
        assert!(page.contains(words), "{words}");
    }
    let (_, page) = f.page(get("/setup", Some("en-US,ja;q=0.5"))).await;
    assert!(page.contains("<html lang=\"en\">"));
    // An explicit choice wins.
    let (_, page) = f.page(get("/setup?lang=ja", Some("en"))).await;
    assert!(page.contains("<html lang=\"ja\">"));
    // No header: [mail].language.
    let f = fixture_with(|c| {
        if let Some(m) = c.mail.as_mut() {
            m.language = Language::Ja;
        }
    });
    let (_, page) = f.page(get("/setup", None)).await;
    assert!(page.contains("<html lang=\"ja\">"));
}

#[tokio::test]
async fn accept_language_preferences() {
    // The language of the page for each header, with English and with
    // Japanese as `[mail].language`, the default when the header names
    // neither.
    let cases = [
        ("ja", Some(Language::Ja)),
        ("fr, ja;q=0.3, en;q=0.2", Some(Language::Ja)),
        ("ja;q=0, en-GB", Some(Language::En)),
        ("fr, de", None),
        ("*", None),
        (";;,q=,ja;q=abc", None),
    ];
    for default in [Language::En, Language::Ja] {
        let f = fixture_with(|c| {
            if let Some(m) = c.mail.as_mut() {
                m.language = default;
            }
        });
        for (header, preferred) in cases {
            let (_, page) = f.page(get("/setup", Some(header))).await;
            let lang = preferred.unwrap_or(default).as_str();
            assert!(
                page.contains(&format!("<html lang=\"{lang}\">")),
                "{header:?} with {default:?}"
            );
        }
    }
}

#[tokio::test]
async fn page_flow_in_japanese() {
    let f = fixture();
    let e = f.issue("alice", 3600);
    let uid = e.user_id.to_string();
    // What a phone set to Japanese posts: the IDs, the password or code.
    let post = |path: &'static str,
                service_id: &'static str,
                user_id: String,
                proof: (&'static str, String)| {
        let fields = [
            ("service_id", service_id.to_owned()),
            ("user_id", user_id),
            (proof.0, proof.1),
            ("lang", "ja".to_owned()),
        ];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        f.page(form(path, &fields))
    };
    let wrong = ("activation_password", "1111".to_owned());
    let (status, page) = post("/setup", "OTPD", uid.clone(), wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("あと4回入力できます"), "{page}");
    assert!(page.contains(&format!("value=\"{uid}\"")));

    let right = ("activation_password", PASSWORD.to_owned());
    let (status, page) = post("/setup", "otpd", uid.replace('-', " "), right).await;
    assert_eq!(status, StatusCode::OK);
    assert_self_contained(&page);
    let secret = f.daemon.store().secret(&e).expect("secret");
    let grouped = totp::grouped(&totp::base32(&secret));
    for shown in [
        grouped.as_str(),
        "<svg role=\"img\"",
        "href=\"otpauth://totp/otpd:alice?secret=",
        "period=60",
        "ワンタイムパスワードは1分ごとに変化します",
        "携帯電話機の時刻設定が正しくない場合",
        "action=\"/setup/confirm\"",
    ] {
        assert!(page.contains(shown), "{shown}");
    }

    let code = thirty_second_code(&secret, &e.params);
    let (status, page) = post(
        "/setup/confirm",
        "OTPD",
        uid.clone(),
        ("otp", "12".to_owned()),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("ワンタイムパスワードが正しくありません"));
    let spaced = format!("{} {}", &code[..3], &code[3..]);
    let (status, page) = post("/setup/confirm", "OTPD", uid, ("otp", spaced)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("設定が完了しました"));
    assert!(page.contains("30秒ごとに新しいワンタイムパスワードを表示します。問題ありません"));
}

#[tokio::test]
async fn page_in_english_counts_down_and_locks() {
    let f = fixture();
    let e = f.issue("alice", 3600);
    let wrong = || {
        form(
            "/setup",
            &[
                ("service_id", "OTPD"),
                ("user_id", e.user_id.as_str()),
                ("activation_password", "0000"),
                ("lang", "en"),
            ],
        )
    };
    let (_, page) = f.page(wrong()).await;
    assert!(page.contains("4 tries left"), "{page}");
    for _ in 0..3 {
        f.page(wrong()).await;
    }
    let (status, page) = f.page(wrong()).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(page.contains("too many times"), "{page}");
    let (_, page) = f
        .page(form("/setup", &[("service_id", "OTPD"), ("lang", "en")]))
        .await;
    assert!(page.contains("Please fill in every field"));
}

#[tokio::test]
async fn healthz_and_real_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture();
    let e = f.issue("alice", 3600);
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listener = HttpListener::from_std(socket, None).expect("listener");
    let url = listener.url();
    let addr = url.trim_start_matches("http://").to_owned();
    let (stop, shutdown) = Shutdown::new();
    let server = tokio::spawn(listener.serve(Arc::clone(&f.daemon), shutdown));

    async fn exchange(addr: &str, request: String) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    }
    let answer = exchange(
        &addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok"), "{answer}");

    let body =
        json!({"service_id": "OTPD", "user_id": e.user_id.as_str(), "activation_password": "0000"})
            .to_string();
    let answer = exchange(
        &addr,
        format!(
            "POST /api/v1/activate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("\"attempts_left\":4"), "{answer}");
    assert_eq!(audit(&f)[0].peer, "127.0.0.1");

    common::stopped(stop, server).await;
}

#[tokio::test]
async fn tls_listener_from_config() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let config = HttpConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        public_url: "https://localhost".to_owned(),
        tls_cert: Some(cert),
        tls_key: Some(key.clone()),
        rate_limit_per_minute: 20,
        trusted_proxies: Vec::new(),
    };
    let listener = HttpListener::bind(&config).await.expect("bind");
    let url = listener.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let (stop, shutdown) = Shutdown::new();
    let server = tokio::spawn(listener.serve(Arc::clone(&f.daemon), shutdown));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("https://"))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");

    common::stopped(stop, server).await;

    // A missing key is a start-up error that names the files.
    std::fs::remove_file(&key).expect("remove key");
    let error = HttpListener::bind(&config).await.err().expect("refused");
    assert!(matches!(error, ListenError::Tls { .. }), "{error:?}");
    let message = error.to_string();
    let named = format!(
        "cannot load the TLS certificate {} and key {}: ",
        dir.path().join("tls.crt").display(),
        key.display()
    );
    assert!(message.starts_with(&named), "{message}");

    // So is an address that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address");
    let plain = HttpConfig {
        listen: addr,
        tls_cert: None,
        tls_key: None,
        ..config
    };
    let error = HttpListener::bind(&plain).await.err().expect("refused");
    assert!(matches!(error, ListenError::Http { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("cannot listen on {addr}: ")),
        "{message}"
    );
}

/// A request to `path` from `peer` that claims, in `X-Forwarded-For`, to
/// come from `forwarded_for`.
fn forwarded(path: &str, peer: [u8; 4], forwarded_for: &str) -> Request<Body> {
    let mut req = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-forwarded-for", forwarded_for)
        .body(Body::from("{}"))
        .expect("request");
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((peer, 40000))));
    req
}

#[tokio::test]
async fn rate_limit_counts_the_client_that_a_trusted_proxy_names() {
    let f = fixture_with(|c| {
        if let Some(h) = c.http.as_mut() {
            h.rate_limit_per_minute = 3;
            h.trusted_proxies = vec![otpcore::config::Cidr::parse("127.0.0.1/32").expect("cidr")];
        }
    });
    let proxy = [127, 0, 0, 1];
    let path = "/api/v1/activate";
    for _ in 0..3 {
        let req = forwarded(path, proxy, "198.51.100.1, 203.0.113.1");
        assert_eq!(f.send(req).await.0, StatusCode::BAD_REQUEST);
    }
    let req = forwarded(path, proxy, "198.51.100.2, 203.0.113.1");
    assert_eq!(f.send(req).await.0, StatusCode::TOO_MANY_REQUESTS);
    // Another client behind the same proxy is not held up.
    let req = forwarded(path, proxy, "203.0.113.2");
    assert_eq!(f.send(req).await.0, StatusCode::BAD_REQUEST);
    // An untrusted peer's claim is ignored: it counts by its own address.
    for _ in 0..3 {
        let req = forwarded(path, [192, 0, 2, 9], "203.0.113.3");
        assert_eq!(f.send(req).await.0, StatusCode::BAD_REQUEST);
    }
    let req = forwarded(path, [192, 0, 2, 9], "203.0.113.4");
    assert_eq!(f.send(req).await.0, StatusCode::TOO_MANY_REQUESTS);
    let req = forwarded(path, proxy, "203.0.113.3");
    assert_eq!(f.send(req).await.0, StatusCode::BAD_REQUEST);
    // A header that is no list of addresses counts by the proxy itself.
    let req = forwarded(path, proxy, "203.0.113.5, <script>");
    assert_eq!(f.send(req).await.0, StatusCode::BAD_REQUEST);
    // The audit trail names the client, not the proxy.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let peers: Vec<String> = audit(&f)
        .into_iter()
        .filter(|a| a.reason.contains("rate limit"))
        .map(|a| a.peer)
        .collect();
    assert_eq!(peers, ["203.0.113.1", "192.0.2.9"]);
}
