//! Security notices by mail (`[mail] notify`). The store hands each notice
//! over once its change is committed, on the thread that made the change
//! (the verification thread, an HTTP worker): here it only goes into a
//! bounded queue, so a slow or absent mail server never holds up a login
//! or changes a decision. One thread, `otpd-notify`, sends them in turn;
//! a full queue drops the notice with a warning, a failed send is logged
//! (never with the mail's text). Notices still queued when otpd stops are
//! not sent.

use std::sync::mpsc::{sync_channel, TrySendError};

use otpcore::config::Config;
use otpcore::notice::{Event, Notice};
use otpstore::NoticeSink;

use crate::daemon::printable;

/// Notices waiting to be sent, at most.
pub const QUEUE: usize = 256;

/// Starts the sending thread for the notices `config` asks for, and
/// returns the events and the sink to give the store; `None` when
/// `config` has no `[mail]` or `notify = []`.
pub fn start(config: &Config) -> std::io::Result<Option<(Vec<Event>, NoticeSink)>> {
    let Some(mail) = config.mail.clone() else {
        return Ok(None);
    };
    if mail.notify.is_empty() {
        return Ok(None);
    }
    let events = mail.notify.clone();
    let (queue, waiting) = sync_channel::<Notice>(QUEUE);
    std::thread::Builder::new()
        .name("otpd-notify".to_owned())
        .spawn(move || {
            for notice in waiting {
                let (event, user) = (notice.event().as_str(), printable(&notice.user));
                match otpmail::send_notice(&mail, &notice) {
                    Ok(()) => log::info!("sent the {event} notice for user={user}"),
                    Err(e) => log::warn!("cannot send the {event} notice for user={user}: {e}"),
                }
            }
        })?;
    let sink: NoticeSink = Box::new(move |notice| {
        if let Err(refused) = queue.try_send(notice) {
            let (why, notice) = match refused {
                TrySendError::Full(n) => ("the queue is full", n),
                TrySendError::Disconnected(n) => ("the sending thread has stopped", n),
            };
            log::warn!(
                "the {} notice for user={} is dropped: {why}",
                notice.event().as_str(),
                printable(&notice.user)
            );
        }
    });
    Ok(Some((events, sink)))
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use otpcore::config::{StartTls, Transport};
    use otpcore::notice::What;

    use super::*;

    fn notice(n: u64) -> Notice {
        Notice {
            what: What::RecoveryUsed {
                channel: "pam".to_owned(),
                left: n,
            },
            user: "alice".to_owned(),
            email: "alice@example.jp".to_owned(),
            language: "en".to_owned(),
            service_id: "OTPD".to_owned(),
            at: 1_800_000_000,
        }
    }

    #[test]
    fn nothing_to_send_starts_nothing() {
        let mut config = Config::embedded_defaults(Path::new("/nonexistent"));
        if let Some(mail) = config.mail.as_mut() {
            mail.notify = Vec::new();
        }
        assert!(start(&config).expect("start").is_none());
        config.mail = None;
        assert!(start(&config).expect("start").is_none());
    }

    /// A mail server that accepts connections and never answers holds the
    /// sending thread for its timeout; the sink still returns at once,
    /// whether it queues a notice or drops it.
    #[test]
    fn a_silent_mail_server_never_holds_up_the_sink() {
        let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut config = Config::embedded_defaults(Path::new("/nonexistent"));
        let mail = config.mail.as_mut().expect("[mail]");
        mail.transport = Transport::Smtp;
        mail.smtp_host = "127.0.0.1".to_owned();
        mail.smtp_port = silent.local_addr().expect("addr").port();
        mail.starttls = StartTls::None;
        mail.smtp_timeout_seconds = 30;
        let (events, sink) = start(&config).expect("start").expect("a sink");
        assert_eq!(events, Event::ALL.to_vec());
        let began = Instant::now();
        for n in 0..(3 * QUEUE as u64) {
            sink(notice(n));
        }
        let took = began.elapsed();
        assert!(took < Duration::from_secs(2), "the sink took {took:?}");
    }
}
