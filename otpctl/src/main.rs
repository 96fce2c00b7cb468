//! otpctl: the administrator's tool. Issues tokens (mailing the setup link
//! and recording the activation password), confirms them with their first
//! code, and shows what the store holds. One command is for every user:
//! `otpctl enrol` ([`enrol`]) asks otpd's self-service socket for a token
//! for oneself.

mod enrol;

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{CommandFactory, Parser, Subcommand};
use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
use otpcore::config::{Config, Language};
use otpcore::enrol::State;
use otpcore::notice::Notice;
use otpcore::rules;
use otpcore::time::rfc3339;
use otpproto::clock::unix_now as now;
use otpproto::socket::{parse_answer, Answer, AnswerError, Request, Verify, MAX_LINE};
use otpstore::{
    AuditEntry, AuditResult, Channel, CopySide, Enrolment, FirstCode, NewEnrolment, RecoveryCode,
    Resync, Store, TargetSpec, TokenKind,
};
use serde_json::json;
use zeroize::Zeroizing;

/// Where the configuration lives unless `--config` says otherwise.
const DEFAULT_CONFIG: &str = "/etc/otpd/otpd.toml";

#[derive(Parser)]
#[command(
    name = "otpctl",
    version = otpcore::VERSION,
    about = "Issue, confirm and inspect one-time-password tokens of otpd",
    after_help = "Exit status: 0 success, 1 refused (a message says why), 2 usage error."
)]
struct Cli {
    /// Configuration file [default: /etc/otpd/otpd.toml].
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "defaults")]
    config: Option<PathBuf>,
    /// Use the embedded defaults instead of a file: state in ./otpd-state,
    /// mail to ./otpd-state/outbox, setup page on http://127.0.0.1:8080.
    #[arg(long, global = true)]
    defaults: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Issue a token: record the activation password and mail the setup link
    /// to the user's phone. Interactive on a terminal; otherwise --email is
    /// required and the activation password is the first line of stdin.
    Issue {
        /// Login name of the user.
        user: String,
        /// The phone's mail address (asked twice when omitted).
        #[arg(long, value_name = "ADDR")]
        email: Option<String>,
        /// Language of the setup mail [default: [mail] language].
        #[arg(long, value_name = "ja|en", value_parser = parse_language)]
        lang: Option<Language>,
        /// Replace the user's token; the old one works until the new one is confirmed.
        #[arg(long)]
        replace: bool,
        /// Do not wait at the confirmation prompt.
        #[arg(long)]
        no_wait: bool,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Confirm a token with the first code its app shows (from the prompt, or
    /// the first line of stdin when it is not a terminal).
    Confirm {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Send the setup mail of a not yet activated token again, with a fresh expiry.
    Resend { user: String },
    /// Show a user's tokens.
    Show {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// List every user's current token.
    List {
        /// List the loaded hardware tokens that nobody has yet instead.
        #[arg(long)]
        unassigned: bool,
        #[arg(long)]
        json: bool,
    },
    /// Lift the lock of a user's token and clear its failure count.
    Unlock { user: String },
    /// Learn the clock drift of a user's token from two consecutive codes;
    /// also moves back a last used code that lies ahead of the clock.
    Resync {
        user: String,
        code1: String,
        code2: String,
    },
    /// Ask for a code and have otpd verify it through its socket, exactly
    /// as pam_otp.so does (the code is spent when accepted).
    Test { user: String },
    /// Withdraw a user's tokens (pending and active) at once.
    Revoke { user: String },
    /// Replace the recovery codes of a user's active token with a new set,
    /// printed once; the old codes stop working.
    RecoveryCodes {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Write a consistent copy of the database to PATH while otpd serves.
    /// Back up the key file (state_dir/otpd.key) too.
    Backup { path: PathBuf },
    /// Import tokens from another system, all or nothing; they are active at
    /// once. CSV lines `user,base32secret[,period,digits,algorithm]`, or
    /// google-authenticator-libpam files (a file, or a directory of them; the
    /// user is --user, the file's owner for `.google_authenticator`, else
    /// the file's name). With `--format pskc`, one seed file of hardware
    /// tokens (RFC 6030 PSKC) is loaded by serial number, unassigned: give
    /// them out with `otpctl assign`.
    Import {
        #[arg(long, value_enum)]
        format: ImportFormat,
        /// PSKC: the file holding the pre-shared key in hexadecimal.
        #[arg(long, value_name = "FILE")]
        psk_file: Option<PathBuf>,
        /// Replace tokens the users already have.
        #[arg(long)]
        replace: bool,
        /// The user of a single google-authenticator file.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Give a loaded hardware token to a user, active at once.
    Assign {
        user: String,
        serial: String,
        /// Replace the user's token at once.
        #[arg(long)]
        replace: bool,
    },
    /// Show the audit trail, oldest first.
    Audit {
        /// Only this user's entries.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Only entries from this time on (YYYY-MM-DD or RFC 3339 UTC).
        #[arg(long, value_name = "TIME", value_parser = parse_since)]
        since: Option<u64>,
        /// One JSON object a line (JSON Lines), printed as read.
        #[arg(long)]
        json: bool,
    },
    /// Work on the store as a whole: `store copy`.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Set up a token for yourself through otpd's self-service socket (any
    /// user; reads no configuration file).
    ///
    /// The token is for the user you are logged in as. Asks like `issue`: the phone's mail address twice, the activation
    /// password twice; then waits for the phone and asks for the first code,
    /// and prints your recovery codes. Without a terminal, --email is
    /// required and the activation password is the first line of stdin. A
    /// user with an active token gives one of its current codes or a
    /// recovery code (--otp, or asked); the old token works until the new
    /// one is confirmed.
    Enrol {
        /// otpd's self-service socket.
        #[arg(long, value_name = "PATH", default_value = enrol::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// The phone's mail address (asked twice when omitted).
        #[arg(long, value_name = "ADDR")]
        email: Option<String>,
        /// Language of the setup mail [default: otpd's].
        #[arg(long, value_name = "ja|en", value_parser = parse_language)]
        lang: Option<Language>,
        /// A current code (or a recovery code) of your active token.
        #[arg(long, value_name = "CODE")]
        otp: Option<String>,
        /// Only confirm the token issued before: wait for the phone and give
        /// the first code (from the prompt, or the first line of stdin).
        #[arg(long, conflicts_with_all = ["email", "lang", "otp", "no_wait"])]
        confirm: bool,
        /// Do not wait for the phone and the first code.
        #[arg(long)]
        no_wait: bool,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions for SHELL (bash, zsh or fish) on stdout.
    /// Needs no configuration file.
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy the configured store into an empty PostgreSQL database or a new
    /// SQLite file: every enrolment in every state, replay state, failures,
    /// locks and the audit trail, in one transaction; a target that holds
    /// data is refused. Prints the counts it checked on both sides. The copy
    /// is sealed with the same key file: keep it for the target.
    Copy {
        /// postgresql://USER@HOST[:PORT]/DATABASE[?sslmode=verify-full&sslrootcert=CA]
        /// (the rules of [store] url), or sqlite:///ABSOLUTE/PATH for a new
        /// SQLite file.
        #[arg(long, value_name = "URL")]
        to: String,
        /// The PostgreSQL password, in a file others cannot read.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Print the checked counts as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl CompletionShell {
    fn generator(self) -> clap_complete::Shell {
        match self {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ImportFormat {
    Csv,
    GoogleAuthenticator,
    Pskc,
}

fn parse_since(text: &str) -> Result<u64, String> {
    otpcore::time::parse_rfc3339(text)
        .ok_or_else(|| format!("{text:?} is not a date (YYYY-MM-DD) or RFC 3339 UTC time"))
}

fn parse_language(text: &str) -> Result<Language, String> {
    Language::parse(text).ok_or_else(|| format!("{text:?} is not a language; use ja or en"))
}

/// Exits with status 2 and `message`, as for a usage error found by the
/// argument parser.
fn usage_error(message: &str) -> Outcome {
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

/// A refused operation: exit status 1 with this message.
struct Refused(String);

impl<E: std::fmt::Display> From<E> for Refused {
    fn from(e: E) -> Self {
        Refused(e.to_string())
    }
}

type Outcome = Result<(), Refused>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Refused(message)) => {
            eprintln!("otpctl: {message}");
            ExitCode::from(1)
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, Refused> {
    if cli.defaults {
        return Ok(Config::embedded_defaults(std::path::Path::new(
            "otpd-state",
        )));
    }
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    Ok(otpstore::load_config(&path)?)
}

fn run(cli: Cli) -> Outcome {
    // Completions need neither a configuration nor the store.
    if let Command::Completions { shell } = cli.command {
        let mut command = Cli::command();
        clap_complete::generate(
            shell.generator(),
            &mut command,
            "otpctl",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    // Any user may enrol: no configuration file, no store.
    if let Command::Enrol {
        socket,
        email,
        lang,
        otp,
        confirm,
        no_wait,
        json,
    } = &cli.command
    {
        if cli.config.is_some() || cli.defaults {
            return usage_error(
                "enrol reads no configuration file; name otpd's self-service socket with --socket",
            );
        }
        let options = enrol::Options {
            email: email.clone(),
            lang: *lang,
            otp: otp.clone(),
            confirm: *confirm,
            no_wait: *no_wait,
            json: *json,
        };
        return enrol::run(socket, options);
    }
    let config = load_config(&cli)?;
    drop_privileges(&config.state_dir)?;
    let mut store = Store::from_config(&config)?;
    let notices = Arc::new(Mutex::new(Vec::new()));
    if let Some(mail) = &config.mail {
        let kept = Arc::clone(&notices);
        store.set_notices(
            &mail.notify,
            Box::new(move |n| kept.lock().unwrap_or_else(|e| e.into_inner()).push(n)),
        );
    }
    let ctx = Ctx {
        store,
        config,
        interactive: std::io::stdin().is_terminal(),
    };
    let outcome = ctx.command(cli.command);
    let committed = std::mem::take(&mut *notices.lock().unwrap_or_else(|e| e.into_inner()));
    send_notices(&ctx.config, &committed);
    outcome
}

/// Sends the security notices of what the command changed, once it is
/// committed; a notice that cannot be sent is a warning, and the command's
/// outcome stands.
fn send_notices(config: &Config, notices: &[Notice]) {
    let Some(mail) = &config.mail else {
        return;
    };
    for notice in notices {
        if let Err(e) = otpmail::send_notice(mail, notice) {
            eprintln!(
                "otpctl: warning: cannot send the {} notice for {}: {e}",
                notice.event().as_str(),
                otpproto::logtext::escape(&notice.user, otpproto::logtext::MAX_CHARS)
            );
        }
    }
}

impl Ctx {
    /// Runs one command (any but `completions`).
    fn command(&self, command: Command) -> Outcome {
        match command {
            Command::Issue {
                user,
                email,
                lang,
                replace,
                no_wait,
                json,
            } => self.issue(&user, email, lang, replace, no_wait, json),
            Command::Confirm { user, json } => self.confirm(&user, json),
            Command::Resend { user } => self.resend(&user),
            Command::Show { user, json } => self.show(&user, json),
            Command::List {
                unassigned: false,
                json,
            } => self.list(json),
            Command::List {
                unassigned: true,
                json,
            } => self.list_unassigned(json),
            Command::Unlock { user } => self.unlock(&user),
            Command::Resync { user, code1, code2 } => self.resync(&user, &code1, &code2),
            Command::Test { user } => self.test(&user),
            Command::Revoke { user } => self.revoke(&user),
            Command::RecoveryCodes { user, json } => self.recovery_codes(&user, json),
            Command::Backup { path } => self.backup(&path),
            Command::Import {
                format,
                psk_file,
                replace,
                user,
                json,
                paths,
            } => self.import(
                format,
                replace,
                user.as_deref(),
                psk_file.as_deref(),
                json,
                &paths,
            ),
            Command::Assign {
                user,
                serial,
                replace,
            } => self.assign(&user, &serial, replace),
            Command::Audit { user, since, json } => self.audit_trail(user.as_deref(), since, json),
            Command::Store {
                command:
                    StoreCommand::Copy {
                        to,
                        password_file,
                        json,
                    },
            } => self.store_copy(&to, password_file.as_deref(), json),
            Command::Completions { .. } | Command::Enrol { .. } => Ok(()),
        }
    }
}

/// Run as root on a `state_dir` that belongs to another user (the user otpd
/// runs as), becomes that user before the store is opened: its groups (or
/// none when it has no passwd entry), its gid, then its uid. So the
/// database, its WAL files and the key file that otpctl creates stay usable
/// by otpd. Refuses when the switch fails rather than going on as root.
fn drop_privileges(state_dir: &std::path::Path) -> Outcome {
    use nix::unistd::{getgrouplist, setgid, setgroups, setuid, Gid, Uid, User};
    use std::os::unix::fs::MetadataExt;
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let Ok(meta) = std::fs::metadata(state_dir) else {
        return Ok(());
    };
    if meta.uid() == 0 {
        return Ok(());
    }
    let uid = Uid::from_raw(meta.uid());
    let refuse = |what: &str, e: nix::Error| {
        Refused(format!(
            "{} belongs to uid {uid}, and switching to it failed ({what}: {e}); \
             nothing was done (run otpctl as that user)",
            state_dir.display()
        ))
    };
    let user = User::from_uid(uid).map_err(|e| refuse("reading the passwd entry", e))?;
    let (gid, groups) = match &user {
        Some(u) => {
            let name = std::ffi::CString::new(u.name.as_str())
                .map_err(|_| refuse("user name", nix::Error::EINVAL))?;
            let groups = getgrouplist(&name, u.gid).map_err(|e| refuse("getgrouplist", e))?;
            (u.gid, groups)
        }
        None => (Gid::from_raw(meta.gid()), Vec::new()),
    };
    setgroups(&groups).map_err(|e| refuse("setgroups", e))?;
    setgid(gid).map_err(|e| refuse("setgid", e))?;
    setuid(uid).map_err(|e| refuse("setuid", e))?;
    if Uid::effective() != uid || Uid::current() != uid {
        return Err(Refused(format!(
            "{}: still running as uid {} after switching to uid {uid}; nothing was done",
            state_dir.display(),
            Uid::effective()
        )));
    }
    Ok(())
}

struct Ctx {
    config: Config,
    store: Store,
    interactive: bool,
}

/// Reads one line from stdin without its line ending.
fn read_line() -> Result<Zeroizing<String>, Refused> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

/// Asks on the terminal with echo.
fn ask(prompt: &str) -> Result<Zeroizing<String>, Refused> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    read_line()
}

/// Turns the terminal's echo off until dropped.
struct EchoOff<'a> {
    tty: &'a std::fs::File,
    saved: Termios,
}

impl<'a> EchoOff<'a> {
    fn new(tty: &'a std::fs::File) -> Result<EchoOff<'a>, Refused> {
        let saved = termios::tcgetattr(tty)?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        termios::tcsetattr(tty, SetArg::TCSANOW, &quiet)?;
        Ok(EchoOff { tty, saved })
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.tty, SetArg::TCSANOW, &self.saved);
    }
}

/// Asks on the terminal without echo. Echo goes off before the prompt is
/// shown, so nothing typed ahead of the prompt is echoed either.
fn ask_hidden(prompt: &str) -> Result<Zeroizing<String>, Refused> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let _echo_off = EchoOff::new(&tty)?;
    (&tty).write_all(prompt.as_bytes())?;
    let mut line = Zeroizing::new(String::new());
    std::io::BufReader::new(&tty).read_line(&mut line)?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

/// The phone's mail address: `given` (from --email), or asked twice on a
/// terminal. `otpctl issue` and `otpctl enrol` ask alike.
fn read_email(interactive: bool, given: Option<String>) -> Result<String, Refused> {
    match given {
        Some(email) => {
            rules::check_email(&email)?;
            Ok(email)
        }
        None if interactive => {
            let first = ask("Phone mail address: ")?;
            rules::check_email(&first)?;
            let second = ask("Mail address again: ")?;
            rules::check_email_pair(&first, &second)?;
            Ok(first.to_string())
        }
        None => Err(Refused(
            "--email is required when stdin is not a terminal".to_owned(),
        )),
    }
}

/// The activation password: asked twice without echo on a terminal,
/// otherwise the first line of stdin.
fn read_password(interactive: bool) -> Result<Zeroizing<String>, Refused> {
    if interactive {
        let first = ask_hidden("Activation password (4-8 digits): ")?;
        rules::check_activation_password(&first)?;
        let second = ask_hidden("Activation password again: ")?;
        rules::check_activation_password_pair(&first, &second)?;
        Ok(first)
    } else {
        let password = read_line()?;
        rules::check_activation_password(&password)?;
        Ok(password)
    }
}

/// What `otpctl issue` and `otpctl enrol` print once the setup mail is
/// sent.
fn print_issued(email: &str, service_id: &str, user_id: &str, setup_url: &str, expires_at: u64) {
    println!("Setup mail sent to {email}.");
    println!("Service ID: {service_id}");
    println!("User ID:    {user_id}");
    println!("Setup URL:  {setup_url}");
    println!("Expires:    {}", rfc3339(expires_at));
}

/// The interactive confirmation prompt after the setup mail: asks until
/// `confirm` takes a code or Enter is pressed, then tells what to do
/// `later`.
fn confirm_loop(
    later: &str,
    mut confirm: impl FnMut(&str) -> Result<Confirmed, Refused>,
) -> Outcome {
    loop {
        let code = ask("One-time password shown by the app (Enter to stop waiting): ")?;
        if code.trim().is_empty() {
            println!("Not confirmed yet; {later}");
            return Ok(());
        }
        match confirm(code.trim()) {
            Ok(confirmed) => {
                confirmed.print();
                return Ok(());
            }
            Err(Refused(message)) => eprintln!("{message}"),
        }
    }
}

fn check_user_name(user: &str) -> Outcome {
    if otpcore::import::valid_user(user) {
        Ok(())
    } else {
        Err(Refused(format!(
            "user name {user:?} must be 1 to 64 of A-Z a-z 0-9 . _ - @"
        )))
    }
}

fn enrolment_json(e: &Enrolment) -> serde_json::Value {
    json!({
        "user": e.user,
        "email": e.email,
        "service_id": e.service_id,
        "user_id": e.user_id.as_str(),
        "state": e.state.as_str(),
        "period": e.params.period,
        "digits": e.params.digits,
        "algorithm": e.params.algorithm.as_str(),
        "created_at": rfc3339(e.created_at),
        "expires_at": rfc3339(e.expires_at),
        "activated_at": e.activated_at.map(rfc3339),
        "confirmed_at": e.confirmed_at.map(rfc3339),
        "activation_failures": e.activation_failures,
        "kind": e.kind.as_str(),
        "serial": e.serial,
        "counter": next_counter(e),
    })
}

/// The counter of an event-based token's next code.
fn next_counter(e: &Enrolment) -> Option<u64> {
    (e.kind == TokenKind::Hotp).then(|| e.last_step.map_or(0, |last| last.saturating_add(1)))
}

fn no_mail_section() -> Refused {
    Refused("the configuration has no [mail] section; cannot send the setup mail".to_owned())
}

impl Ctx {
    fn audit(&self, user: &str, result: AuditResult, reason: &str) {
        let entry = AuditEntry {
            time: now(),
            user: user.to_owned(),
            channel: Channel::Cli.as_str().to_owned(),
            peer: format!("uid={}", current_uid()),
            result,
            reason: reason.to_owned(),
        };
        if let Err(e) = self.store.audit(&entry) {
            eprintln!("otpctl: warning: cannot write the audit entry: {e}");
        }
    }

    fn setup_url_base(&self) -> Result<&str, Refused> {
        self.config
            .http
            .as_ref()
            .map(|h| h.public_url.as_str())
            .ok_or_else(|| {
                Refused(
                    "the configuration has no [http] section, so there is no setup page to link to"
                        .to_owned(),
                )
            })
    }

    fn setup_url(&self, e: &Enrolment) -> Result<String, Refused> {
        Ok(otpmail::setup_url(
            self.setup_url_base()?,
            &e.service_id,
            &e.user_id,
        ))
    }

    fn send_mail(&self, e: &Enrolment, lang: Language) -> Outcome {
        let mail_config = self.config.mail.as_ref().ok_or_else(no_mail_section)?;
        let setup_url = self.setup_url(e)?;
        let mail = otpmail::SetupMail {
            to: &e.email,
            user: &e.user,
            service_id: &e.service_id,
            user_id: &e.user_id,
            setup_url: &setup_url,
            expires_at: e.expires_at,
        };
        otpmail::send_setup_mail(mail_config, lang, &mail)
            .map_err(|err| Refused(format!("cannot send the setup mail: {err}")))
    }

    fn issue(
        &self,
        user: &str,
        email: Option<String>,
        lang: Option<Language>,
        replace: bool,
        no_wait: bool,
        json: bool,
    ) -> Outcome {
        check_user_name(user)?;
        // Both sections are needed before anything is asked or stored.
        self.setup_url_base()?;
        let mail_language = self
            .config
            .mail
            .as_ref()
            .map(|m| m.language)
            .ok_or_else(no_mail_section)?;
        let email = read_email(self.interactive, email)?;
        let password = read_password(self.interactive)?;
        let lang = lang.unwrap_or(mail_language);
        let issued_at = now();
        let new = NewEnrolment {
            user,
            email: &email,
            service_id: &self.config.service_id,
            params: self.config.token.params(),
            language: lang.as_str(),
            activation_password: &password,
            expires_at: self.config.policy.link_expires_at(issued_at),
            replace,
        };
        let enrolment = self.store.issue(&new, issued_at)?;
        drop(password);
        if let Err(Refused(reason)) = self.send_mail(&enrolment, lang) {
            self.store.withdraw(enrolment.id)?;
            self.audit(
                user,
                AuditResult::Error,
                "setup mail not sent; enrolment withdrawn",
            );
            return Err(Refused(format!("{reason}\nnothing was issued")));
        }
        self.audit(
            user,
            AuditResult::Ok,
            &format!(
                "issued user ID {}; setup mail sent",
                enrolment.user_id.as_str()
            ),
        );
        let setup_url = self.setup_url(&enrolment)?;
        if json {
            let mut value = enrolment_json(&enrolment);
            value["setup_url"] = json!(setup_url);
            println!("{value}");
        } else {
            print_issued(
                &enrolment.email,
                &enrolment.service_id,
                enrolment.user_id.as_str(),
                &setup_url,
                enrolment.expires_at,
            );
        }
        if self.interactive && !no_wait && !json {
            println!();
            println!("Have the user open the mail on the phone, unlock the setup with the");
            println!("activation password and add the token to an authenticator app.");
            let later = format!("run `otpctl confirm {user}` once the app shows a code.");
            confirm_loop(&later, |code| self.confirm_code(user, code))?;
        }
        Ok(())
    }

    /// Checks a first code and activates the token; the message tells
    /// how, and the token's first recovery codes come with it.
    fn confirm_code(&self, user: &str, code: &str) -> Result<Confirmed, Refused> {
        let enrolment = self
            .store
            .pending(user)?
            .ok_or_else(|| Refused(format!("{user} has no token waiting for confirmation")))?;
        if enrolment.state != State::Activated {
            return Err(Refused(format!(
                "the setup of {user} has not been unlocked on the phone yet (state {})",
                enrolment.state.as_str()
            )));
        }
        let checked = self
            .store
            .confirm_token(&enrolment, code, now(), &self.config.token)?;
        if let Some((result, reason)) = &checked.audit {
            self.audit(user, *result, reason);
        }
        let message =
            match checked.outcome {
                FirstCode::Active { adapted: true, .. } => format!(
                    "The app shows a new code every 30 seconds; that is fine: the token now uses \
                 30-second codes.\nToken of {user} is active."
                ),
                FirstCode::Active { .. } => format!("Token of {user} is active."),
                FirstCode::Wrong => return Err(Refused(
                    "the code does not match; check the phone's clock and type the code shown now"
                        .to_owned(),
                )),
                FirstCode::NotActivated => {
                    return Err(Refused(format!(
                        "the token of {user} changed meanwhile; look at `otpctl show {user}`"
                    )))
                }
            };
        let recovery_codes = match self.config.policy.recovery_codes {
            0 => Vec::new(),
            count => self.new_recovery_codes(user, enrolment.id, count)?,
        };
        Ok(Confirmed {
            message,
            recovery_codes: recovery_codes
                .iter()
                .map(|code| Zeroizing::new(code.as_str().to_owned()))
                .collect(),
            keeper: Keeper::Administrator,
        })
    }

    /// A new set of `count` recovery codes for the active enrolment `id`
    /// of `user`, audited.
    fn new_recovery_codes(
        &self,
        user: &str,
        id: i64,
        count: u32,
    ) -> Result<Vec<RecoveryCode>, Refused> {
        let codes = self.store.new_recovery_codes(id, count)?.ok_or_else(|| {
            Refused(format!(
                "the token of {user} changed meanwhile; look at `otpctl show {user}`"
            ))
        })?;
        self.audit(
            user,
            AuditResult::Ok,
            &format!("{} recovery codes issued", codes.len()),
        );
        Ok(codes)
    }

    fn recovery_codes(&self, user: &str, json: bool) -> Outcome {
        let count = self.config.policy.recovery_codes;
        if count == 0 {
            return Err(Refused(
                "no recovery codes are handed out: [policy] recovery_codes is 0".to_owned(),
            ));
        }
        let token = self
            .store
            .active(user)?
            .ok_or_else(|| Refused(format!("{user} has no active token")))?;
        let codes = self.new_recovery_codes(user, token.id, count)?;
        if json {
            let shown: Vec<&str> = codes.iter().map(RecoveryCode::as_str).collect();
            println!("{}", json!({ "user": user, "recovery_codes": shown }));
        } else {
            println!("New recovery codes of {user}; the old ones no longer work.");
            let shown: Vec<&str> = codes.iter().map(RecoveryCode::as_str).collect();
            print_recovery_codes(&shown, Keeper::Administrator);
        }
        Ok(())
    }

    fn confirm(&self, user: &str, json: bool) -> Outcome {
        let code = if self.interactive {
            ask("One-time password shown by the app: ")?
        } else {
            read_line()?
        };
        let confirmed = self.confirm_code(user, code.trim())?;
        if json {
            let active = self
                .store
                .active(user)?
                .ok_or_else(|| Refused(format!("{user} has no active token")))?;
            println!(
                "{}",
                json!({
                    "user": user,
                    "state": active.state.as_str(),
                    "period": active.params.period,
                    "adapted": active.params.period != self.config.token.period,
                    "recovery_codes": confirmed.shown_codes(),
                })
            );
        } else {
            confirmed.print();
        }
        Ok(())
    }

    fn resend(&self, user: &str) -> Outcome {
        let enrolment = self.store.pending(user)?.ok_or_else(|| {
            Refused(format!(
                "{user} has no setup in progress; issue a token first"
            ))
        })?;
        if enrolment.state != State::Issued {
            return Err(Refused(format!(
                "the setup of {user} was already unlocked on the phone; confirm it, or re-issue with --replace"
            )));
        }
        let expires_at = self.config.policy.link_expires_at(now());
        let lang = Language::parse(&enrolment.language).unwrap_or(Language::En);
        let refreshed = Enrolment {
            expires_at,
            ..enrolment
        };
        self.send_mail(&refreshed, lang)?;
        self.store.extend(refreshed.id, expires_at)?;
        self.audit(user, AuditResult::Ok, "setup mail sent again");
        println!(
            "Setup mail sent again to {}; the link is valid until {}.",
            refreshed.email,
            rfc3339(expires_at)
        );
        Ok(())
    }

    fn show(&self, user: &str, json: bool) -> Outcome {
        let mut tokens = Vec::new();
        if let Some(active) = self.store.active(user)? {
            tokens.push(active);
        }
        if let Some(latest) = self.store.latest(user)? {
            if tokens.iter().all(|t| t.id != latest.id) {
                tokens.push(latest);
            }
        }
        let Some(current) = tokens.last() else {
            return Err(Refused(format!("{user} has no token")));
        };
        // The active token's failures since its last success, and its lock
        // while it lasts (as every node of a cluster sees them).
        let counters = self.store.counters(user)?;
        let recovery_left = self.store.recovery_codes_left(user)?;
        let now = now();
        let failures = counters.as_ref().map(|c| c.failures);
        let locked_until = counters
            .as_ref()
            .and_then(|c| c.locked_until)
            .filter(|t| *t > now);
        if json {
            let mut value = enrolment_json(current);
            value["tokens"] = tokens.iter().map(enrolment_json).collect();
            value["failures"] = failures.into();
            value["locked_until"] = locked_until.map(rfc3339).into();
            value["recovery_codes_left"] = recovery_left.into();
            println!("{value}");
        } else {
            for t in &tokens {
                print_enrolment(t);
            }
            if let Some(failures) = failures {
                println!("Failures:    {failures}");
            }
            if let Some(t) = locked_until {
                println!("Locked until: {} (otpctl unlock {user})", rfc3339(t));
            }
            if let Some(left) = recovery_left {
                println!("Recovery codes left: {left}");
            }
        }
        Ok(())
    }

    fn list(&self, json: bool) -> Outcome {
        let all = self.store.list()?;
        if json {
            let values: Vec<_> = all.iter().map(enrolment_json).collect();
            println!("{}", serde_json::Value::Array(values));
        } else {
            println!(
                "{:<20} {:<12} {:<18} {:>6}  EXPIRES",
                "USER", "STATE", "USER ID", "PERIOD"
            );
            for e in &all {
                println!(
                    "{:<20} {:<12} {:<18} {:>6}  {}",
                    e.user,
                    e.state.as_str(),
                    e.user_id.to_string(),
                    match e.kind {
                        TokenKind::Totp => e.params.period.to_string(),
                        TokenKind::Hotp => "hotp".to_owned(),
                    },
                    rfc3339(e.expires_at)
                );
            }
        }
        Ok(())
    }
}

impl Ctx {
    fn unlock(&self, user: &str) -> Outcome {
        if !self.store.unlock(user)? {
            return Err(Refused(format!("{user} has no active token")));
        }
        self.audit(user, AuditResult::Ok, "unlocked");
        println!("Token of {user} unlocked.");
        Ok(())
    }

    fn resync(&self, user: &str, code1: &str, code2: &str) -> Outcome {
        let no_token = || Refused(format!("{user} has no active token"));
        let Some(token) = self.store.active(user)? else {
            return Err(no_token());
        };
        // Look a day either way: clocks that are further off need fixing.
        let search = 86_400 / token.params.period.max(1);
        let outcome = self.store.resync(
            user,
            code1.trim(),
            code2.trim(),
            now(),
            search,
            self.config.token.window,
        )?;
        match outcome {
            Resync::Done { .. } => {
                self.audit(user, AuditResult::Ok, "resynchronised");
                println!("Token of {user} resynchronised.");
                Ok(())
            }
            Resync::MovedBack { from, step, .. } => {
                self.audit(
                    user,
                    AuditResult::Ok,
                    &format!(
                        "resynchronised; replay state moved back from step {from} to step {step} \
                         (the last used step lay ahead of the clock)"
                    ),
                );
                println!(
                    "Token of {user} resynchronised. Its last used code lay ahead of the clock, \
                     so every current code was refused as used; codes after the two given ones \
                     are accepted again."
                );
                Ok(())
            }
            Resync::NotFound => {
                self.audit(
                    user,
                    AuditResult::Fail,
                    "resync: the codes are not two consecutive codes of the token",
                );
                Err(Refused(match token.kind {
                    TokenKind::Totp => {
                        "the two codes are not consecutive codes of this token within a day of now"
                            .to_owned()
                    }
                    TokenKind::Hotp => format!(
                        "the two codes are not consecutive codes of this token within {} \
                         codes after its last used one",
                        otpcore::hotp::RESYNC_SEARCH
                    ),
                }))
            }
            Resync::Spent => {
                self.audit(
                    user,
                    AuditResult::Fail,
                    "resync: the two codes were already used",
                );
                Err(Refused(
                    "the two codes were already used; give the next two codes the app shows"
                        .to_owned(),
                ))
            }
            Resync::NoToken => Err(no_token()),
        }
    }

    fn test(&self, user: &str) -> Outcome {
        let socket = self
            .config
            .socket
            .as_ref()
            .ok_or_else(|| Refused("the configuration has no [socket] section".to_owned()))?;
        let code = if self.interactive {
            ask_hidden("One-time password: ")?
        } else {
            read_line()?
        };
        let request = Request::Verify(Verify {
            user,
            otp: code.trim(),
            service: Some("otpctl-test"),
            rhost: None,
            nullok: false,
        });
        match ask_daemon(&socket.path, &request)? {
            Some(Answer::Accept) => {
                println!("accept: otpd accepted the code for {user}.");
                Ok(())
            }
            Some(Answer::Reject) => Err(Refused(format!(
                "reject: otpd refused the code for {user} (see `otpctl audit --user {user}` for why)"
            ))),
            Some(Answer::Error(message)) if !message.is_empty() => {
                Err(Refused(format!("error: {message}")))
            }
            _ => Err(Refused("error: unexpected answer from otpd".to_owned())),
        }
    }

    /// Prints the audit trail as it is read, one entry a line (a JSON
    /// object each with `--json`): memory does not grow with the trail. A
    /// reader that goes away (`| head`) ends it quietly.
    fn audit_trail(&self, user: Option<&str>, since: Option<u64>, json: bool) -> Outcome {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let printed = self
            .store
            .audit_each(user, since.unwrap_or(0), |e| {
                if json {
                    write_audit_json(&mut out, &e)
                } else {
                    writeln!(
                        out,
                        "{} {:<6} {:<5} {:<16} {} [{}]",
                        rfc3339(e.time),
                        e.channel,
                        e.result,
                        e.user,
                        e.reason,
                        e.peer
                    )
                    .map_err(Printing::Write)
                }
            })
            .and_then(|()| out.flush().map_err(Printing::Write));
        match printed {
            Ok(()) => Ok(()),
            Err(Printing::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(Printing::Write(e)) => Err(Refused(format!("cannot print the audit trail: {e}"))),
            Err(Printing::Store(e)) => Err(Refused(e.to_string())),
        }
    }
}

/// Why printing a stream of store records stopped.
enum Printing {
    Store(otpstore::StoreError),
    Write(std::io::Error),
}

impl From<otpstore::StoreError> for Printing {
    fn from(e: otpstore::StoreError) -> Self {
        Printing::Store(e)
    }
}

/// One audit entry as a line of JSON.
fn write_audit_json(out: &mut impl Write, e: &otpstore::AuditEntry) -> Result<(), Printing> {
    let line = json!({
        "time": rfc3339(e.time),
        "user": e.user,
        "channel": e.channel,
        "peer": e.peer,
        "result": e.result.as_str(),
        "reason": e.reason,
    });
    serde_json::to_writer(&mut *out, &line)
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(Printing::Write)
}

/// One side of a copy as a JSON object.
fn copy_side_json(side: &CopySide) -> serde_json::Value {
    let t = &side.tally;
    json!({
        "backend": side.backend,
        "schema_version": side.schema_version,
        "enrolments": t.enrolments(),
        "enrolments_by_state": t.by_state,
        "audit_rows": t.audit_rows,
        "key_check_values": t.meta_rows,
        "last_step_sum": t.last_step_sum,
        "failures_sum": t.failures_sum,
        "activation_failures_sum": t.activation_failures_sum,
        "locked": t.locked,
        "last_wrong": t.last_wrong,
        "drift_sum": t.drift_sum,
        "last_enrolment_id": t.max_enrolment_id,
        "last_audit_id": t.max_audit_id,
        "digest": side.digest,
    })
}

impl Ctx {
    fn store_copy(&self, to: &str, password_file: Option<&std::path::Path>, json: bool) -> Outcome {
        let target = TargetSpec::parse(to, password_file)?;
        let started = std::time::Instant::now();
        let report = self.store.copy_to(&target)?;
        let seconds = started.elapsed().as_secs_f64();
        let key = self.store.key_path();
        if json {
            println!(
                "{}",
                json!({
                    "target": report.target,
                    "seconds": seconds,
                    "source": copy_side_json(&report.source),
                    "copy": copy_side_json(&report.copy),
                })
            );
            return Ok(());
        }
        println!(
            "Copied the store ({} schema {}) to {} ({} schema {}) in {seconds:.1} s.",
            report.source.backend,
            report.source.schema_version,
            report.target,
            report.copy.backend,
            report.copy.schema_version
        );
        println!("Checked on both sides:");
        println!("  {:<28} {:>14} {:>14}", "", "source", "copy");
        let copied: std::collections::BTreeMap<String, i128> =
            report.copy.tally.figures().into_iter().collect();
        for (name, source) in report.source.tally.figures() {
            let copy = copied.get(&name).copied().unwrap_or(0);
            println!("  {name:<28} {source:>14} {copy:>14}");
        }
        println!(
            "  {:<28} {:>14} {:>14}",
            "SHA-256 of every row",
            report.source.digest.get(..12).unwrap_or(""),
            report.copy.digest.get(..12).unwrap_or("")
        );
        println!(
            "The secrets are sealed with {}: the target needs that key file.",
            key.display()
        );
        Ok(())
    }

    fn revoke(&self, user: &str) -> Outcome {
        let revoked = self.store.revoke(user)?;
        if revoked == 0 {
            return Err(Refused(format!("{user} has no token to revoke")));
        }
        self.audit(user, AuditResult::Ok, "revoked");
        println!("Tokens of {user} revoked: {revoked}.");
        Ok(())
    }

    fn backup(&self, path: &std::path::Path) -> Outcome {
        self.store.backup(path)?;
        println!(
            "Database copied to {}. Keep a copy of {} with it: the secrets cannot be read without it.",
            path.display(),
            self.config.state_dir.join(otpstore::KEY_FILE).display()
        );
        Ok(())
    }

    fn import(
        &self,
        format: ImportFormat,
        replace: bool,
        user: Option<&str>,
        psk_file: Option<&std::path::Path>,
        json: bool,
        paths: &[PathBuf],
    ) -> Outcome {
        let tokens = match (format, psk_file) {
            (ImportFormat::Pskc, _) => {
                return match (paths, replace, user) {
                    ([path], false, None) => self.import_pskc(path, psk_file, json),
                    (_, false, None) => usage_error("--format pskc takes exactly one file"),
                    _ => usage_error(
                        "--format pskc loads tokens for nobody: it takes no --user and no --replace",
                    ),
                };
            }
            (_, Some(_)) => return usage_error("--psk-file goes with --format pskc"),
            (ImportFormat::Csv, None) => read_csv(paths)?,
            (ImportFormat::GoogleAuthenticator, None) => read_google_authenticator(paths, user)?,
        };
        if tokens.is_empty() {
            return Err(Refused("no tokens found; nothing imported".to_owned()));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = tokens.iter().find(|t| !seen.insert(t.user.as_str())) {
            return Err(Refused(format!(
                "{} appears twice; nothing imported",
                twice.user
            )));
        }
        let imported: Vec<otpstore::ImportedToken<'_>> = tokens
            .iter()
            .map(|t| otpstore::ImportedToken {
                user: &t.user,
                secret: &t.secret,
                params: t.params,
                last_step: t.last_step,
            })
            .collect();
        self.store
            .import_tokens(&imported, &self.config.service_id, replace, now())
            .map_err(|e| Refused(format!("{e}; nothing imported")))?;
        for t in &tokens {
            self.audit(&t.user, AuditResult::Ok, "token imported");
        }
        if json {
            let users: Vec<&str> = tokens.iter().map(|t| t.user.as_str()).collect();
            println!("{}", json!({"imported": tokens.len(), "users": users}));
        } else {
            println!("Imported {} tokens; they are active.", tokens.len());
        }
        Ok(())
    }
}

impl Ctx {
    fn list_unassigned(&self, json: bool) -> Outcome {
        let all = self.store.unassigned()?;
        if json {
            let values: Vec<_> = all
                .iter()
                .map(|e| {
                    json!({
                        "serial": e.serial,
                        "kind": e.kind.as_str(),
                        "digits": e.params.digits,
                        "algorithm": e.params.algorithm.as_str(),
                        "period": (e.kind == TokenKind::Totp).then_some(e.params.period),
                        "counter": next_counter(e),
                        "loaded_at": rfc3339(e.created_at),
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(values));
        } else {
            println!(
                "{:<24} {:<5} {:>6} {:<7} {:>12}  LOADED",
                "SERIAL", "KIND", "DIGITS", "HASH", "PERIOD/NEXT"
            );
            for e in &all {
                let moves = match next_counter(e) {
                    Some(counter) => format!("#{counter}"),
                    None => format!("{} s", e.params.period),
                };
                println!(
                    "{:<24} {:<5} {:>6} {:<7} {:>12}  {}",
                    e.serial.as_deref().unwrap_or("-"),
                    e.kind.as_str(),
                    e.params.digits,
                    e.params.algorithm.as_str(),
                    moves,
                    rfc3339(e.created_at)
                );
            }
        }
        Ok(())
    }

    fn assign(&self, user: &str, serial: &str, replace: bool) -> Outcome {
        check_user_name(user)?;
        let token = self.store.assign(serial, user, replace, now())?;
        self.audit(
            user,
            AuditResult::Ok,
            &format!(
                "hardware token {serial} ({}) assigned, active",
                token.kind.as_str()
            ),
        );
        println!("Token {serial} assigned to {user}; it is active.");
        Ok(())
    }

    /// Loads the hardware tokens of a PSKC seed file, all or nothing.
    fn import_pskc(
        &self,
        path: &std::path::Path,
        psk_file: Option<&std::path::Path>,
        json: bool,
    ) -> Outcome {
        let document = read_bounded(path, otpcore::pskc::MAX_DOCUMENT_BYTES)?;
        let psk = match psk_file {
            Some(file) => Some(
                otpcore::pskc::PreSharedKey::from_hex(&read_text(file)?)
                    .map_err(|e| Refused(format!("{}: {e}; nothing imported", file.display())))?,
            ),
            None => None,
        };
        let tokens = otpcore::pskc::parse(&document, psk.as_ref()).map_err(|errors| {
            let lines: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {e}", path.display()))
                .collect();
            Refused(format!("{}\nnothing imported", lines.join("\n")))
        })?;
        let hardware = tokens
            .iter()
            .map(hardware_token)
            .collect::<Result<Vec<_>, Refused>>()?;
        self.store
            .import_hardware(&hardware, &self.config.service_id, now())
            .map_err(|e| Refused(format!("{e}; nothing imported")))?;
        for t in &hardware {
            self.audit(
                "-",
                AuditResult::Ok,
                &format!(
                    "hardware token {} ({}) loaded, unassigned",
                    t.serial,
                    t.kind.as_str()
                ),
            );
        }
        if json {
            let serials: Vec<&str> = hardware.iter().map(|t| t.serial).collect();
            println!(
                "{}",
                json!({"imported": hardware.len(), "serials": serials})
            );
        } else {
            println!(
                "Loaded {} tokens, unassigned; give them out with `otpctl assign USER SERIAL`.",
                hardware.len()
            );
        }
        Ok(())
    }
}

/// The store's form of a token of a seed file.
fn hardware_token(t: &otpcore::pskc::Token) -> Result<otpstore::HardwareToken<'_>, Refused> {
    let params = |period| otpcore::totp::TokenParams {
        algorithm: t.algorithm,
        digits: t.digits,
        period,
    };
    Ok(match t.kind {
        otpcore::pskc::Kind::Hotp { counter } => {
            if i64::try_from(counter).is_err() {
                return Err(Refused(format!(
                    "serial {}: its counter is beyond what the store keeps; nothing imported",
                    t.serial
                )));
            }
            otpstore::HardwareToken {
                serial: &t.serial,
                secret: &t.secret,
                kind: TokenKind::Hotp,
                params: params(0),
                drift: 0,
                last_step: otpcore::hotp::last_used_before(counter),
            }
        }
        otpcore::pskc::Kind::Totp { period, drift } => otpstore::HardwareToken {
            serial: &t.serial,
            secret: &t.secret,
            kind: TokenKind::Totp,
            params: params(period),
            drift,
            last_step: None,
        },
    })
}

/// The bytes of `path`, refused when longer than `limit` (read no further).
fn read_bounded(path: &std::path::Path, limit: usize) -> Result<Zeroizing<Vec<u8>>, Refused> {
    let refused = |e: std::io::Error| Refused(format!("{}: {e}; nothing imported", path.display()));
    let file = std::fs::File::open(path).map_err(refused)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(refused)?;
    if bytes.len() > limit {
        return Err(Refused(format!(
            "{}: larger than {} MiB; nothing imported",
            path.display(),
            limit / (1024 * 1024)
        )));
    }
    Ok(bytes)
}

fn read_text(path: &std::path::Path) -> Result<Zeroizing<String>, Refused> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| Refused(format!("{}: {e}; nothing imported", path.display())))
}

fn read_csv(paths: &[PathBuf]) -> Result<Vec<otpcore::import::Token>, Refused> {
    let mut tokens = Vec::new();
    for path in paths {
        let text = read_text(path)?;
        match otpcore::import::parse_csv(&text) {
            Ok(mut more) => tokens.append(&mut more),
            Err(errors) => {
                let lines: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{}: {e}", path.display()))
                    .collect();
                return Err(Refused(format!(
                    "{}
nothing imported",
                    lines.join("\n")
                )));
            }
        }
    }
    Ok(tokens)
}

/// The google-authenticator files named by `paths` (directories: the files
/// in them), each with its user.
fn read_google_authenticator(
    paths: &[PathBuf],
    user: Option<&str>,
) -> Result<Vec<otpcore::import::Token>, Refused> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries =
                std::fs::read_dir(path).map_err(|e| Refused(format!("{}: {e}", path.display())))?;
            for entry in entries {
                let entry = entry.map_err(|e| Refused(format!("{}: {e}", path.display())))?;
                if entry.path().is_file() {
                    files.push(entry.path());
                }
            }
        } else {
            files.push(path.clone());
        }
    }
    files.sort();
    if user.is_some() && files.len() != 1 {
        return Err(Refused(
            "--user goes with exactly one google-authenticator file".to_owned(),
        ));
    }
    let mut tokens = Vec::new();
    for file in &files {
        let owner = match user {
            Some(user) => user.to_owned(),
            None => file_user(file)?,
        };
        let text = read_text(file)?;
        let token = otpcore::import::parse_google_authenticator(&owner, &text)
            .map_err(|e| Refused(format!("{}: {e}; nothing imported", file.display())))?;
        tokens.push(token);
    }
    Ok(tokens)
}

/// The user a google-authenticator file belongs to: the owner of a
/// `.google_authenticator` in a home directory, else the file's name (the
/// `secret=/dir/${USER}` layout).
fn file_user(file: &std::path::Path) -> Result<String, Refused> {
    use std::os::unix::fs::MetadataExt;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name != ".google_authenticator" {
        return Ok(name);
    }
    let uid = std::fs::metadata(file)
        .map_err(|e| Refused(format!("{}: {e}", file.display())))?
        .uid();
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .ok_or_else(|| {
            Refused(format!(
                "{}: its owner (uid {uid}) has no user name",
                file.display()
            ))
        })
}

/// Sends one request line to otpd's socket and reads its answer line:
/// `None` when that is JSON but none of otpd's answers to a verify request.
fn ask_daemon(path: &std::path::Path, request: &Request<&str>) -> Result<Option<Answer>, Refused> {
    use std::os::unix::net::UnixStream;
    let unreachable =
        |e: std::io::Error| Refused(format!("otpd does not answer on {}: {e}", path.display()));
    let stream = UnixStream::connect(path).map_err(unreachable)?;
    let deadline = Some(std::time::Duration::from_secs(5));
    stream.set_read_timeout(deadline).map_err(unreachable)?;
    stream.set_write_timeout(deadline).map_err(unreachable)?;
    let mut line = Zeroizing::new(serde_json::to_vec(request)?);
    line.push(b'\n');
    (&stream).write_all(&line).map_err(unreachable)?;
    let mut answer = String::new();
    std::io::BufReader::new(&stream)
        .take(MAX_LINE as u64)
        .read_line(&mut answer)
        .map_err(unreachable)?;
    match parse_answer(answer.as_bytes()) {
        Ok(answer) => Ok(Some(answer)),
        Err(AnswerError::NotJson(_)) => Err(Refused(format!(
            "otpd sent an unreadable answer: {answer:?}"
        ))),
        Err(_) => Ok(None),
    }
}

fn print_enrolment(e: &Enrolment) {
    println!("User:        {}", e.user);
    println!("State:       {}", e.state.as_str());
    println!("Mail:        {}", e.email);
    println!("Service ID:  {}", e.service_id);
    println!("User ID:     {}", e.user_id);
    match next_counter(e) {
        Some(counter) => {
            println!(
                "Token:       {} digits, event-based (HOTP), {}",
                e.params.digits,
                e.params.algorithm.as_str()
            );
            println!("Counter:     {counter} (the next code's)");
        }
        None => println!(
            "Token:       {} digits, {} s, {}",
            e.params.digits,
            e.params.period,
            e.params.algorithm.as_str()
        ),
    }
    if let Some(serial) = &e.serial {
        println!("Serial:      {serial}");
    }
    println!("Issued:      {}", rfc3339(e.created_at));
    println!("Link expiry: {}", rfc3339(e.expires_at));
    if let Some(t) = e.activated_at {
        println!("Activated:   {}", rfc3339(t));
    }
    if let Some(t) = e.confirmed_at {
        println!("Confirmed:   {}", rfc3339(t));
    }
    println!();
}

fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// A token just confirmed: what to tell, and its first recovery codes.
struct Confirmed {
    message: String,
    recovery_codes: Vec<Zeroizing<String>>,
    keeper: Keeper,
}

impl Confirmed {
    fn shown_codes(&self) -> Vec<&str> {
        self.recovery_codes.iter().map(|c| c.as_str()).collect()
    }

    fn print(&self) {
        println!("{}", self.message);
        print_recovery_codes(&self.shown_codes(), self.keeper);
    }
}

/// Who gets recovery codes from the one who reads them.
#[derive(Clone, Copy)]
enum Keeper {
    /// An administrator, who hands them to the user.
    Administrator,
    /// The user themselves (`otpctl enrol`).
    User,
}

/// Prints recovery codes, shown this once, with what they are for.
fn print_recovery_codes(codes: &[&str], keeper: Keeper) {
    if codes.is_empty() {
        return;
    }
    println!();
    println!("Recovery codes (each works once in place of a one-time password, for");
    match keeper {
        Keeper::Administrator => {
            println!("when the phone is lost; shown only now: hand them to the user):")
        }
        Keeper::User => {
            println!("when the phone is lost; shown only now: keep them apart from the phone):")
        }
    }
    for code in codes {
        println!("  {code}");
    }
}
