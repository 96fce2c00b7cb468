//! The JSON API: `POST /api/v1/activate` and `POST /api/v1/confirm`, the
//! enrolment workflow for custom apps and tests. Every answer is a JSON
//! object; an error is `{"error": "..."}`, which never quotes the input.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::{client_ip, Shared, MAX_BODY};
use crate::enrolment::{Activation, Attempt, Confirmed, Step};

/// The same words for unknown IDs and a wrong password.
const WRONG_CREDENTIALS: &str = "wrong service ID, user ID or activation password";
const WRONG_CODE: &str = "the code does not match";
/// What the API says when it cannot decide (the database is unreachable,
/// say): nothing was done, and asking again later may work.
const INTERNAL: &str = "internal error: a temporary problem on the server; try again later";

/// A request body of the API: the IDs and a password or code.
pub(super) trait ApiRequest: DeserializeOwned {
    /// The step it asks for.
    const STEP: Step;
    /// The fields a body must have, for the error that names them.
    const FIELDS: &'static str;
    /// The service ID, the user ID and the password or code.
    fn into_parts(self) -> (String, String, String);
}

/// Declares `$name`, the body of a request for `$step`: `service_id`,
/// `user_id` and, under `$proof`, the password or code, all strings.
macro_rules! api_request {
    ($name:ident, $step:expr, $proof:ident) => {
        #[derive(Deserialize)]
        pub(super) struct $name {
            service_id: String,
            user_id: String,
            $proof: String,
        }

        impl ApiRequest for $name {
            const STEP: Step = $step;
            const FIELDS: &'static str = concat!("service_id, user_id and ", stringify!($proof));
            fn into_parts(self) -> (String, String, String) {
                (self.service_id, self.user_id, self.$proof)
            }
        }
    };
}

api_request!(ActivateRequest, Step::Activation, activation_password);
api_request!(ConfirmRequest, Step::Confirmation, otp);

pub(super) fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes into `T`; anything else
/// is an error message for a 400 that names what was expected (never
/// echoing the input).
fn parse_json<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    fields: &str,
) -> Result<T, String> {
    let too_large = || format!("the request body must be at most {MAX_BODY} bytes");
    let body = body.map_err(|_| too_large())?;
    if body.len() > MAX_BODY {
        return Err(too_large());
    }
    serde_json::from_slice(&body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            format!("the request must be a JSON object with the string fields {fields}")
        }
        _ => "the request body is not valid JSON in UTF-8".to_owned(),
    })
}

/// `POST /api/v1/activate`.
pub(super) async fn activate(
    State(http): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match admitted::<ActivateRequest>(&http, addr, body) {
        Ok(attempt) => activation_answer(http.enrolment.activate(attempt).await),
        Err(refusal) => *refusal,
    }
}

/// `POST /api/v1/confirm`.
pub(super) async fn confirm(
    State(http): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match admitted::<ConfirmRequest>(&http, addr, body) {
        Ok(attempt) => confirmation_answer(http.enrolment.confirm(attempt).await),
        Err(refusal) => *refusal,
    }
}

/// What both API calls do first: the per-address rate limit, then a body
/// of `R`, then the attempt it makes. A refusal is the answer to send.
fn admitted<R: ApiRequest>(
    http: &Shared,
    addr: SocketAddr,
    body: Result<Bytes, BytesRejection>,
) -> Result<Attempt, Box<Response>> {
    let peer = client_ip(addr);
    if !http.allow(peer, R::STEP.as_str()) {
        return Err(Box::new(json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests from this address; try again in a minute",
        )));
    }
    let request: R = parse_json(body, R::FIELDS)
        .map_err(|message| Box::new(json_error(StatusCode::BAD_REQUEST, &message)))?;
    let (service_id, user_id, proof) = request.into_parts();
    Ok(http.enrolment.attempt(&service_id, user_id, proof, peer))
}

fn activation_answer(activation: Activation) -> Response {
    match activation {
        Activation::Delivered(d) => (
            StatusCode::OK,
            Json(json!({
                "otpauth_uri": d.otpauth_uri.as_str(),
                "secret": d.secret.as_str(),
                "period": d.params.period,
                "digits": d.params.digits,
                "algorithm": d.params.algorithm.as_str(),
            })),
        )
            .into_response(),
        Activation::Unknown => json_error(StatusCode::UNAUTHORIZED, WRONG_CREDENTIALS),
        Activation::WrongPassword { attempts_left } => {
            let error = if attempts_left == 0 {
                "wrong activation password; too many wrong tries, the enrolment is invalidated and must be issued again"
            } else {
                WRONG_CREDENTIALS
            };
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error": error, "attempts_left": attempts_left })),
            )
                .into_response()
        }
        Activation::Expired => json_error(
            StatusCode::GONE,
            "the setup link has expired; the token must be issued again",
        ),
        Activation::Gone(state) => json_error(
            StatusCode::GONE,
            &format!(
                "the enrolment is {}, not waiting for activation",
                state.as_str()
            ),
        ),
        Activation::Busy => {
            let mut response = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many activation requests at once; try again in a minute",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            response
        }
        Activation::Internal => json_error(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
    }
}

fn confirmation_answer(confirmed: Confirmed) -> Response {
    match confirmed {
        Confirmed::Active {
            period,
            adapted,
            recovery_codes,
        } => {
            let codes: Vec<&str> = recovery_codes.iter().map(|c| c.as_str()).collect();
            (
                StatusCode::OK,
                Json(json!({
                    "state": "active",
                    "period": period,
                    "adapted": adapted,
                    "recovery_codes": codes,
                })),
            )
                .into_response()
        }
        Confirmed::Wrong => json_error(StatusCode::UNAUTHORIZED, WRONG_CODE),
        Confirmed::Gone(state) => json_error(
            StatusCode::GONE,
            &format!(
                "the enrolment is {}, not waiting for confirmation",
                state.as_str()
            ),
        ),
        Confirmed::Internal => json_error(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
    }
}
