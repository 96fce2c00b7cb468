//! The setup pages: `GET /setup` (the activation form, IDs prefilled from
//! the setup link), `POST /setup` (the token page) and `POST /setup/confirm`
//! (the first code), in the language the phone prefers.

use std::net::SocketAddr;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use otpcore::config::Language;
use otpcore::rules::UserId;
use otpcore::totp;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::render::{self, Ctx, Message, Notice, TokenView};
use super::{client_ip, Http, Shared};
use crate::enrolment::{Activation, Attempt, Confirmed, Step};

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct SetupQuery {
    sid: String,
    uid: String,
    lang: String,
}

/// A form of the setup pages, as posted.
pub(super) trait SetupForm: DeserializeOwned {
    /// The step it asks for.
    const STEP: Step;
    /// The fields as typed.
    fn typed(self) -> Typed;
}

/// A form's fields as typed: the IDs, the password or code, the language.
pub(super) struct Typed {
    service_id: String,
    user_id: String,
    proof: Zeroizing<String>,
    lang: String,
}

/// Declares `$name`, the form of `$step`: `service_id`, `user_id`, the
/// password or code under `$proof`, and `lang`, each empty when missing.
macro_rules! setup_form {
    ($name:ident, $step:expr, $proof:ident) => {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        pub(super) struct $name {
            service_id: String,
            user_id: String,
            $proof: String,
            lang: String,
        }

        impl SetupForm for $name {
            const STEP: Step = $step;
            fn typed(self) -> Typed {
                Typed {
                    service_id: self.service_id,
                    user_id: self.user_id,
                    proof: Zeroizing::new(self.$proof),
                    lang: self.lang,
                }
            }
        }
    };
}

setup_form!(ActivateForm, Step::Activation, activation_password);
setup_form!(ConfirmForm, Step::Confirmation, otp);

/// A form admitted: the page context and the IDs as the answer shows them.
struct Shown<'a> {
    ctx: Ctx<'a>,
    sid: String,
    uid: String,
}

impl Http {
    fn default_language(&self) -> Language {
        self.daemon
            .config
            .mail
            .as_ref()
            .map(|m| m.language)
            .unwrap_or(Language::En)
    }

    /// An explicit `lang` (query or form) wins, then Accept-Language, then
    /// `[mail].language`, then English.
    fn language(&self, explicit: &str, headers: &HeaderMap) -> Language {
        Language::parse(explicit)
            .or_else(|| {
                headers
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(accept_language)
            })
            .unwrap_or_else(|| self.default_language())
    }

    fn ctx(&self, lang: Language) -> Ctx<'_> {
        Ctx {
            lang,
            issuer: &self.daemon.config.issuer,
            base: &self.base,
        }
    }

    /// What the form handler does first: the per-address rate limit, the
    /// form, every field filled in, then the attempt it makes (the password
    /// or code without surrounding spaces). A refusal is the page to
    /// answer with.
    fn admitted<F: SetupForm>(
        &self,
        addr: SocketAddr,
        headers: &HeaderMap,
        form: Result<Form<F>, FormRejection>,
    ) -> Result<(Shown<'_>, Attempt), Box<Response>> {
        let peer = client_ip(addr);
        let refuse = |status, message| {
            let lang = self.language("", headers);
            Box::new(html(status, render::message(&self.ctx(lang), message)))
        };
        if !self.allow(peer, F::STEP.as_str()) {
            return Err(refuse(StatusCode::TOO_MANY_REQUESTS, Message::RateLimited));
        }
        let Form(form) = form.map_err(|_| refuse(StatusCode::BAD_REQUEST, Message::BadRequest))?;
        let typed = form.typed();
        let ctx = self.ctx(self.language(&typed.lang, headers));
        let sid = shown_service_id(&typed.service_id);
        let uid = shown_user_id(&typed.user_id);
        if sid.is_empty() || typed.user_id.trim().is_empty() || typed.proof.trim().is_empty() {
            let page = match F::STEP {
                Step::Activation => {
                    render::setup_form(&ctx, &sid, &uid, Some(Notice::MissingFields))
                }
                Step::Confirmation => render::confirm_form(&ctx, &sid, &uid, Notice::MissingFields),
            };
            return Err(Box::new(html(StatusCode::BAD_REQUEST, page)));
        }
        let proof = typed.proof.trim().to_owned();
        let attempt = self
            .enrolment
            .attempt(&typed.service_id, typed.user_id, proof, peer);
        Ok((Shown { ctx, sid, uid }, attempt))
    }
}

/// The preferred of Japanese and English in an Accept-Language header.
fn accept_language(value: &str) -> Option<Language> {
    let mut best: Option<(f32, Language)> = None;
    for item in value.split(',') {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .map(|q| q.trim().parse::<f32>().unwrap_or(0.0))
            .unwrap_or(1.0);
        if q.is_nan() || q <= 0.0 {
            continue;
        }
        let lang = match tag.split('-').next().unwrap_or("") {
            "ja" => Language::Ja,
            "en" => Language::En,
            _ => continue,
        };
        match best {
            Some((b, _)) if b >= q => {}
            _ => best = Some((q, lang)),
        }
    }
    best.map(|(_, lang)| lang)
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// A user ID as shown: grouped when it parses, else as typed (shortened).
fn shown_user_id(typed: &str) -> String {
    UserId::parse(typed)
        .map(|u| u.to_string())
        .unwrap_or_else(|| typed.chars().take(32).collect())
}

fn shown_service_id(typed: &str) -> String {
    typed.trim().chars().take(64).collect()
}

/// `GET /setup`.
pub(super) async fn setup_page(
    State(http): State<Shared>,
    headers: HeaderMap,
    query: Result<Query<SetupQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let ctx = http.ctx(http.language(&query.lang, &headers));
    html(
        StatusCode::OK,
        render::setup_form(
            &ctx,
            &shown_service_id(&query.sid),
            &shown_user_id(&query.uid),
            None,
        ),
    )
}

/// `POST /setup`: the activation form.
pub(super) async fn activate(
    State(http): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<ActivateForm>, FormRejection>,
) -> Response {
    match http.admitted(addr, &headers, form) {
        Ok((shown, attempt)) => activation_page(&shown, http.enrolment.activate(attempt).await),
        Err(refusal) => *refusal,
    }
}

/// `POST /setup/confirm`: the first code.
pub(super) async fn confirm(
    State(http): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<ConfirmForm>, FormRejection>,
) -> Response {
    match http.admitted(addr, &headers, form) {
        Ok((shown, attempt)) => confirmation_page(&shown, http.enrolment.confirm(attempt).await),
        Err(refusal) => *refusal,
    }
}

fn activation_page(shown: &Shown<'_>, activation: Activation) -> Response {
    let Shown { ctx, sid, uid } = shown;
    let wrong = |attempts_left| {
        html(
            StatusCode::UNAUTHORIZED,
            render::setup_form(ctx, sid, uid, Some(Notice::WrongPassword { attempts_left })),
        )
    };
    match activation {
        Activation::Delivered(d) => {
            let user_id = d.user_id.to_string();
            let grouped = totp::grouped(&d.secret);
            let mut body = render::token(
                ctx,
                &TokenView {
                    service_id: &d.service_id,
                    user_id: &user_id,
                    account: &d.account,
                    otpauth_uri: &d.otpauth_uri,
                    secret_grouped: &grouped,
                    period: d.params.period,
                    digits: d.params.digits,
                    algorithm: d.params.algorithm.as_str(),
                },
            );
            html(StatusCode::OK, std::mem::take(&mut *body))
        }
        Activation::Unknown => wrong(None),
        Activation::WrongPassword { attempts_left: 0 } => html(
            StatusCode::GONE,
            render::message(ctx, Message::InvalidatedNow),
        ),
        Activation::WrongPassword { attempts_left } => wrong(Some(attempts_left)),
        Activation::Expired => html(StatusCode::GONE, render::message(ctx, Message::Expired)),
        Activation::Gone(state) => {
            html(StatusCode::GONE, render::message(ctx, Message::Gone(state)))
        }
        Activation::Busy => html(
            StatusCode::SERVICE_UNAVAILABLE,
            render::message(ctx, Message::Busy),
        ),
        Activation::Internal => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            render::message(ctx, Message::Internal),
        ),
    }
}

fn confirmation_page(shown: &Shown<'_>, confirmed: Confirmed) -> Response {
    let Shown { ctx, sid, uid } = shown;
    match confirmed {
        Confirmed::Active {
            period,
            adapted,
            recovery_codes,
        } => {
            let codes: Vec<&str> = recovery_codes.iter().map(|c| c.as_str()).collect();
            html(
                StatusCode::OK,
                render::confirmed(ctx, period, adapted, &codes),
            )
        }
        Confirmed::Wrong => html(
            StatusCode::UNAUTHORIZED,
            render::confirm_form(ctx, sid, uid, Notice::WrongCode),
        ),
        Confirmed::Gone(state) => {
            html(StatusCode::GONE, render::message(ctx, Message::Gone(state)))
        }
        Confirmed::Internal => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            render::message(ctx, Message::Internal),
        ),
    }
}
