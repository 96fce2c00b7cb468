//! The enrolment flow driven through a test environment: `otpctl issue`,
//! activation and confirmation over the JSON API, `otpctl confirm`.

use serde_json::{json, Value};

use crate::codes::{
    normalize_base32, now_unix, oathtool_code_at, parse_rfc3339_utc, wait_for_fresh_step,
};
use crate::process::{assert_success, describe, stderr, stdout, stdout_json, stdout_json_lines};
use crate::{enrolment_array, shows_digits, TestEnv, SERVICE_ID};

/// What `otpctl issue --json` answered.
#[derive(Debug, Clone)]
pub struct Issued {
    pub user: String,
    pub email: String,
    pub user_id: String,
    pub setup_url: String,
    pub json: Value,
}

/// What a successful activation delivered.
#[derive(Debug, Clone)]
pub struct Token {
    pub otpauth_uri: String,
    pub secret: String,
    pub json: Value,
}

impl TestEnv {
    /// `otpctl issue USER --email EMAIL --json --no-wait` with the activation
    /// password on stdin; checks the JSON contract and that neither output
    /// shows the password.
    pub fn issue(&self, user: &str, email: &str, password: &str) -> Issued {
        let output = self.otpctl(
            &["issue", user, "--email", email, "--json", "--no-wait"],
            &format!("{password}\n"),
        );
        assert_success(&output, "otpctl issue");
        let json = stdout_json(&output);
        let field = |key: &str| -> String {
            json[key]
                .as_str()
                .unwrap_or_else(|| panic!("issue --json lacks string {key:?}: {json}"))
                .to_owned()
        };
        assert_eq!(field("user"), user, "{json}");
        assert_eq!(field("email"), email, "{json}");
        assert_eq!(field("service_id"), SERVICE_ID, "{json}");
        assert_eq!(field("state"), "issued", "{json}");
        let user_id = field("user_id");
        assert!(
            user_id.len() == 14 && user_id.bytes().all(|b| b.is_ascii_digit()),
            "user_id must be 14 digits without hyphens: {json}"
        );
        let setup_url = field("setup_url");
        assert_eq!(
            setup_url,
            format!("{}/setup?sid={SERVICE_ID}&uid={user_id}", self.public_url()),
            "{json}"
        );
        let expires_at = field("expires_at");
        let expires = parse_rfc3339_utc(&expires_at)
            .unwrap_or_else(|| panic!("expires_at is not RFC 3339 UTC: {json}"));
        let expected = now_unix() as i64 + 72 * 3600;
        assert!(
            (expires - expected).abs() < 600,
            "expires_at should be about 72 hours from now: {json}"
        );
        for (name, text) in [("stdout", stdout(&output)), ("stderr", stderr(&output))] {
            assert!(
                !shows_digits(&text, password, &user_id),
                "otpctl issue printed the activation password on {name}: {}",
                describe(&output)
            );
        }
        Issued {
            user: user.to_owned(),
            email: email.to_owned(),
            user_id,
            setup_url,
            json,
        }
    }

    /// `otpctl show USER --json`.
    pub fn show(&self, user: &str) -> Value {
        let output = self.otpctl(&["show", user, "--json"], "");
        assert_success(&output, "otpctl show");
        stdout_json(&output)
    }

    /// The entries of `otpctl audit --user USER --json`.
    pub fn audit(&self, user: &str) -> Vec<Value> {
        let output = self.otpctl(&["audit", "--user", user, "--json"], "");
        assert_success(&output, "otpctl audit");
        stdout_json_lines(&output)
    }

    /// The enrolments of `otpctl list --json`.
    pub fn list(&self) -> Vec<Value> {
        let output = self.otpctl(&["list", "--json"], "");
        assert_success(&output, "otpctl list");
        enrolment_array(&stdout_json(&output))
    }

    /// POST /api/v1/activate for this deployment's service ID.
    pub fn activate(&self, user_id: &str, password: &str) -> (u16, Value) {
        self.http_post_json(
            "/api/v1/activate",
            &json!({
                "service_id": SERVICE_ID,
                "user_id": user_id,
                "activation_password": password,
            }),
        )
    }

    /// A successful activation: 200 and a token with `period=60`.
    pub fn activate_ok(&self, user_id: &str, password: &str) -> Token {
        let (status, json) = self.activate(user_id, password);
        assert_eq!(status, 200, "activation with the right password: {json}");
        let uri = json["otpauth_uri"]
            .as_str()
            .unwrap_or_else(|| panic!("no otpauth_uri: {json}"))
            .to_owned();
        let secret = json["secret"]
            .as_str()
            .unwrap_or_else(|| panic!("no secret: {json}"))
            .to_owned();
        assert!(uri.starts_with("otpauth://totp/"), "otpauth_uri: {uri}");
        let query = uri.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
        };
        assert_eq!(param("period").as_deref(), Some("60"), "otpauth_uri: {uri}");
        assert!(param("issuer").is_some(), "otpauth_uri lacks issuer: {uri}");
        let uri_secret =
            param("secret").unwrap_or_else(|| panic!("otpauth_uri lacks secret: {uri}"));
        assert_eq!(
            normalize_base32(&uri_secret),
            normalize_base32(&secret),
            "the secret of the otpauth_uri and the secret field differ"
        );
        assert!(
            normalize_base32(&secret).trim_end_matches('=').len() >= 26,
            "secret shorter than 128 bits"
        );
        assert_eq!(json["period"], 60, "{json}");
        assert_eq!(json["digits"], 6, "{json}");
        assert_eq!(
            json["algorithm"]
                .as_str()
                .map(str::to_ascii_uppercase)
                .as_deref(),
            Some("SHA1"),
            "{json}"
        );
        Token {
            otpauth_uri: uri,
            secret,
            json,
        }
    }

    /// POST /api/v1/confirm for this deployment's service ID.
    pub fn confirm_api(&self, user_id: &str, otp: &str) -> (u16, Value) {
        self.http_post_json(
            "/api/v1/confirm",
            &json!({"service_id": SERVICE_ID, "user_id": user_id, "otp": otp}),
        )
    }

    /// Issues, activates and confirms a 60-second token for `user` (mail
    /// `USER@example.jp`, activation password 4321) and returns its base32
    /// secret. The confirmation uses the previous step's code, so the codes
    /// of the current step and of every later step are still unused.
    pub fn enrol_active(&self, user: &str) -> String {
        let password = "4321";
        let issued = self.issue(user, &format!("{user}@example.jp"), password);
        let token = self.activate_ok(&issued.user_id, password);
        wait_for_fresh_step(60);
        let previous = oathtool_code_at(&token.secret, 60, now_unix().saturating_sub(60));
        let output = self.otpctl(&["confirm", user, "--json"], &format!("{previous}\n"));
        assert_success(&output, "otpctl confirm with the previous step's code");
        let confirmed = stdout_json(&output);
        assert_eq!(confirmed["state"], "active", "{confirmed}");
        assert_eq!(confirmed["period"], 60, "{confirmed}");
        token.secret
    }

    /// Activates and confirms `issued` through the setup page's forms (as a
    /// phone's browser posts them, in `lang`), the first code from oathtool;
    /// returns the token's base32 secret.
    pub fn enrol_through_page(&self, issued: &Issued, password: &str, lang: &str) -> String {
        let form = format!(
            "service_id={SERVICE_ID}&user_id={}&activation_password={password}&lang={lang}",
            issued.user_id
        );
        let (status, page) = self.http_post_raw(
            "/setup",
            "application/x-www-form-urlencoded",
            form.as_bytes(),
        );
        assert_eq!(status, 200, "the activation form: {page}");
        let secret = page
            .split_once("secret=")
            .map(|(_, rest)| {
                rest.split(['&', '"', '\''])
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| panic!("no secret on the token page:\n{page}"));
        wait_for_fresh_step(60);
        let code = oathtool_code_at(&secret, 60, now_unix());
        let form = format!(
            "service_id={SERVICE_ID}&user_id={}&otp={code}&lang={lang}",
            issued.user_id
        );
        let (status, page) = self.http_post_raw(
            "/setup/confirm",
            "application/x-www-form-urlencoded",
            form.as_bytes(),
        );
        assert_eq!(status, 200, "the confirmation form: {page}");
        assert_eq!(self.show(&issued.user)["state"], "active");
        secret
    }

    /// `otpctl test USER` with `code` on stdin: true when otpd accepted it
    /// (exit 0), false when it refused (exit 1); panics on anything else.
    pub fn otpctl_test(&self, user: &str, code: &str) -> bool {
        let output = self.otpctl(&["test", user], &format!("{code}\n"));
        match output.status.code() {
            Some(0) => true,
            Some(1) if stderr(&output).contains("reject") => false,
            _ => panic!(
                "otpctl test neither accepted nor rejected: {}\n{}",
                describe(&output),
                self.otpd_log()
            ),
        }
    }
}
