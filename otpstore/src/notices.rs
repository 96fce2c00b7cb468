//! Security notices: what the store changed that the token's owner is
//! told about (`[mail] notify`). The store finds out in the transaction
//! that makes the change and hands each notice to the program's sink once
//! the transaction is committed, whichever program and path made it: a
//! token confirmed (page, API, otpctl, self-service), assigned or imported
//! over an active one, a lock or a recovery code (every login channel and
//! `otpctl test`). The sink must not block: the store calls it on the
//! caller's thread, the verification thread among them.

use otpcore::notice::{Event, Notice, What};

use crate::{Enrolment, Store};

/// Takes the notices the store hands over; must return at once.
pub type NoticeSink = Box<dyn Fn(Notice) + Send + Sync>;

/// The events wanted and where their notices go.
#[derive(Default)]
pub(crate) struct Notices {
    events: Vec<Event>,
    sink: Option<NoticeSink>,
}

impl Store {
    /// Hands the notices of `events` to `sink` from now on. A token with no
    /// address (imported, or a hardware token) gets none.
    pub fn set_notices(&mut self, events: &[Event], sink: NoticeSink) {
        self.notices = Notices {
            events: events.to_vec(),
            sink: (!events.is_empty()).then_some(sink),
        };
    }

    /// Hands committed `notices` to the sink, those wanted only.
    pub(crate) fn notify(&self, notices: impl IntoIterator<Item = Notice>) {
        let Some(sink) = &self.notices.sink else {
            return;
        };
        notices
            .into_iter()
            .filter(|n| !n.email.is_empty() && self.notices.events.contains(&n.event()))
            .for_each(sink);
    }

    /// The notice that `enrolment` became active at `now`.
    pub(crate) fn activated(enrolment: &Enrolment, now: u64) -> Notice {
        Notice {
            what: What::Activated,
            user: enrolment.user.clone(),
            email: enrolment.email.clone(),
            language: enrolment.language.clone(),
            service_id: enrolment.service_id.clone(),
            at: now,
        }
    }
}
