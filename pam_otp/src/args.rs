//! The module's arguments. An unknown or malformed argument is
//! an error: the module logs it and fails with PAM_SERVICE_ERR.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

/// Where otpd listens unless `socket=PATH` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/otpd/otpd.sock";
/// The prompt unless `prompt=...` says otherwise.
pub const DEFAULT_PROMPT: &str = "One-time password: ";
/// Connect and read/write deadline unless `timeout_ms=N` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5000);
/// The largest `timeout_ms` accepted (ten minutes).
const MAX_TIMEOUT_MS: u64 = 600_000;

/// Where the code comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPass {
    /// Always prompt (the default).
    Prompt,
    /// `try_first_pass`: PAM_AUTHTOK when an earlier module set it,
    /// otherwise prompt.
    Try,
    /// `use_first_pass`: PAM_AUTHTOK only, never prompt.
    Use,
}

/// The parsed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub socket: PathBuf,
    pub nullok: bool,
    pub prompt: String,
    pub first_pass: FirstPass,
    pub timeout: Duration,
    pub debug: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            socket: PathBuf::from(DEFAULT_SOCKET),
            nullok: false,
            prompt: DEFAULT_PROMPT.to_owned(),
            first_pass: FirstPass::Prompt,
            timeout: DEFAULT_TIMEOUT,
            debug: false,
        }
    }
}

/// What is wrong with the arguments, for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("{name}: {problem} (got {value:?})")]
    BadValue {
        name: &'static str,
        value: String,
        problem: &'static str,
    },
    #[error("prompt=[... is not closed by a ']'")]
    UnclosedPrompt,
}

fn bad(name: &'static str, value: &str, problem: &'static str) -> ArgError {
    ArgError::BadValue {
        name,
        value: value.to_owned(),
        problem,
    }
}

impl Options {
    /// Parses the arguments of the PAM configuration line.
    ///
    /// `prompt=` takes PAM's bracket syntax: written as
    /// `[prompt=Code please: ]` libpam hands over one argument
    /// `prompt=Code please: `; written as `prompt=[Code please: ]` the text
    /// arrives split on spaces (`prompt=[Code`, `please:`, `]`) and is
    /// joined again with single spaces. `use_first_pass` wins over
    /// `try_first_pass`.
    pub fn parse(args: &[&str]) -> Result<Options, ArgError> {
        let mut options = Options::default();
        let mut args = args.iter();
        while let Some(&arg) = args.next() {
            if let Some(path) = arg.strip_prefix("socket=") {
                if !path.starts_with('/') {
                    return Err(bad("socket", path, "must be an absolute path"));
                }
                options.socket = PathBuf::from(path);
            } else if let Some(text) = arg.strip_prefix("prompt=") {
                let prompt = match text.strip_prefix('[') {
                    Some(first) => {
                        let mut prompt = first.to_owned();
                        loop {
                            if let Some(closed) = prompt.strip_suffix(']') {
                                prompt.truncate(closed.len());
                                break;
                            }
                            let next = args.next().ok_or(ArgError::UnclosedPrompt)?;
                            prompt.push(' ');
                            prompt.push_str(next);
                        }
                        prompt
                    }
                    None => text.to_owned(),
                };
                if prompt.trim().is_empty() {
                    return Err(bad("prompt", &prompt, "must not be empty"));
                }
                options.prompt = prompt;
            } else if let Some(value) = arg.strip_prefix("timeout_ms=") {
                let ms: u64 = value
                    .parse()
                    .map_err(|_| bad("timeout_ms", value, "must be a number of milliseconds"))?;
                if !(1..=MAX_TIMEOUT_MS).contains(&ms) {
                    return Err(bad("timeout_ms", value, "must be 1 to 600000"));
                }
                options.timeout = Duration::from_millis(ms);
            } else {
                match arg {
                    "nullok" => options.nullok = true,
                    "debug" => options.debug = true,
                    "use_first_pass" => options.first_pass = FirstPass::Use,
                    "try_first_pass" => {
                        if options.first_pass != FirstPass::Use {
                            options.first_pass = FirstPass::Try;
                        }
                    }
                    _ => return Err(ArgError::Unknown(arg.to_owned())),
                }
            }
        }
        Ok(options)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let o = Options::parse(&[]).unwrap();
        assert_eq!(o.socket, PathBuf::from("/run/otpd/otpd.sock"));
        assert_eq!(o.prompt, "One-time password: ");
        assert_eq!(o.timeout, Duration::from_millis(5000));
        assert_eq!(o.first_pass, FirstPass::Prompt);
        assert!(!o.nullok && !o.debug);
    }

    #[test]
    fn every_option() {
        let o = Options::parse(&[
            "socket=/tmp/x.sock",
            "nullok",
            "debug",
            "try_first_pass",
            "timeout_ms=250",
        ])
        .unwrap();
        assert_eq!(o.socket, PathBuf::from("/tmp/x.sock"));
        assert!(o.nullok && o.debug);
        assert_eq!(o.first_pass, FirstPass::Try);
        assert_eq!(o.timeout, Duration::from_millis(250));
        for args in [
            ["use_first_pass", "try_first_pass"],
            ["try_first_pass", "use_first_pass"],
        ] {
            assert_eq!(Options::parse(&args).unwrap().first_pass, FirstPass::Use);
        }
    }

    #[test]
    fn prompt_forms() {
        let prompt = |args: &[&str]| Options::parse(args).map(|o| o.prompt);
        // Split by libpam on spaces: joined again.
        assert_eq!(
            prompt(&["prompt=[Code", "please:]", "nullok"]).unwrap(),
            "Code please:"
        );
        assert_eq!(
            prompt(&["prompt=[Code", "please:", "]"]).unwrap(),
            "Code please: "
        );
        assert_eq!(prompt(&["prompt=[Code:]"]).unwrap(), "Code:");
        // `[prompt=Code please: ]` arrives as one argument.
        assert_eq!(prompt(&["prompt=Code please: "]).unwrap(), "Code please: ");
        assert_eq!(prompt(&["prompt=Code:"]).unwrap(), "Code:");
        assert_eq!(
            prompt(&["prompt=[ワンタイム", "パスワード:", "]"]).unwrap(),
            "ワンタイム パスワード: "
        );
        // The argument after the closing bracket is parsed as usual.
        let o = Options::parse(&["prompt=[A", "b]", "nullok"]).unwrap();
        assert!(o.nullok);
        assert_eq!(
            prompt(&["prompt=[Code", "please:"]),
            Err(ArgError::UnclosedPrompt)
        );
        assert!(prompt(&["prompt=[]"]).is_err());
        assert!(prompt(&["prompt="]).is_err());
    }

    #[test]
    fn errors() {
        assert_eq!(
            Options::parse(&["nullok", "bogus"]),
            Err(ArgError::Unknown("bogus".to_owned()))
        );
        for bad_args in [
            ["socket=relative.sock"],
            ["socket="],
            ["timeout_ms=0"],
            ["timeout_ms=-5"],
            ["timeout_ms=5s"],
            ["timeout_ms=600001"],
            ["Nullok"],
            ["nullok=1"],
            ["use_first_pass=yes"],
        ] {
            assert!(Options::parse(&bad_args).is_err(), "{bad_args:?}");
        }
        let message = Options::parse(&["timeout_ms=abc"]).unwrap_err().to_string();
        assert!(
            message.contains("timeout_ms") && message.contains("abc"),
            "{message}"
        );
    }
}
