//! Property tests of `otpctl store copy --to`: any target text is taken or
//! refused without a panic; a refusal names the option and a PostgreSQL
//! password is shown nowhere, neither in a refusal nor in the target as
//! it is shown; a SQLite target is shown as written.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use proptest::prelude::*;

use super::*;

/// Targets with a password in them, and anything else.
fn targets() -> impl Strategy<Value = (String, String)> {
    let password = "[A-Za-z0-9]{4}\\PC{4,16}";
    prop_oneof![
        (
            "postgres(ql)?://[a-z]{1,8}",
            password,
            "@[a-z0-9.\\[\\]:%]{0,20}(/[a-z]{0,8})?(\\?[a-z=&\\-]{0,30})?",
        )
            .prop_map(|(head, password, tail)| {
                let text = format!(
                    "{head}:{}{tail}",
                    utf8_percent_encode(&password, NON_ALPHANUMERIC)
                );
                (text, password)
            }),
        ("\\PC{0,40}", password)
            .prop_map(|(text, password)| (format!("{text}{password}"), password)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any target: taken and shown without its password, or refused by
    /// naming `--to`, without the password.
    #[test]
    fn a_target_password_is_never_shown((to, password) in targets()) {
        let encoded = utf8_percent_encode(&password, NON_ALPHANUMERIC).to_string();
        match TargetSpec::parse(&to, None) {
            Ok(target) => {
                let shown = target.shown();
                if let Kind::Postgresql { .. } = target.kind {
                    prop_assert!(!shown.contains(&password) && !shown.contains(&encoded), "{}", shown);
                }
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.starts_with("--to: "), "{}", message);
                prop_assert!(!message.contains(&password) && !message.contains(&encoded), "{}", message);
            }
        }
    }

    /// `sqlite://` and an absolute path to a file is taken and shown as
    /// written; with `--password-file` it is refused by naming that option.
    #[test]
    fn sqlite_targets_are_shown_as_written(path in "(/[^/\0.][^/\0]{0,11}){1,4}") {
        let to = format!("sqlite://{path}");
        let target = TargetSpec::parse(&to, None);
        prop_assert!(target.is_ok(), "{} refused", to);
        if let Ok(target) = target {
            prop_assert_eq!(target.shown(), to.clone());
        }
        let refused = TargetSpec::parse(&to, Some(Path::new("/etc/otpd/db.password")));
        prop_assert!(
            refused.as_ref().err().is_some_and(|e| e.to_string().starts_with("--password-file: ")),
            "{}", to
        );
    }
}
