//! Security notices: the mails that tell a token's owner that something
//! happened to the token (`[mail] notify`). The store says what happened
//! ([`Notice`]), after the change is committed; the mail crate words it.
//! A notice never holds a code, a recovery code, a secret, an activation
//! password or a setup URL: [`Notice`] has no field for any of them.

use serde::Deserialize;

/// The events a notice can be sent for, as `[mail] notify` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The token became active: its first code was confirmed, or a
    /// hardware token was assigned.
    Activated,
    /// The user's active token stopped working because a new one took
    /// its place.
    Replaced,
    /// Wrong codes reached `[policy] max_failures` and locked the token.
    Locked,
    /// A recovery code was accepted in place of a code.
    RecoveryUsed,
}

impl Event {
    /// Every event, in the order of the documentation (and the default of
    /// `[mail] notify`).
    pub const ALL: [Event; 4] = [
        Event::Activated,
        Event::Replaced,
        Event::Locked,
        Event::RecoveryUsed,
    ];

    /// `activated`, `replaced`, `locked` or `recovery_used`: the name in
    /// `[mail] notify` and in the templates' file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Activated => "activated",
            Event::Replaced => "replaced",
            Event::Locked => "locked",
            Event::RecoveryUsed => "recovery_used",
        }
    }
}

/// What happened, with what the mail says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    Activated,
    Replaced,
    /// Locked by a wrong code that came through `channel` (the audit
    /// trail's spelling: `pam`, `radius`, `http`, `cli`), until `until`
    /// (Unix seconds) or an administrator's unlock.
    Locked {
        channel: String,
        until: u64,
    },
    /// A recovery code came through `channel` and was accepted; `left`
    /// unused ones remain.
    RecoveryUsed {
        channel: String,
        left: u64,
    },
}

/// One notice to send: to the address and in the language recorded for
/// the token when it was issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub what: What,
    /// The token's user (login name).
    pub user: String,
    /// The address recorded at issue; never empty (a token without one
    /// gets no notice).
    pub email: String,
    /// The language recorded at issue (`ja`, `en`); empty when none was.
    pub language: String,
    pub service_id: String,
    /// When it happened, Unix seconds.
    pub at: u64,
}

impl Notice {
    /// The event this notice is for.
    pub fn event(&self) -> Event {
        match self.what {
            What::Activated => Event::Activated,
            What::Replaced => Event::Replaced,
            What::Locked { .. } => Event::Locked,
            What::RecoveryUsed { .. } => Event::RecoveryUsed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde() {
        for event in Event::ALL {
            let text = format!("e = \"{}\"", event.as_str());
            #[derive(Deserialize)]
            struct One {
                e: Event,
            }
            let one: One = toml::from_str(&text).expect("a known name");
            assert_eq!(one.e, event);
        }
    }

    #[test]
    fn a_notice_knows_its_event() {
        let notice = |what| Notice {
            what,
            user: "taro".to_owned(),
            email: "taro@example.jp".to_owned(),
            language: "ja".to_owned(),
            service_id: "EXAMPLE".to_owned(),
            at: 0,
        };
        let channel = "pam".to_owned();
        let cases = [
            (What::Activated, Event::Activated),
            (What::Replaced, Event::Replaced),
            (
                What::Locked {
                    channel: channel.clone(),
                    until: 900,
                },
                Event::Locked,
            ),
            (What::RecoveryUsed { channel, left: 9 }, Event::RecoveryUsed),
        ];
        for (what, event) in cases {
            assert_eq!(notice(what).event(), event);
        }
    }
}
