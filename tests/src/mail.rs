//! Mail: aiosmtpd as the SMTP server, its Maildir decoded by Python's
//! `email` package, and the setup mail a test environment received.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{assert_success, stdout_json, START_TIMEOUT};
use crate::{shows_user_id, Issued, TestEnv, SERVICE_ID, SYSTEM_PYTHON};

/// One mail that the SMTP server stored, with headers and text decoded.
#[derive(Debug, Clone)]
pub struct Mail {
    /// File name in the Maildir.
    pub file: String,
    /// Subject with RFC 2047 words decoded.
    pub subject: String,
    /// Headers in order, values decoded.
    pub headers: Vec<(String, String)>,
    /// All text parts, transfer-decoded (quoted-printable, base64) and
    /// charset-decoded, joined by newlines.
    pub body: String,
    /// Charsets of the text parts.
    pub charsets: Vec<String>,
    /// The message as stored (UTF-8, lossily).
    pub raw: String,
}

impl Mail {
    /// A header's decoded value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Subject, decoded body and raw text together, for "appears anywhere"
    /// and "appears nowhere" checks.
    pub fn everything(&self) -> String {
        format!("{}\n{}\n{}", self.subject, self.body, self.raw)
    }
}

const READ_MAILDIR_PY: &str = r#"
import email, email.policy, json, os, sys
root = sys.argv[1]
out = []
for sub in ("new", "cur"):
    d = os.path.join(root, sub)
    if not os.path.isdir(d):
        continue
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb") as f:
            raw = f.read()
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        texts, charsets = [], []
        for part in msg.walk():
            if part.get_content_maintype() == "text" and not part.is_multipart():
                texts.append(part.get_content())
                charsets.append(part.get_content_charset() or "")
        headers = []
        for k, v in msg.raw_items():
            try:
                v = str(msg.policy.header_factory(k, v))
            except Exception:
                pass
            headers.append([k, v])
        out.append({
            "file": name,
            "subject": str(msg.get("subject", "")),
            "headers": headers,
            "body": "\n".join(texts),
            "charsets": charsets,
            "raw": raw.decode("utf-8", "replace"),
        })
json.dump(out, sys.stdout)
"#;

/// Reads every mail of a Maildir (decoded by Python's `email` package).
pub fn read_maildir(maildir: &Path) -> Vec<Mail> {
    let output = Command::new(SYSTEM_PYTHON)
        .arg("-c")
        .arg(READ_MAILDIR_PY)
        .arg(maildir)
        .output()
        .expect("run python3 to read the Maildir");
    assert_success(&output, "reading the Maildir");
    let value = stdout_json(&output);
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_owned();
    value
        .as_array()
        .expect("array of mails")
        .iter()
        .map(|m| Mail {
            file: text(m, "file"),
            subject: text(m, "subject"),
            headers: m["headers"]
                .as_array()
                .map(|hs| hs.iter().map(|h| (text_at(h, 0), text_at(h, 1))).collect())
                .unwrap_or_default(),
            body: text(m, "body"),
            charsets: m["charsets"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .map(|c| c.as_str().unwrap_or_default().to_owned())
                        .collect()
                })
                .unwrap_or_default(),
            raw: text(m, "raw"),
        })
        .collect()
}

fn text_at(v: &Value, i: usize) -> String {
    v[i].as_str().unwrap_or_default().to_owned()
}

/// aiosmtpd on a loopback port, storing every mail in a Maildir; killed on
/// drop.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    pub maildir: PathBuf,
}

impl SmtpServer {
    /// Starts `/usr/bin/python3 -m aiosmtpd -n -l 127.0.0.1:PORT -c
    /// aiosmtpd.handlers.Mailbox MAILDIR`, its stderr to `log`, and waits
    /// until it greets with 220.
    pub fn start(port: u16, maildir: &Path, log: &Path) -> SmtpServer {
        let child = Command::new(SYSTEM_PYTHON)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log).expect("aiosmtpd log file"))
            .spawn()
            .expect("start aiosmtpd");
        let mut server = SmtpServer {
            child,
            port,
            maildir: maildir.to_owned(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut banner = [0u8; 3];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"220" {
                    let _ = stream.write_all(b"QUIT\r\n");
                    return server;
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "aiosmtpd exited with {status} before accepting connections:\n{}",
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not accept connections on port {port} within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The mails stored so far.
    pub fn mails(&self) -> Vec<Mail> {
        if !self.maildir.exists() {
            return Vec::new();
        }
        read_maildir(&self.maildir)
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestEnv {
    /// The mails stored so far.
    pub fn mails(&self) -> Vec<Mail> {
        if !self.maildir.exists() {
            return Vec::new();
        }
        read_maildir(&self.maildir)
    }

    /// Waits (a few seconds at most) until `count` setup mails are stored;
    /// the setup mails then. Security notices, sent in the background and
    /// arriving at any moment, are left out.
    pub fn wait_for_mails(&self, count: usize) -> Vec<Mail> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mails = self.setup_mails();
            if mails.len() >= count || Instant::now() >= deadline {
                return mails;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The one setup mail of `issued`, checked for what it must carry:
    /// recipient, service ID, user ID (plain or grouped), setup URL, UTF-8
    /// MIME.
    pub fn setup_mail(&self, issued: &Issued) -> Mail {
        let mails = self.wait_for_mails(1);
        assert_eq!(
            mails.len(),
            1,
            "expected exactly one setup mail: {mails:#?}"
        );
        let mail = mails.into_iter().next().expect("one mail");
        let to = format!(
            "{} {}",
            mail.header("To").unwrap_or_default(),
            mail.header("X-RcptTo").unwrap_or_default()
        );
        assert!(
            to.contains(&issued.email),
            "mail not addressed to {}: {mail:#?}",
            issued.email
        );
        assert!(
            mail.header("MIME-Version").is_some(),
            "no MIME-Version: {}",
            mail.raw
        );
        assert!(!mail.subject.trim().is_empty(), "no subject: {}", mail.raw);
        assert!(!mail.body.trim().is_empty(), "no text body: {}", mail.raw);
        assert!(
            mail.charsets
                .iter()
                .all(|c| c.eq_ignore_ascii_case("utf-8") || c.eq_ignore_ascii_case("us-ascii")),
            "text parts must be UTF-8: {:?}",
            mail.charsets
        );
        assert!(
            mail.body.contains(SERVICE_ID),
            "mail lacks the service ID: {}",
            mail.body
        );
        assert!(
            shows_user_id(&mail.body, &issued.user_id),
            "mail lacks the user ID {}: {}",
            issued.user_id,
            mail.body
        );
        assert!(
            mail.body.contains(&issued.setup_url)
                || mail.body.contains(&issued.setup_url.replace('&', "&amp;")),
            "mail lacks the setup URL {}: {}",
            issued.setup_url,
            mail.body
        );
        mail
    }
}

/// Whether `mail` is a security notice (by the subject of the shipped
/// templates, Japanese or English), not a setup mail.
pub fn is_notice(mail: &Mail) -> bool {
    mail.subject.contains("Security notice") || mail.subject.contains("セキュリティ通知")
}

/// Whether `mail` went to `address` (its To header or the envelope).
pub fn addressed_to(mail: &Mail, address: &str) -> bool {
    [mail.header("To"), mail.header("X-RcptTo")]
        .into_iter()
        .flatten()
        .any(|to| to.contains(address))
}

/// Panics if the notice `mail` could let anyone in or lead anywhere: a
/// run of six digits or more (a code, a recovery code, a user ID), a link,
/// or any of `secrets` (a base32 secret, also grouped or in lower case; an
/// activation password, as a number of its own).
pub fn assert_notice_keeps_secrets(mail: &Mail, secrets: &[&str]) {
    for text in [mail.subject.as_str(), mail.body.as_str()] {
        let longest = text
            .split(|c: char| !c.is_ascii_digit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(
            longest < 6,
            "a notice shows a number of {longest} digits:\n{text}"
        );
        for link in ["http://", "https://", "otpauth:", "/setup"] {
            assert!(!text.contains(link), "a notice holds {link:?}:\n{text}");
        }
        let squeezed: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect::<String>()
            .to_ascii_uppercase();
        for secret in secrets {
            let secret = secret.to_ascii_uppercase();
            let numeric = secret.bytes().all(|b| b.is_ascii_digit());
            let shown = if numeric {
                text.split(|c: char| !c.is_ascii_digit())
                    .any(|n| n == secret)
            } else {
                squeezed.contains(secret.trim_end_matches('='))
            };
            assert!(!shown, "a notice holds a secret:\n{text}");
        }
    }
}

impl TestEnv {
    /// The security notices stored so far, setup mails left out.
    pub fn notices(&self) -> Vec<Mail> {
        self.mails().into_iter().filter(is_notice).collect()
    }

    /// The setup mails stored so far, notices left out (a notice is sent
    /// in the background and may arrive at any moment).
    pub fn setup_mails(&self) -> Vec<Mail> {
        self.mails().into_iter().filter(|m| !is_notice(m)).collect()
    }

    /// Waits (ten seconds at most) until `count` notices are stored; the
    /// notices then.
    pub fn wait_for_notices(&self, count: usize) -> Vec<Mail> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let notices = self.notices();
            if notices.len() >= count || Instant::now() >= deadline {
                return notices;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{free_port, require_root_and_peers};

    /// The harness's own peers: aiosmtpd receives a Japanese MIME mail sent
    /// by Python's smtplib, and the Maildir reader decodes it.
    #[test]
    #[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
    fn smtp_server_and_maildir_decoding() {
        require_root_and_peers();
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("maildir");
        let server = SmtpServer::start(free_port(), &maildir, &dir.path().join("smtp.err"));
        let send = format!(
            r#"
import smtplib
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "OTP <no-reply@otp-auth.example>"
m["To"] = "alice@example.jp"
m["Subject"] = "ワンタイムパスワードの設定"
m.set_content("サービスID: TESTSVC\nユーザーID: 1234-5678-9012-34\n" + "x" * 100, cte="base64")
with smtplib.SMTP("127.0.0.1", {}) as s:
    s.send_message(m)
"#,
            server.port
        );
        let output = Command::new(SYSTEM_PYTHON)
            .args(["-c", &send])
            .output()
            .unwrap();
        assert_success(&output, "sending a mail with smtplib");
        let mails = server.mails();
        assert_eq!(mails.len(), 1, "{mails:#?}");
        let mail = &mails[0];
        assert_eq!(mail.subject, "ワンタイムパスワードの設定");
        assert!(mail.body.contains("サービスID: TESTSVC"), "{mail:#?}");
        assert!(shows_user_id(&mail.body, "12345678901234"), "{mail:#?}");
        assert!(
            !mail.raw.contains("TESTSVC"),
            "body should be base64 on the wire"
        );
        assert_eq!(mail.header("X-RcptTo"), Some("alice@example.jp"));
        assert_eq!(mail.charsets, vec!["utf-8".to_owned()]);
    }
}
