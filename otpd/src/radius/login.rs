//! The decision about one Access-Request: the code alone, the directory
//! password and the code in one field, or the two steps of a challenge,
//! as the client's `first_factor` and `[radius] challenge` say. Every
//! refusal of a password or a code goes through the verifier, so it counts
//! toward the user's lock and is audited like a wrong code; a directory or
//! store that cannot answer gets the request dropped, so the NAS retries
//! or fails over.

use std::sync::Arc;

use otpcore::config::FirstFactor;
use otpstore::{Channel, VerifyOutcome, CHALLENGE_STATE_LEN};
use zeroize::Zeroizing;

use super::factor::{self, Password};
use super::{challenge, Client, Server, Work};
use crate::daemon::{unix_now, Decision};
use crate::verifier::RadiusFacts;

/// What to answer.
pub(super) enum Outcome {
    Accept,
    Reject,
    /// Access-Challenge with this State.
    Challenge([u8; CHALLENGE_STATE_LEN]),
    /// Nothing: the directory or the store could not decide.
    Silence,
}

impl Server {
    /// Decides about `work`, from `client`. `peer` names the client in the
    /// audit trail.
    pub(super) async fn decide(
        self: &Arc<Self>,
        work: &Work,
        client: &Client,
        peer: String,
    ) -> Outcome {
        let valid_user = !work.user.is_empty()
            && work.user.len() <= 253
            && !work.user.chars().any(char::is_control);
        let password = match &work.password {
            Some(p) if valid_user => p,
            _ => {
                let reason = if valid_user {
                    "radius: no User-Password (PAP) in the request"
                } else {
                    "radius: missing or unusable User-Name"
                };
                let user = if valid_user { work.user.as_str() } else { "-" };
                self.refuse(user, peer, reason).await;
                return Outcome::Reject;
            }
        };
        let radius = self.daemon.config.radius.as_ref();
        let first_factor = radius.map_or(FirstFactor::None, |r| r.first_factor_of(work.client));
        let facts = RadiusFacts {
            reauth: Some((
                client.name.clone(),
                radius.map_or(0, |r| r.reauth_seconds_of(work.client)),
            )),
            first_factor_wrong: false,
        };
        let challenge = radius.is_some_and(|r| r.challenge);
        let directory = self.directory.as_ref();
        match first_factor {
            FirstFactor::None => self.verify(work, password.clone(), peer, facts).await,
            FirstFactor::Ldap if challenge => match &work.state {
                None => match factor::check(directory, &work.user, password).await {
                    Password::Right => {
                        match challenge::open(&self.daemon, &work.user, &client.name, unix_now())
                            .await
                        {
                            Ok(state) => Outcome::Challenge(state),
                            Err(e) => {
                                log::error!("radius: cannot open a challenge, no answer sent: {e}");
                                Outcome::Silence
                            }
                        }
                    }
                    Password::Wrong => self.wrong_password(work, peer, facts).await,
                    Password::Unknown => Outcome::Silence,
                },
                Some(state) => {
                    let taken = match challenge::parse_state(state) {
                        Some(state) => {
                            challenge::take(
                                &self.daemon,
                                state,
                                &work.user,
                                &client.name,
                                unix_now(),
                            )
                            .await
                        }
                        None => Ok(false),
                    };
                    match taken {
                        Ok(true) => self.verify(work, password.clone(), peer, facts).await,
                        Ok(false) => {
                            self.refuse(
                                &work.user,
                                peer,
                                "radius: State unknown, used, expired or not this user's",
                            )
                            .await;
                            Outcome::Reject
                        }
                        Err(e) => {
                            log::error!("radius: cannot take a challenge, no answer sent: {e}");
                            Outcome::Silence
                        }
                    }
                }
            },
            FirstFactor::Ldap => {
                let digits = self.daemon.config.token.digits;
                let Some((secret, code)) = factor::split_code(password, digits) else {
                    return self.wrong_password(work, peer, facts).await;
                };
                match factor::check(directory, &work.user, secret).await {
                    Password::Right => {
                        let code = Zeroizing::new(code.to_owned());
                        self.verify(work, code, peer, facts).await
                    }
                    Password::Wrong => self.wrong_password(work, peer, facts).await,
                    Password::Unknown => Outcome::Silence,
                }
            }
        }
    }

    /// Verifies `code`; a store that cannot decide gets silence.
    async fn verify(
        &self,
        work: &Work,
        code: Zeroizing<String>,
        peer: String,
        facts: RadiusFacts,
    ) -> Outcome {
        match self
            .verifier
            .verify_radius(work.user.clone(), code, Channel::Radius, peer, facts)
            .await
        {
            VerifyOutcome::Accept | VerifyOutcome::Reauth => Outcome::Accept,
            VerifyOutcome::Reject(_) => Outcome::Reject,
            VerifyOutcome::Error(_) => Outcome::Silence,
        }
    }

    /// Refuses a wrong directory password: counted toward the user's lock
    /// and audited by the verifier, the code not looked at.
    async fn wrong_password(&self, work: &Work, peer: String, facts: RadiusFacts) -> Outcome {
        let facts = RadiusFacts {
            first_factor_wrong: true,
            ..facts
        };
        match self.verify(work, Zeroizing::default(), peer, facts).await {
            Outcome::Silence => Outcome::Silence,
            _ => Outcome::Reject,
        }
    }

    /// Audits a refusal decided before any code was looked at.
    async fn refuse(&self, user: &str, peer: String, reason: &'static str) {
        let daemon = Arc::clone(&self.daemon);
        let user = user.to_owned();
        let _ = tokio::task::spawn_blocking(move || {
            daemon.record(&Decision {
                channel: Channel::Radius,
                peer: &peer,
                user: &user,
                ok: false,
                reason,
                time: unix_now(),
            });
        })
        .await;
    }
}
