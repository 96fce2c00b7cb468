//! The two-step login (`[radius] challenge = true`): the first request
//! proves the directory password and gets an Access-Challenge with a fresh
//! State; the request that carries that State back brings the code. The
//! open challenges live in the store (as digests of their States), so the
//! second request may reach another node; each is taken once, by its user
//! through its client, within [`LIFETIME`].

use std::sync::Arc;

use otpstore::{Store, StoreError, CHALLENGE_STATE_LEN};

use crate::daemon::Daemon;

/// How long a State answers its challenge.
pub(super) const LIFETIME: u64 = 120;
/// The prompt sent with every Access-Challenge.
pub(super) const PROMPT: &[u8] = b"One-time password:";

/// A State attribute as this server makes them: exactly
/// [`CHALLENGE_STATE_LEN`] bytes. Anything else is no State of ours.
pub(super) fn parse_state(attribute: &[u8]) -> Option<[u8; CHALLENGE_STATE_LEN]> {
    <[u8; CHALLENGE_STATE_LEN]>::try_from(attribute).ok()
}

/// Runs `work` on the store off the async workers.
async fn on_store<T: Send + 'static>(
    daemon: &Arc<Daemon>,
    work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    let daemon = Arc::clone(daemon);
    tokio::task::spawn_blocking(move || work(daemon.store()).map_err(|e| e.to_string()))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
}

/// Opens a challenge for `user` through `client`; its State.
pub(super) async fn open(
    daemon: &Arc<Daemon>,
    user: &str,
    client: &str,
    now: u64,
) -> Result<[u8; CHALLENGE_STATE_LEN], String> {
    let (user, client) = (user.to_owned(), client.to_owned());
    on_store(daemon, move |store| {
        store.open_challenge(&user, &client, now, now.saturating_add(LIFETIME))
    })
    .await
}

/// Takes the challenge of `state`: whether it was open for `user` through
/// `client`. Taken or not, the State never answers again.
pub(super) async fn take(
    daemon: &Arc<Daemon>,
    state: [u8; CHALLENGE_STATE_LEN],
    user: &str,
    client: &str,
    now: u64,
) -> Result<bool, String> {
    let (user, client) = (user.to_owned(), client.to_owned());
    on_store(daemon, move |store| {
        store.take_challenge(&state, &user, &client, now)
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn only_states_of_our_length_parse(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let parsed = parse_state(&bytes);
            prop_assert_eq!(parsed.is_some(), bytes.len() == CHALLENGE_STATE_LEN);
            if let Some(state) = parsed {
                prop_assert_eq!(&state[..], &bytes[..]);
            }
        }
    }
}
