//! The one place where login codes are verified, for every channel (the
//! Unix socket and RADIUS). A dedicated thread takes the waiting requests
//! in batches and verifies each batch in one transaction of the store:
//! every accepted step is committed before its answer goes out, and many
//! logins share one commit (group commit). Codes of recovery shape are
//! checked as recovery codes, each in a transaction of its own.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use otpcore::verify::Policy;
use otpstore::{Channel, Reauth, VerifyError, VerifyOutcome, VerifyRequest};
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use crate::daemon::{unix_now, Daemon, Decision};

/// Most requests verified in one transaction.
const MAX_BATCH: usize = 256;

/// One code to verify and where its answer goes.
pub struct Job {
    pub user: String,
    pub code: Zeroizing<String>,
    pub channel: Channel,
    pub peer: String,
    pub radius: RadiusFacts,
    pub reply: oneshot::Sender<VerifyOutcome>,
    /// When the job was queued.
    pub queued: Instant,
}

/// What a RADIUS login adds to its code; the default for other channels.
#[derive(Debug, Clone, Default)]
pub struct RadiusFacts {
    /// The client's name and its renegotiation window in seconds.
    pub reauth: Option<(String, u64)>,
    /// The first factor before the code was wrong: the code is not looked
    /// at, and the failure is counted.
    pub first_factor_wrong: bool,
}

/// The handle listeners use; cloning is cheap.
#[derive(Clone)]
pub struct Verifier {
    jobs: mpsc::Sender<Job>,
}

impl Verifier {
    /// Starts the verification thread over `daemon`'s store.
    pub fn start(daemon: Arc<Daemon>) -> std::io::Result<Verifier> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("otpd-verify".to_owned())
            .spawn(move || run(&daemon, &queue))?;
        Ok(Verifier { jobs })
    }

    /// Verifies one code. A store failure or a stopped verifier answers
    /// with an error outcome: nobody gets in.
    pub async fn verify(
        &self,
        user: String,
        code: Zeroizing<String>,
        channel: Channel,
        peer: String,
    ) -> VerifyOutcome {
        self.verify_radius(user, code, channel, peer, RadiusFacts::default())
            .await
    }

    /// [`Verifier::verify`] with what a RADIUS login adds.
    pub async fn verify_radius(
        &self,
        user: String,
        code: Zeroizing<String>,
        channel: Channel,
        peer: String,
        radius: RadiusFacts,
    ) -> VerifyOutcome {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            user,
            code,
            channel,
            peer,
            radius,
            reply,
            queued: Instant::now(),
        };
        if self.jobs.send(job).is_err() {
            return VerifyOutcome::Error(VerifyError::Stopped);
        }
        answer
            .await
            .unwrap_or(VerifyOutcome::Error(VerifyError::Dropped))
    }
}

fn run(daemon: &Daemon, queue: &mpsc::Receiver<Job>) {
    let config = &daemon.config;
    let policy = Policy {
        window: config.token.window,
        hotp_window: config.token.hotp_window,
        max_failures: config.policy.max_failures,
        lockout_seconds: config.policy.lockout_seconds,
    };
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let now = unix_now();
        let requests: Vec<VerifyRequest<'_>> = batch
            .iter()
            .map(|job| VerifyRequest {
                user: &job.user,
                code: &job.code,
                channel: job.channel,
                peer: &job.peer,
                reauth: job.radius.reauth.as_ref().map(|(client, seconds)| Reauth {
                    client,
                    seconds: *seconds,
                }),
                first_factor_wrong: job.radius.first_factor_wrong,
            })
            .collect();
        let outcomes = daemon.store().verify_codes(&requests, now, &policy);
        drop(requests);
        let metrics = daemon.metrics();
        metrics.batch(batch.len());
        let outcomes = outcomes.unwrap_or_else(|e| {
            metrics.store_error();
            log::error!(
                "verification failed, refusing {} request(s): {e}",
                batch.len()
            );
            vec![VerifyOutcome::Error(VerifyError::Store(Arc::new(e))); batch.len()]
        });
        for (job, outcome) in batch.into_iter().zip(outcomes) {
            let reason = match &outcome {
                VerifyOutcome::Accept => "code accepted",
                VerifyOutcome::Reauth => "code accepted again within the renegotiation window",
                VerifyOutcome::Reject(refusal) => refusal.as_str(),
                VerifyOutcome::Error(_) => "internal error",
            };
            let decision = Decision {
                channel: job.channel,
                peer: &job.peer,
                user: &job.user,
                ok: matches!(outcome, VerifyOutcome::Accept | VerifyOutcome::Reauth),
                reason,
                time: now,
            };
            if matches!(outcome, VerifyOutcome::Error(_)) {
                daemon.log_undecided(&decision);
            } else {
                daemon.log(&decision);
            }
            metrics.verified(job.queued.elapsed());
            let _ = job.reply.send(outcome);
        }
    }
}
