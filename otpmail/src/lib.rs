//! Mail from otpd and otpctl. The setup mail renders the `conf/mail/LANG.txt`
//! template and sends it as UTF-8 MIME through the transport `[mail]` names.
//!
//! The mail carries the setup URL, the service ID, the user ID, the expiry
//! and a reminder to allow mail from the sender's domain. It never carries
//! the activation password or the token secret: [`SetupMail`] has no field
//! for either, and must not get one.
//!
//! A security notice ([`send_notice`]) renders `conf/mail/EVENT.LANG.txt`
//! (`activated`, `replaced`, `locked`, `recovery_used`) and leaves the same
//! way. It says what happened to the token, when and through which channel,
//! and to call the administrator if it was not the user: never a code, a
//! recovery code, a secret, a password or a link, since a [`Notice`] holds
//! none and its templates can name nothing else.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::{Mailbox, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{FileTransport, Message, SendmailTransport, SmtpTransport, Transport};
use otpcore::config::{Language, MailConfig, StartTls, Transport as MailTransport};
use otpcore::notice::{Event, Notice, What};
use otpcore::rules::UserId;

/// The built-in Japanese template.
const TEMPLATE_JA: &str = include_str!("../../conf/mail/ja.txt");
/// The built-in English template.
const TEMPLATE_EN: &str = include_str!("../../conf/mail/en.txt");

/// The built-in template of a notice of `event` in `lang`.
fn notice_template(event: Event, lang: Language) -> &'static str {
    match (event, lang) {
        (Event::Activated, Language::Ja) => include_str!("../../conf/mail/activated.ja.txt"),
        (Event::Activated, Language::En) => include_str!("../../conf/mail/activated.en.txt"),
        (Event::Replaced, Language::Ja) => include_str!("../../conf/mail/replaced.ja.txt"),
        (Event::Replaced, Language::En) => include_str!("../../conf/mail/replaced.en.txt"),
        (Event::Locked, Language::Ja) => include_str!("../../conf/mail/locked.ja.txt"),
        (Event::Locked, Language::En) => include_str!("../../conf/mail/locked.en.txt"),
        (Event::RecoveryUsed, Language::Ja) => include_str!("../../conf/mail/recovery_used.ja.txt"),
        (Event::RecoveryUsed, Language::En) => include_str!("../../conf/mail/recovery_used.en.txt"),
    }
}

/// What one setup mail says.
pub struct SetupMail<'a> {
    /// Recipient, already checked with `otpcore::rules::check_email`.
    pub to: &'a str,
    /// Login name of the user the token is for.
    pub user: &'a str,
    pub service_id: &'a str,
    /// Shown in hyphenated groups, as on the issuing screen.
    pub user_id: &'a UserId,
    pub setup_url: &'a str,
    /// Unix seconds; shown as `YYYY-MM-DD HH:MM UTC`.
    pub expires_at: u64,
}

/// A setup mail that could not be built or sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("[mail] from = {from:?} is not a usable sender address: {source}")]
    InvalidFrom {
        from: String,
        source: lettre::address::AddressError,
    },
    #[error("{to:?} is not a usable recipient address: {source}")]
    InvalidRecipient {
        to: String,
        source: lettre::address::AddressError,
    },
    #[error("cannot read the mail template {path}: {source}")]
    TemplateRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mail template {origin}, line {line}: {message}")]
    Template {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("cannot build the mail: {source}")]
    Build { source: lettre::error::Error },
    #[error("[mail] smtp_user and smtp_password_file must be set together")]
    AuthIncomplete,
    #[error("cannot read [mail] smtp_password_file {path}: {source}")]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("[mail] smtp_password_file {path} is empty")]
    PasswordEmpty { path: PathBuf },
    #[error("cannot set up TLS for SMTP server {host}: {source}")]
    Tls {
        host: String,
        source: lettre::transport::smtp::Error,
    },
    #[error("SMTP server {host}:{port}: {source}")]
    Smtp {
        host: String,
        port: u16,
        source: lettre::transport::smtp::Error,
    },
    #[error("sendmail command {command}: {source}")]
    Sendmail {
        command: PathBuf,
        source: lettre::transport::sendmail::Error,
    },
    #[error("[mail] transport = \"outbox\" needs outbox_dir")]
    OutboxUnset,
    #[error("cannot create the outbox directory {dir}: {source}")]
    OutboxCreate {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the mail into the outbox directory {dir}: {source}")]
    OutboxWrite {
        dir: PathBuf,
        source: lettre::transport::file::Error,
    },
}

/// The setup link of an enrolment: the activation page under
/// `public_url` (`[http] public_url`) with the service ID and user ID
/// filled in.
pub fn setup_url(public_url: &str, service_id: &str, user_id: &UserId) -> String {
    format!(
        "{public_url}/setup?sid={service_id}&uid={}",
        user_id.as_str()
    )
}

/// Renders the setup mail in `lang` and sends it through `config`'s
/// transport. SMTP failures keep the server's reason text.
pub fn send_setup_mail(
    config: &MailConfig,
    lang: Language,
    mail: &SetupMail,
) -> Result<(), MailError> {
    let from = sender(config)?;
    let (subject, body) = render(config, lang, mail, from.email.domain())?;
    let message = build_message(from, mail.to, subject, body)?;
    deliver(config, &message)
}

/// Renders `notice` in the language recorded for its token (`[mail]
/// language` when none was) and sends it to the token's address through
/// `config`'s transport.
pub fn send_notice(config: &MailConfig, notice: &Notice) -> Result<(), MailError> {
    let from = sender(config)?;
    let (subject, body) = render_notice(config, notice)?;
    let message = build_message(from, &notice.email, subject, body)?;
    deliver(config, &message)
}

/// `[mail] from`, parsed.
fn sender(config: &MailConfig) -> Result<Mailbox, MailError> {
    config
        .from
        .parse()
        .map_err(|source| MailError::InvalidFrom {
            from: config.from.clone(),
            source,
        })
}

/// Builds the MIME message: `text/plain; charset=utf-8`, encoded Subject,
/// Date and Message-ID.
fn build_message(
    from: Mailbox,
    to: &str,
    subject: String,
    body: String,
) -> Result<Message, MailError> {
    let to: Mailbox = to.parse().map_err(|source| MailError::InvalidRecipient {
        to: to.to_owned(),
        source,
    })?;
    Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .date_now()
        .message_id(None)
        .singlepart(SinglePart::plain(body))
        .map_err(|source| MailError::Build { source })
}

/// The rendered subject and body of the setup mail.
fn render(
    config: &MailConfig,
    lang: Language,
    mail: &SetupMail,
    sender_domain: &str,
) -> Result<(String, String), MailError> {
    let built_in = match lang {
        Language::Ja => TEMPLATE_JA,
        Language::En => TEMPLATE_EN,
    };
    let (origin, text) = template(config, &format!("{}.txt", lang.as_str()), built_in, false)?;
    let user_id = mail.user_id.to_string();
    let expires_at = utc_minutes(mail.expires_at);
    let values: [(&str, &str); 6] = [
        ("user", mail.user),
        ("service_id", mail.service_id),
        ("user_id", &user_id),
        ("setup_url", mail.setup_url),
        ("expires_at", &expires_at),
        ("sender_domain", sender_domain),
    ];
    render_template(&origin, &text, &values)
}

/// The template `file`: from `[mail] template_dir` when set, else the
/// built-in one; with `optional`, the built-in one also when the
/// directory has no such file. Its origin for errors, and its text.
fn template(
    config: &MailConfig,
    file: &str,
    built_in: &str,
    optional: bool,
) -> Result<(String, String), MailError> {
    if let Some(dir) = &config.template_dir {
        let path = dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok((path.display().to_string(), text)),
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(MailError::TemplateRead { path, source }),
        }
    }
    Ok((format!("built-in {file}"), built_in.to_owned()))
}

/// The rendered subject and body of a notice. Its template is
/// `EVENT.LANG.txt`; `[mail] template_dir` may replace any of them.
fn render_notice(config: &MailConfig, notice: &Notice) -> Result<(String, String), MailError> {
    let lang = Language::parse(&notice.language).unwrap_or(config.language);
    let event = notice.event();
    let file = format!("{}.{}.txt", event.as_str(), lang.as_str());
    let (origin, text) = template(config, &file, notice_template(event, lang), true)?;
    let time = utc_minutes(notice.at);
    let mut values: Vec<(&str, String)> = vec![
        ("user", notice.user.clone()),
        ("service_id", notice.service_id.clone()),
        ("time", time),
    ];
    match &notice.what {
        What::Activated | What::Replaced => {}
        What::Locked { channel, until } => {
            values.push(("channel", channel_words(channel, lang)));
            values.push(("until", utc_minutes(*until)));
        }
        What::RecoveryUsed { channel, left } => {
            values.push(("channel", channel_words(channel, lang)));
            values.push(("left", left.to_string()));
        }
    }
    let values: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
    render_template(&origin, &text, &values)
}

/// How a notice names the channel a code came through (the audit trail's
/// spelling); an unknown spelling is shown as it is.
fn channel_words(channel: &str, lang: Language) -> String {
    let words = match (channel, lang) {
        ("pam", Language::Ja) => "サーバへのログイン（SSH、sudo など）",
        ("pam", Language::En) => "a login to a server (SSH, sudo, ...)",
        ("radius", Language::Ja) => "VPN・ネットワークへのログイン（RADIUS）",
        ("radius", Language::En) => "a VPN or network login (RADIUS)",
        ("http", Language::Ja) => "トークン設定ページ",
        ("http", Language::En) => "the token setup page",
        ("cli", Language::Ja) => "管理者のコマンド（otpctl）",
        ("cli", Language::En) => "the administrator's command (otpctl)",
        (other, _) => other,
    };
    words.to_owned()
}

/// Splits a template into its `Subject:` line and body and fills both.
fn render_template(
    origin: &str,
    text: &str,
    values: &[(&str, &str)],
) -> Result<(String, String), MailError> {
    let error = |line: usize, message: String| MailError::Template {
        origin: origin.to_owned(),
        line,
        message,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let first = first.trim_end_matches('\r');
    let subject = match first.get(..8) {
        Some(tag) if tag.eq_ignore_ascii_case("Subject:") => first[8..].trim(),
        _ => {
            return Err(error(
                1,
                "the first line must be \"Subject: ...\"".to_owned(),
            ))
        }
    };
    if subject.is_empty() {
        return Err(error(1, "the Subject line is empty".to_owned()));
    }
    let (blank, body) = rest.split_once('\n').unwrap_or((rest, ""));
    if !blank.trim().is_empty() {
        return Err(error(
            2,
            "the second line must be blank (it separates the Subject line from the body)"
                .to_owned(),
        ));
    }
    let subject = fill(subject, values).map_err(|(_, m)| error(1, m))?;
    if subject.chars().any(char::is_control) {
        return Err(error(
            1,
            "the filled-in Subject contains control characters".to_owned(),
        ));
    }
    let body = fill(body, values).map_err(|(line, m)| error(line + 2, m))?;
    Ok((subject, body))
}

/// Replaces every `{name}` in `text`. An unknown name or an unclosed `{` is
/// an error: `(line within text, counted from 1, message)`.
fn fill(text: &str, values: &[(&str, &str)]) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len() + 256);
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let line = text[..text.len() - rest.len() + open].matches('\n').count() + 1;
        let after = &rest[open + 1..];
        let name = after
            .find('}')
            .map(|close| &after[..close])
            .filter(|name| !name.contains('\n') && !name.contains('{'));
        let Some(name) = name else {
            return Err((line, "a '{' without its closing '}'".to_owned()));
        };
        let Some((_, value)) = values.iter().find(|(key, _)| *key == name) else {
            return Err((
                line,
                format!(
                    "unknown placeholder {{{name}}}; known: {}",
                    values
                        .iter()
                        .map(|(p, _)| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            ));
        };
        out.push_str(value);
        rest = &after[name.len() + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Sends `message` through the configured transport.
fn deliver(config: &MailConfig, message: &Message) -> Result<(), MailError> {
    match config.transport {
        MailTransport::Smtp => {
            let host = config.smtp_host.as_str();
            let port = config.smtp_port;
            let tls_error = |source| MailError::Tls {
                host: host.to_owned(),
                source,
            };
            let builder = match config.starttls {
                StartTls::Required => SmtpTransport::starttls_relay(host).map_err(tls_error)?,
                StartTls::Opportunistic => {
                    let params = TlsParameters::new(host.to_owned()).map_err(tls_error)?;
                    SmtpTransport::builder_dangerous(host).tls(Tls::Opportunistic(params))
                }
                StartTls::None => SmtpTransport::builder_dangerous(host),
            };
            let mut builder = builder
                .port(port)
                .timeout(Some(Duration::from_secs(config.smtp_timeout_seconds)));
            match (&config.smtp_user, &config.smtp_password_file) {
                (Some(user), Some(path)) => {
                    let password = read_password(path)?;
                    builder = builder.credentials(Credentials::new(user.clone(), password));
                }
                (None, None) => {}
                _ => return Err(MailError::AuthIncomplete),
            }
            builder
                .build()
                .send(message)
                .map(drop)
                .map_err(|source| MailError::Smtp {
                    host: host.to_owned(),
                    port,
                    source,
                })
        }
        MailTransport::Sendmail => SendmailTransport::new_with_command(&config.sendmail_command)
            .send(message)
            .map_err(|source| MailError::Sendmail {
                command: config.sendmail_command.clone(),
                source,
            }),
        MailTransport::Outbox => {
            let dir = config.outbox_dir.as_deref().ok_or(MailError::OutboxUnset)?;
            ensure_private_dir(dir)?;
            FileTransport::new(dir)
                .send(message)
                .map(drop)
                .map_err(|source| MailError::OutboxWrite {
                    dir: dir.to_owned(),
                    source,
                })
        }
    }
}

/// Reads the SMTP password: the file's content without surrounding
/// whitespace (a trailing newline is usual).
fn read_password(path: &Path) -> Result<String, MailError> {
    let text = std::fs::read_to_string(path).map_err(|source| MailError::PasswordFile {
        path: path.to_owned(),
        source,
    })?;
    let password = text.trim();
    if password.is_empty() {
        return Err(MailError::PasswordEmpty {
            path: path.to_owned(),
        });
    }
    Ok(password.to_owned())
}

/// Creates the outbox directory (mode 0700, parents too) when it is missing.
fn ensure_private_dir(dir: &Path) -> Result<(), MailError> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| MailError::OutboxCreate {
            dir: dir.to_owned(),
            source,
        })
}

/// `YYYY-MM-DD HH:MM UTC` for unix seconds.
fn utc_minutes(unix: u64) -> String {
    let stamp = otpcore::time::rfc3339(unix);
    format!("{} UTC", stamp[..16].replacen('T', " ", 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn user_id() -> UserId {
        UserId::parse("1234-5678-9012-34").expect("valid user ID")
    }

    fn outbox_config(dir: &Path) -> MailConfig {
        let mut config = otpcore::config::Config::embedded_defaults(dir)
            .mail
            .expect("defaults have [mail]");
        config.from = "OTP <no-reply@otp-auth.example>".to_owned();
        config.outbox_dir = Some(dir.join("outbox"));
        config
    }

    fn sample<'a>(user_id: &'a UserId) -> SetupMail<'a> {
        SetupMail {
            to: "taro@phone.example.jp",
            user: "taro",
            service_id: "EXAMPLE",
            user_id,
            setup_url: "https://otp.example.com/setup?sid=EXAMPLE&uid=12345678901234",
            expires_at: 1_795_809_600, // 2026-11-27 20:00 UTC
        }
    }

    /// The one `.eml` file in `dir`.
    fn only_eml(dir: &Path) -> String {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("outbox exists")
            .map(|e| e.expect("dir entry").path())
            .collect();
        assert_eq!(files.len(), 1, "one mail, one file: {files:?}");
        assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("eml"));
        std::fs::read_to_string(&files[0]).expect("readable .eml")
    }

    fn base64_decode(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0u32);
        for b in text
            .bytes()
            .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        {
            let v = ALPHABET
                .iter()
                .position(|a| *a == b)
                .expect("base64 character") as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        out
    }

    fn qp_decode(text: &str) -> Vec<u8> {
        let text = text.replace("=\r\n", "");
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        out
    }

    /// Headers (unfolded) and the decoded body of a single-part message.
    fn parse_eml(eml: &str) -> (Vec<(String, String)>, String) {
        let (head, body) = eml.split_once("\r\n\r\n").expect("header/body split");
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                headers.last_mut().expect("folded line follows a header").1 += line;
            } else {
                let (name, value) = line.split_once(':').expect("header line");
                headers.push((name.to_owned(), value.trim().to_owned()));
            }
        }
        let cte = header(&headers, "Content-Transfer-Encoding").to_ascii_lowercase();
        let body = match cte.as_str() {
            "base64" => base64_decode(body),
            "quoted-printable" => qp_decode(body),
            _ => body.as_bytes().to_vec(),
        };
        (headers, String::from_utf8(body).expect("UTF-8 body"))
    }

    fn header<'h>(headers: &'h [(String, String)], name: &str) -> &'h str {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    /// Decodes RFC 2047 `=?utf-8?b?...?=` words (whitespace between them is
    /// dropped, as the RFC says).
    fn decode_words(value: &str) -> String {
        let mut bytes = Vec::new();
        for word in value.split_whitespace() {
            const PREFIX: &str = "=?utf-8?b?";
            let encoded = word.len() > PREFIX.len() + 2
                && word[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
                && word.ends_with("?=");
            if encoded {
                bytes.extend(base64_decode(&word[PREFIX.len()..word.len() - 2]));
            } else {
                panic!("Subject word {word:?} is not a UTF-8 B encoded-word");
            }
        }
        String::from_utf8(bytes).expect("UTF-8 subject")
    }

    #[test]
    fn both_templates_fill_every_placeholder() {
        let id = user_id();
        let mail = sample(&id);
        let config = outbox_config(Path::new("/nonexistent"));
        for lang in [Language::Ja, Language::En] {
            let (subject, body) =
                render(&config, lang, &mail, "otp-auth.example").expect("template renders");
            let text = format!("{subject}\n{body}");
            assert!(
                !text.contains('{') && !text.contains('}'),
                "{lang:?}: {text}"
            );
            assert!(body.contains("https://otp.example.com/setup?sid=EXAMPLE&uid=12345678901234"));
            assert!(body.contains("EXAMPLE"));
            assert!(body.contains("1234-5678-9012-34"));
            assert!(body.contains("2026-11-27 20:00 UTC"));
            assert!(body.contains("@otp-auth.example"));
            assert!(body.contains("taro"));
        }
        let raw_ja = include_str!("../../conf/mail/ja.txt");
        let raw_en = include_str!("../../conf/mail/en.txt");
        let placeholders = [
            "user",
            "service_id",
            "user_id",
            "setup_url",
            "expires_at",
            "sender_domain",
        ];
        for placeholder in placeholders {
            let p = format!("{{{placeholder}}}");
            assert!(raw_ja.contains(&p), "ja.txt lacks {p}");
            assert!(raw_en.contains(&p), "en.txt lacks {p}");
        }
    }

    #[test]
    fn ja_mail_is_utf8_mime_in_the_outbox() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = outbox_config(tmp.path());
        let id = user_id();
        send_setup_mail(&config, Language::Ja, &sample(&id)).expect("sent");

        let outbox = tmp.path().join("outbox");
        let mode = std::fs::metadata(&outbox)
            .expect("outbox")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);

        let eml = only_eml(&outbox);
        assert!(eml.is_ascii(), "the raw message is 7-bit clean");
        let (headers, body) = parse_eml(&eml);
        assert_eq!(header(&headers, "MIME-Version"), "1.0");
        let content_type = header(&headers, "Content-Type").to_ascii_lowercase();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        assert!(content_type.contains("charset=utf-8"), "{content_type}");
        assert!(header(&headers, "Subject")
            .to_ascii_lowercase()
            .starts_with("=?utf-8?b?"));
        assert_eq!(
            decode_words(header(&headers, "Subject")),
            "ワンタイムパスワード トークン発行ご案内"
        );
        assert!(header(&headers, "From").contains("<no-reply@otp-auth.example>"));
        assert_eq!(header(&headers, "To"), "taro@phone.example.jp");
        assert!(!header(&headers, "Date").is_empty());
        let message_id = header(&headers, "Message-ID");
        assert!(message_id.starts_with('<') && message_id.ends_with('>'));

        assert!(body.contains("ユーザID：1234-5678-9012-34"), "{body}");
        assert!(body.contains("サービスID：EXAMPLE"));
        assert!(body.contains("https://otp.example.com/setup?sid=EXAMPLE&uid=12345678901234"));
        assert!(body.contains("「@otp-auth.example」"));
        assert!(body.contains("2026-11-27 20:00 UTC"));
    }

    #[test]
    fn en_mail_goes_to_the_outbox() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = outbox_config(tmp.path());
        let id = user_id();
        send_setup_mail(&config, Language::En, &sample(&id)).expect("sent");
        let (headers, body) = parse_eml(&only_eml(&tmp.path().join("outbox")));
        assert!(header(&headers, "Subject").contains("One-time password token issued"));
        assert!(body.contains("User ID:    1234-5678-9012-34"), "{body}");
    }

    #[test]
    fn template_dir_overrides_the_built_in_template() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let templates = tmp.path().join("templates");
        std::fs::create_dir(&templates).expect("mkdir");
        std::fs::write(
            templates.join("en.txt"),
            "Subject: Token for {user}\r\n\r\nID {user_id} at {setup_url}, until {expires_at}.\r\n",
        )
        .expect("write template");
        let mut config = outbox_config(tmp.path());
        config.template_dir = Some(templates.clone());
        let id = user_id();
        send_setup_mail(&config, Language::En, &sample(&id)).expect("sent");
        let (headers, body) = parse_eml(&only_eml(&tmp.path().join("outbox")));
        assert_eq!(header(&headers, "Subject"), "Token for taro");
        assert!(body.contains("ID 1234-5678-9012-34 at https://otp.example.com/setup"));

        // No ja.txt in the directory: an error naming the file, no mail.
        let err = send_setup_mail(&config, Language::Ja, &sample(&id)).expect_err("missing");
        assert!(matches!(err, MailError::TemplateRead { .. }), "{err:?}");
        assert!(err.to_string().contains("ja.txt"), "{err}");
    }

    #[test]
    fn bad_templates_are_errors() {
        let values = [("user", "taro")];
        let cases = [
            ("Hello {user}\n\nbody\n", 1, "Subject"),
            ("Subject:   \n\nbody\n", 1, "empty"),
            ("Subject: x\nnot blank\nbody\n", 2, "blank"),
            ("Subject: x\n\nline\nHello {usr}\n", 4, "{usr}"),
            ("Subject: {password}\n\nbody\n", 1, "{password}"),
            ("Subject: x\n\nHello {user\n", 3, "closing"),
        ];
        for (text, line, needle) in cases {
            let err = render_template("test.txt", text, &values).expect_err(text);
            let MailError::Template { line: got, .. } = &err else {
                panic!("{err:?}");
            };
            assert_eq!(*got, line, "{text:?}: {err}");
            assert!(err.to_string().contains(needle), "{text:?}: {err}");
        }

        // Through the public entry point with a template directory.
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("en.txt"), "Dear {user}\n").expect("write");
        let mut config = outbox_config(tmp.path());
        config.template_dir = Some(tmp.path().to_owned());
        let id = user_id();
        let err = send_setup_mail(&config, Language::En, &sample(&id)).expect_err("no Subject");
        assert!(err.to_string().contains("Subject"), "{err}");
        std::fs::write(tmp.path().join("en.txt"), "Subject: x\n\n{secret}\n").expect("write");
        let err = send_setup_mail(&config, Language::En, &sample(&id)).expect_err("unknown");
        assert!(err.to_string().contains("{secret}"), "{err}");
        assert!(!tmp.path().join("outbox").exists(), "no mail was written");
    }

    #[test]
    fn invalid_from_is_a_clear_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut config = outbox_config(tmp.path());
        config.from = "OTP <not an address>".to_owned();
        let id = user_id();
        let err = send_setup_mail(&config, Language::En, &sample(&id)).expect_err("bad from");
        assert!(matches!(err, MailError::InvalidFrom { .. }), "{err:?}");
        assert!(err.to_string().contains("[mail] from"), "{err}");
    }

    #[test]
    fn unreachable_smtp_names_host_and_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut config = outbox_config(tmp.path());
        config.transport = MailTransport::Smtp;
        config.smtp_host = "127.0.0.1".to_owned();
        config.smtp_port = port;
        config.starttls = StartTls::None;
        config.smtp_timeout_seconds = 2;
        let id = user_id();
        let err = send_setup_mail(&config, Language::Ja, &sample(&id)).expect_err("closed port");
        assert!(matches!(err, MailError::Smtp { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }

    #[test]
    fn smtp_auth_needs_user_and_password_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut config = outbox_config(tmp.path());
        config.transport = MailTransport::Smtp;
        config.starttls = StartTls::None;
        config.smtp_user = Some("otpd".to_owned());
        let id = user_id();
        let err = send_setup_mail(&config, Language::En, &sample(&id)).expect_err("no file");
        assert!(matches!(err, MailError::AuthIncomplete), "{err:?}");
        config.smtp_password_file = Some(tmp.path().join("missing.password"));
        let err = send_setup_mail(&config, Language::En, &sample(&id)).expect_err("unreadable");
        assert!(err.to_string().contains("missing.password"), "{err}");
    }

    #[test]
    fn missing_sendmail_names_the_command() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut config = outbox_config(tmp.path());
        config.transport = MailTransport::Sendmail;
        config.sendmail_command = tmp.path().join("no-such-sendmail");
        let id = user_id();
        let err = send_setup_mail(&config, Language::En, &sample(&id)).expect_err("no command");
        assert!(err.to_string().contains("no-such-sendmail"), "{err}");
    }

    /// A notice of each event for taro, in `language`.
    fn notices(language: &str) -> Vec<Notice> {
        let what = [
            What::Activated,
            What::Replaced,
            What::Locked {
                channel: "pam".to_owned(),
                until: 1_795_810_500, // 2026-11-27 20:15 UTC
            },
            What::RecoveryUsed {
                channel: "radius".to_owned(),
                left: 7,
            },
        ];
        what.into_iter()
            .map(|what| Notice {
                what,
                user: "taro".to_owned(),
                email: "taro@phone.example.jp".to_owned(),
                language: language.to_owned(),
                service_id: "EXAMPLE".to_owned(),
                at: 1_795_809_600, // 2026-11-27 20:00 UTC
            })
            .collect()
    }

    /// The longest run of ASCII digits in `text`.
    fn longest_digit_run(text: &str) -> usize {
        text.split(|c: char| !c.is_ascii_digit())
            .map(str::len)
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn every_notice_renders_in_both_languages_without_a_secret() {
        let config = outbox_config(Path::new("/nonexistent"));
        for (language, lang) in [("ja", Language::Ja), ("en", Language::En)] {
            for notice in notices(language) {
                let event = notice.event();
                let (subject, body) = render_notice(&config, &notice).expect("renders");
                let text = format!("{subject}\n{body}");
                assert!(!text.contains(['{', '}']), "{event:?} {language}: {text}");
                assert!(body.contains("taro") && body.contains("EXAMPLE"), "{text}");
                assert!(body.contains("2026-11-27 20:00 UTC"), "{text}");
                // Nothing to log in with and nothing to click: no code
                // (six digits or more in a row), no link.
                assert!(longest_digit_run(&text) < 6, "{event:?} {language}: {text}");
                assert!(!text.contains("://") && !text.contains("www."), "{text}");
                assert!(!text.contains("setup?"), "{text}");
                // The same built-in template as its file, in its language.
                let raw = notice_template(event, lang);
                assert!(
                    raw.starts_with(&format!("Subject: {}", &subject[..3])),
                    "{raw}"
                );
                let japanese = text.chars().any(|c| ('\u{3040}'..='\u{30ff}').contains(&c));
                assert_eq!(
                    japanese,
                    lang == Language::Ja,
                    "{event:?} {language}: {text}"
                );
                match event {
                    Event::Locked => {
                        assert!(body.contains("2026-11-27 20:15 UTC"), "{text}");
                        assert!(body.contains(&channel_words("pam", lang)), "{text}");
                    }
                    Event::RecoveryUsed => {
                        assert!(body.contains('7'), "{text}");
                        assert!(body.contains(&channel_words("radius", lang)), "{text}");
                    }
                    Event::Activated | Event::Replaced => {}
                }
            }
        }
        // No language recorded: the configured one.
        let mut notice = notices("").remove(0);
        let (english, _) = render_notice(&config, &notice).expect("renders");
        assert!(english.is_ascii(), "{english}");
        notice.language = "ja".to_owned();
        let (japanese, _) = render_notice(&config, &notice).expect("renders");
        assert!(!japanese.is_ascii(), "{japanese}");
    }

    #[test]
    fn a_notice_template_may_name_only_what_its_event_has() {
        let config = outbox_config(Path::new("/nonexistent"));
        let values: Vec<(&str, &str)> = vec![("user", "taro"), ("time", "now")];
        for name in ["code", "secret", "setup_url", "user_id", "password"] {
            let text = format!("Subject: x\n\n{{{name}}}\n");
            let err = render_template("t.txt", &text, &values).expect_err(name);
            assert!(err.to_string().contains(&format!("{{{name}}}")), "{err}");
        }
        // {left} belongs to recovery_used, {until} to locked.
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut config = MailConfig {
            template_dir: Some(tmp.path().to_owned()),
            ..config
        };
        std::fs::write(
            tmp.path().join("activated.en.txt"),
            "Subject: x\n\n{left}\n",
        )
        .expect("write");
        let err = render_notice(&config, &notices("en").remove(0)).expect_err("unknown");
        assert!(err.to_string().contains("activated.en.txt"), "{err}");
        assert!(err.to_string().contains("{left}"), "{err}");
        config.template_dir = None;
        render_notice(&config, &notices("en").remove(0)).expect("built-in");
    }

    #[test]
    fn a_notice_goes_to_the_token_address_in_its_language() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = outbox_config(tmp.path());
        let notice = notices("ja").remove(3);
        send_notice(&config, &notice).expect("sent");
        let (headers, body) = parse_eml(&only_eml(&tmp.path().join("outbox")));
        assert_eq!(header(&headers, "To"), "taro@phone.example.jp");
        assert_eq!(
            decode_words(header(&headers, "Subject")),
            "【セキュリティ通知】リカバリーコードが使用されました"
        );
        assert!(body.contains("残りのリカバリーコード：7 個"), "{body}");
        assert!(
            body.contains("VPN・ネットワークへのログイン（RADIUS）"),
            "{body}"
        );
    }

    #[test]
    fn template_dir_replaces_a_notice_template_and_falls_back_without_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let templates = tmp.path().join("templates");
        std::fs::create_dir(&templates).expect("mkdir");
        std::fs::write(
            templates.join("locked.en.txt"),
            "Subject: Locked: {user}\n\n{service_id} locked at {time} via {channel} until {until}.\n",
        )
        .expect("write template");
        let mut config = outbox_config(tmp.path());
        config.template_dir = Some(templates);
        let locked = notices("en").remove(2);
        let (subject, body) = render_notice(&config, &locked).expect("renders");
        assert_eq!(subject, "Locked: taro");
        assert_eq!(
            body,
            "EXAMPLE locked at 2026-11-27 20:00 UTC via a login to a server (SSH, sudo, ...) \
             until 2026-11-27 20:15 UTC.\n"
        );
        // No replaced.en.txt there: the built-in one.
        let (subject, _) = render_notice(&config, &notices("en").remove(1)).expect("renders");
        assert!(subject.contains("replaced"), "{subject}");
    }

    #[test]
    fn expiry_is_shown_in_utc_minutes() {
        assert_eq!(utc_minutes(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minutes(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_minutes(1_709_251_199), "2024-02-29 23:59 UTC");
        assert_eq!(utc_minutes(1_795_809_600), "2026-11-27 20:00 UTC");
        assert_eq!(utc_minutes(4_102_444_800), "2100-01-01 00:00 UTC");
    }
}
