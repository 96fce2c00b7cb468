//! `otpctl enrol`: a user sets up a token for themselves through otpd's
//! self-service socket, with the dialogue of `otpctl issue`. It runs as
//! the user, reads no configuration file and opens no store: otpd knows
//! the user from the socket's peer credentials.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use otpcore::config::Language;
use otpcore::time::rfc3339;
use otpproto::selfservice::{
    parse_answer, Answer, Confirm, Confirmed as Activated, Enrol, ErrorCode, Issued, Request,
    MAX_LINE,
};
use serde_json::json;
use zeroize::Zeroizing;

use crate::{
    ask, ask_hidden, confirm_loop, print_issued, read_email, read_line, read_password, Confirmed,
    Keeper, Outcome, Refused,
};

/// Where otpd's self-service socket is unless `--socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/otpd/self.sock";

/// How long otpd may take to answer: an enrolment waits for a free slot,
/// hashes the activation password and sends a mail.
const ANSWER_DEADLINE: Duration = Duration::from_secs(90);
/// How often the state is asked while waiting for the phone.
const POLL: Duration = Duration::from_secs(2);

/// What `otpctl enrol` was asked to do.
pub struct Options {
    pub email: Option<String>,
    pub lang: Option<Language>,
    /// A current code or a recovery code of the user's active token.
    pub otp: Option<String>,
    /// Only confirm the token issued before.
    pub confirm: bool,
    pub no_wait: bool,
    pub json: bool,
}

/// Runs `otpctl enrol` against the socket at `socket`.
pub fn run(socket: &Path, options: Options) -> Outcome {
    let interactive = std::io::stdin().is_terminal();
    let client = Client { socket };
    if options.confirm {
        return client.confirm_issued(interactive, options.json);
    }
    let email = read_email(interactive, options.email)?;
    let password = read_password(interactive)?;
    let mut otp = options.otp.map(Zeroizing::new);
    let issued = loop {
        let request = Request::Enrol(Enrol {
            email: email.as_str(),
            activation_password: password.as_str(),
            language: options.lang.map(Language::as_str),
            otp: otp.as_ref().map(|code| code.trim()),
        });
        match client.ask(&request)? {
            Answer::Issued(issued) => break issued,
            Answer::Error(failure)
                if failure.error == ErrorCode::CodeRequired && otp.is_none() && interactive =>
            {
                eprintln!(
                    "You have an active token; it keeps working until the new one is confirmed."
                );
                otp = Some(ask_hidden(
                    "One-time password of your current token (or a recovery code): ",
                )?);
            }
            other => return Err(refusal(other)),
        }
    };
    drop(password);
    print(&issued, options.json);
    if interactive && !options.no_wait && !options.json {
        println!();
        println!("Open the mail on your phone, unlock the setup with the activation password");
        println!("and add the token to an authenticator app.");
        client.wait_and_confirm()?;
    }
    Ok(())
}

fn print(issued: &Issued, json: bool) {
    if json {
        println!(
            "{}",
            json!({
                "user": issued.user,
                "email": issued.email,
                "service_id": issued.service_id,
                "user_id": issued.user_id,
                "state": "issued",
                "setup_url": issued.setup_url,
                "expires_at": rfc3339(issued.expires_at),
            })
        );
    } else {
        print_issued(
            &issued.email,
            &issued.service_id,
            &issued.user_id,
            &issued.setup_url,
            issued.expires_at,
        );
    }
}

/// What to do when the confirmation prompt is left.
const LATER: &str = "confirm on the setup page, or run `otpctl enrol --confirm` \
                     once the app shows a code.";

/// The refusal an answer other than the one expected stands for.
fn refusal(answer: Answer) -> Refused {
    match answer {
        Answer::Error(failure) => Refused(failure.message),
        _ => Refused("otpd sent an answer that does not fit the request".to_owned()),
    }
}

/// The activated token's answer, as `otpctl confirm` tells it.
fn confirmed(activated: Activated) -> Confirmed {
    let message = if activated.adapted {
        "The app shows a new code every 30 seconds; that is fine: the token now uses \
         30-second codes.\nYour token is active."
            .to_owned()
    } else {
        "Your token is active.".to_owned()
    };
    Confirmed {
        message,
        recovery_codes: activated
            .recovery_codes
            .into_iter()
            .map(Zeroizing::new)
            .collect(),
        keeper: Keeper::User,
    }
}

/// A client of the self-service socket: one connection per request, so
/// that a user who takes their time at a prompt meets no idle timeout.
struct Client<'a> {
    socket: &'a Path,
}

impl Client<'_> {
    /// Sends one request line and reads its answer line.
    fn ask(&self, request: &Request<&str>) -> Result<Answer, Refused> {
        let path = self.socket;
        let unreachable = |e: std::io::Error| {
            Refused(format!(
                "otpd does not answer on {}: {e} (is self-service set up there?)",
                path.display()
            ))
        };
        let stream = UnixStream::connect(path).map_err(unreachable)?;
        stream
            .set_read_timeout(Some(ANSWER_DEADLINE))
            .map_err(unreachable)?;
        stream
            .set_write_timeout(Some(ANSWER_DEADLINE))
            .map_err(unreachable)?;
        let mut line = Zeroizing::new(serde_json::to_vec(request)?);
        line.push(b'\n');
        (&stream).write_all(&line).map_err(unreachable)?;
        let mut answer = Zeroizing::new(Vec::new());
        std::io::BufReader::new(&stream)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut answer)
            .map_err(unreachable)?;
        parse_answer(&answer).map_err(|e| Refused(format!("otpd sent {e}")))
    }

    /// The state of the user's newest token.
    fn state(&self) -> Result<String, Refused> {
        match self.ask(&Request::Status {})? {
            Answer::Status(status) => Ok(status.state),
            other => Err(refusal(other)),
        }
    }

    /// Sends a first code.
    fn confirm(&self, code: &str) -> Result<Confirmed, Refused> {
        match self.ask(&Request::Confirm(Confirm { otp: code }))? {
            Answer::Confirmed(activated) => Ok(confirmed(activated)),
            other => Err(refusal(other)),
        }
    }

    /// Waits until the phone has unlocked the setup, then asks for the
    /// first code until it is confirmed or Enter is pressed.
    fn wait_and_confirm(&self) -> Outcome {
        let mut told = false;
        loop {
            match self.state()?.as_str() {
                "activated" => break,
                "issued" => {
                    if !told {
                        println!("Waiting for the phone to unlock the setup (Ctrl-C to stop)...");
                        told = true;
                    }
                    std::thread::sleep(POLL);
                }
                // Confirmed on the setup page meanwhile.
                "active" => {
                    println!("Your token is active.");
                    return Ok(());
                }
                other => {
                    return Err(Refused(format!(
                    "the setup can no longer be unlocked (it is {other}); run `otpctl enrol` again"
                )))
                }
            }
        }
        println!("The phone has the token.");
        confirm_loop(LATER, |code| self.confirm(code))
    }

    /// `otpctl enrol --confirm`: on a terminal, waits for the phone and
    /// asks for the first code; otherwise sends the first line of stdin.
    fn confirm_issued(&self, interactive: bool, json: bool) -> Outcome {
        if interactive && !json {
            return self.wait_and_confirm();
        }
        let code = if interactive {
            ask("One-time password shown by the app: ")?
        } else {
            read_line()?
        };
        let activated = match self.ask(&Request::Confirm(Confirm { otp: code.trim() }))? {
            Answer::Confirmed(activated) => activated,
            other => return Err(refusal(other)),
        };
        if json {
            println!(
                "{}",
                json!({
                    "user": activated.user,
                    "state": "active",
                    "period": activated.period,
                    "adapted": activated.adapted,
                    "recovery_codes": activated.recovery_codes,
                })
            );
        } else {
            confirmed(activated).print();
        }
        Ok(())
    }
}
