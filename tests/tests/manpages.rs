//! The manual pages in packaging/man match the programs: every otpctl
//! subcommand (and theirs, as `store copy`) with each of its `--flag`s (as `otpctl SUB --help` lists them)
//! in otpctl.8, every otpd flag in otpd.8, every key of conf/otpd.toml
//! (commented-out ones too) in otpd.toml.5, every pam_otp argument in
//! pam_otp.8, and groff renders all four without warnings.
//!
//! Needs no root. The pages are rendered with groff (Debian: groff-base);
//! without groff, and not root, a crude roff-to-text conversion stands in.
//! As root (CI) groff is required. The warnings check needs groff itself:
//! it is ignored unless asked for (tests/run-all.sh does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use e2e::{assert_success, otpctl_bin, otpd_bin, stdout};

/// Options every otpctl subcommand takes, documented once under OPTIONS.
const GLOBAL_FLAGS: [&str; 3] = ["--config", "--defaults", "--help"];

/// The module arguments of pam_otp (pam_otp/src/args.rs).
const PAM_ARGUMENTS: [&str; 9] = [
    "socket=",
    "radius=",
    "secret_file=",
    "nullok",
    "prompt=",
    "try_first_pass",
    "use_first_pass",
    "timeout_ms=",
    "debug",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_owned()
}

fn page(name: &str) -> PathBuf {
    let path = repo_root().join("packaging/man").join(name);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Whether groff can be used; as root its absence is a failure.
fn groff_available() -> bool {
    let found = Command::new("groff")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            !is_root(),
            "groff is missing: `apt-get install groff-base` (tests/run-all.sh does)"
        );
        eprintln!("groff is missing; rendering the pages with a crude stand-in");
    }
    found
}

/// The page as plain text, one unbroken line per paragraph line (a very
/// long line length, no hyphenation, no bold or underline overstriking).
fn render(path: &Path) -> String {
    if groff_available() {
        let output = Command::new("groff")
            .args([
                "-man",
                "-Tascii",
                "-P-c",
                "-P-b",
                "-P-o",
                "-P-u",
                "-rLL=400n",
            ])
            .arg(path)
            .output()
            .expect("run groff");
        assert_success(&output, &format!("groff {}", path.display()));
        return stdout(&output);
    }
    let source = std::fs::read_to_string(path).expect("read the page");
    crude_render(&source)
}

/// Roff source to text, good enough to look for words: requests dropped
/// to their arguments, the common escapes resolved.
fn crude_render(source: &str) -> String {
    let mut text = String::new();
    for line in source.lines() {
        let line = match line.strip_prefix('.') {
            Some(request) => match request.split_once(' ') {
                Some((_, args)) => args.replace('"', ""),
                None => continue,
            },
            None => line.to_owned(),
        };
        let mut line = line
            .replace("\\-", "-")
            .replace("\\(dq", "\"")
            .replace("\\%", "")
            .replace("\\&", "")
            .replace("\\ ", " ");
        for font in ["\\fB", "\\fI", "\\fR", "\\fP"] {
            line = line.replace(font, "");
        }
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// Whether `needle` occurs in `text` as a whole token: not preceded or
/// followed by a letter, digit, `_` or `-` (a trailing `=` in the needle
/// ends it by itself).
fn has_token(text: &str, needle: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    text.match_indices(needle).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + needle.len()..].chars().next();
        !before.is_some_and(word) && (needle.ends_with('=') || !after.is_some_and(word))
    })
}

fn run(program: &Path, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {} {args:?}: {e}", program.display()));
    assert_success(&output, &format!("{} {args:?}", program.display()));
    output
}

/// The long options (`--name`) that a clap help text lists.
fn help_flags(help: &str) -> Vec<String> {
    let mut flags = Vec::new();
    let mut in_options = false;
    for line in help.lines() {
        if line.starts_with("Options:") {
            in_options = true;
            continue;
        }
        if in_options && !line.starts_with(' ') && !line.is_empty() {
            in_options = false;
        }
        if !in_options {
            continue;
        }
        for word in line.split([' ', ',']) {
            if let Some(name) = word.strip_prefix("--") {
                let name: String = name
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if !name.is_empty() && !flags.contains(&format!("--{name}")) {
                    flags.push(format!("--{name}"));
                }
                // Only the option itself, not flags named in its description.
                break;
            }
        }
    }
    flags
}

/// The subcommands that `otpctl --help` lists (without `help`).
fn otpctl_subcommands() -> Vec<String> {
    listed_subcommands(&stdout(&run(&otpctl_bin(), &["--help"])))
}

/// The subcommands that a clap help text lists (without `help`).
fn listed_subcommands(help: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_commands = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands && !line.starts_with(' ') {
            break;
        }
        if let Some(name) = line.split_whitespace().next().filter(|_| in_commands) {
            if name != "help" {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// The lines of the section `title` of a rendered page.
fn section<'a>(text: &'a str, title: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|l| l.trim_end() != title)
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .collect()
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The entry of `name` in a tagged list: its tag line (starting with the
/// name) and the lines after it up to the next tag of the same indent.
fn entry(lines: &[&str], name: &str) -> Option<String> {
    let start = lines.iter().position(|l| {
        let t = l.trim_start();
        t == name || t.starts_with(&format!("{name} "))
    })?;
    let tag_indent = indent(lines[start]);
    let mut text = String::from(lines[start]);
    for line in &lines[start + 1..] {
        if !line.trim().is_empty() && indent(line) <= tag_indent {
            break;
        }
        text.push('\n');
        text.push_str(line);
    }
    Some(text)
}

#[test]
fn otpctl_page_has_every_subcommand_and_flag() {
    let text = render(&page("otpctl.8"));
    let commands = section(&text, "COMMANDS");
    assert!(!commands.is_empty(), "otpctl.8 has no COMMANDS section");
    let options = section(&text, "OPTIONS").join("\n");
    let subcommands = otpctl_subcommands();
    for expected in [
        "issue",
        "confirm",
        "resend",
        "show",
        "list",
        "unlock",
        "resync",
        "test",
        "revoke",
        "backup",
        "import",
        "audit",
        "store",
        "completions",
    ] {
        assert!(
            subcommands.iter().any(|s| s == expected),
            "otpctl --help does not list {expected}: {subcommands:?}"
        );
    }
    let mut missing = Vec::new();
    for sub in &subcommands {
        let Some(body) = entry(&commands, sub) else {
            missing.push(format!("subcommand {sub}"));
            continue;
        };
        let help = stdout(&run(&otpctl_bin(), &[sub, "--help"]));
        let mut flags = help_flags(&help);
        assert!(flags.contains(&"--config".to_owned()), "{sub}: {help}");
        // A command with subcommands of its own (`store copy`): their flags
        // belong to its entry too.
        for nested in listed_subcommands(&help) {
            if !has_token(&body, &format!("{sub} {nested}")) {
                missing.push(format!("subcommand {sub} {nested}"));
            }
            let nested_help = stdout(&run(&otpctl_bin(), &[sub, &nested, "--help"]));
            flags.extend(help_flags(&nested_help));
        }
        for flag in flags {
            let documented = if GLOBAL_FLAGS.contains(&flag.as_str()) {
                has_token(&options, &flag)
            } else {
                has_token(&body, &flag)
            };
            if !documented {
                missing.push(format!("{sub} {flag}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "otpctl.8 does not document: {missing:?}"
    );
}

#[test]
fn otpd_page_has_every_flag() {
    let text = render(&page("otpd.8"));
    let options = section(&text, "OPTIONS").join("\n");
    let flags = help_flags(&stdout(&run(&otpd_bin(), &["--help"])));
    for expected in ["--config", "--defaults", "--check-config", "--version"] {
        assert!(
            flags.iter().any(|f| f == expected),
            "otpd --help: {flags:?}"
        );
    }
    let missing: Vec<&String> = flags.iter().filter(|f| !has_token(&options, f)).collect();
    assert!(missing.is_empty(), "otpd.8 OPTIONS lacks {missing:?}");
    assert!(
        has_token(&text, "OTPD_LOG"),
        "otpd.8 does not mention OTPD_LOG"
    );
}

/// Every `key =` of the shipped example, in comments too.
fn example_keys() -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("conf/otpd.toml")).expect("conf/otpd.toml");
    let mut keys = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(at) = rest.find(" = ").or_else(|| rest.find("= ")) {
            let before = rest[..at].trim_end();
            let key: String = before
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if !key.is_empty() && !keys.contains(&key) {
                keys.push(key);
            }
            rest = &rest[at + 2..];
        }
    }
    keys
}

#[test]
fn otpd_toml_page_has_every_key() {
    let text = render(&page("otpd.toml.5"));
    let keys = example_keys();
    for expected in [
        "service_id",
        "sqlite_synchronous",
        "adapt_period",
        "allowed_groups",
        "tls_cert",
        "rate_limit_per_minute",
        "require_message_authenticator",
        "secret_file",
        "smtp_password_file",
        "sendmail_command",
        "outbox_dir",
        "template_dir",
        "language",
    ] {
        assert!(
            keys.iter().any(|k| k == expected),
            "conf/otpd.toml has no {expected}: {keys:?}"
        );
    }
    let missing: Vec<&String> = keys.iter().filter(|k| !has_token(&text, k)).collect();
    assert!(missing.is_empty(), "otpd.toml.5 lacks the keys {missing:?}");
    for table in [
        "[token]",
        "[policy]",
        "[socket]",
        "[http]",
        "[radius]",
        "[[radius.client]]",
        "[mail]",
    ] {
        assert!(text.contains(table), "otpd.toml.5 lacks the table {table}");
    }
}

#[test]
fn pam_otp_page_has_every_argument() {
    let text = render(&page("pam_otp.8"));
    let options = section(&text, "OPTIONS").join("\n");
    let synopsis = section(&text, "SYNOPSIS").join("\n");
    for argument in PAM_ARGUMENTS {
        assert!(
            has_token(&options, argument),
            "pam_otp.8 OPTIONS lacks {argument}"
        );
        assert!(
            has_token(&synopsis, argument),
            "pam_otp.8 SYNOPSIS lacks {argument}"
        );
    }
}

#[test]
#[ignore = "end-to-end: needs groff (groff-base); run tests/run-all.sh"]
fn groff_renders_every_page_without_warnings() {
    for name in ["otpd.8", "otpctl.8", "pam_otp.8", "otpd.toml.5"] {
        let output = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww"])
            .arg(page(name))
            .output()
            .expect("run groff (apt-get install groff-base)");
        assert_success(&output, &format!("groff {name}"));
        let warnings = String::from_utf8_lossy(&output.stderr);
        assert!(
            warnings.trim().is_empty(),
            "groff -man -Tutf8 -ww {name} warns:\n{warnings}"
        );
        assert!(!output.stdout.is_empty(), "{name} renders to nothing");
    }
}

#[test]
fn crude_rendering_resolves_escapes() {
    let text = crude_render(".TP\n.BI \\-\\-config \" PATH\"\n\\fBnullok\\fP and \\(dqx\\(dq\n");
    assert!(has_token(&text, "--config"), "{text}");
    assert!(has_token(&text, "nullok"), "{text}");
    assert!(text.contains("\"x\""), "{text}");
    assert!(has_token("a socket=/x b", "socket="));
    assert!(!has_token("--user-name", "--user"));
}
