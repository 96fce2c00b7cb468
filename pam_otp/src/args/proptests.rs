//! Property tests of the module's arguments, as libpam hands over the
//! words of a PAM configuration line: every combination of options comes
//! back as written, in any order; any words are parsed or refused without
//! a panic, and a refusal names the argument that is wrong.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::*;

/// The words of one option; a bracketed prompt that libpam split on
/// spaces is several words, which stay together in this order.
type Unit = Vec<String>;

/// A word of a prompt: no white space (libpam splits there), no bracket
/// (it would end `prompt=[...]` early), no NUL (libpam's words are C
/// strings).
fn prompt_words() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec("[^\\s\\[\\]\0]{1,8}", 1..4)
}

/// `words` with `prompt=[` before the first.
fn bracketed(words: &[String]) -> Unit {
    let mut unit = words.to_vec();
    if let Some(first) = unit.first_mut() {
        first.insert_str(0, "prompt=[");
    }
    unit
}

/// A prompt and the words that say it, in one of the three ways a PAM
/// line can: `[prompt=A b]` (one word), `prompt=[A b]`, `prompt=[A b ]`.
fn prompts() -> impl Strategy<Value = (String, Unit)> {
    (prompt_words(), 0..3).prop_map(|(words, form)| match form {
        0 => {
            let text = words.join(" ");
            (text.clone(), vec![format!("prompt={text}")])
        }
        1 => {
            let mut unit = bracketed(&words);
            if let Some(last) = unit.last_mut() {
                last.push(']');
            }
            (words.join(" "), unit)
        }
        _ => {
            let mut unit = bracketed(&words);
            unit.push("]".to_owned());
            (format!("{} ", words.join(" ")), unit)
        }
    })
}

/// An absolute path without white space.
fn paths() -> impl Strategy<Value = String> {
    "/[!-~]{0,30}"
}

/// A server `radius=` takes, and how it is written: IPv4 or bracketed
/// IPv6, with or without a port (1812 when without).
fn servers() -> impl Strategy<Value = (SocketAddr, String)> {
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u16; 8]>().prop_map(|s| IpAddr::V6(Ipv6Addr::from(s))),
    ]
    .prop_filter("a unicast address", |ip| {
        !ip.is_unspecified() && !ip.is_multicast()
    });
    (ip, proptest::option::of(1u16..=65535)).prop_map(|(ip, port)| {
        let address = SocketAddr::new(ip, port.unwrap_or(RADIUS_PORT));
        let written = match (ip, port) {
            (_, Some(_)) => address.to_string(),
            (IpAddr::V4(v4), None) => v4.to_string(),
            (IpAddr::V6(v6), None) => format!("[{v6}]"),
        };
        (address, written)
    })
}

/// Options that the arguments can say, and the units that say them.
fn options() -> impl Strategy<Value = (Options, Vec<Unit>)> {
    let backend = prop_oneof![
        proptest::option::of(paths()).prop_map(|path| {
            let unit = path.as_ref().map(|p| vec![format!("socket={p}")]);
            let path = PathBuf::from(path.as_deref().unwrap_or(DEFAULT_SOCKET));
            (Backend::Socket(path), unit.into_iter().collect::<Vec<_>>())
        }),
        (
            proptest::collection::vec(servers(), 1..=MAX_RADIUS_SERVERS),
            paths()
        )
            .prop_map(|(servers, file)| {
                let written: Vec<&str> = servers.iter().map(|(_, w)| w.as_str()).collect();
                let units = vec![
                    vec![format!("radius={}", written.join(","))],
                    vec![format!("secret_file={file}")],
                ];
                let backend = Backend::Radius {
                    servers: servers.into_iter().map(|(a, _)| a).collect(),
                    secret_file: PathBuf::from(file),
                };
                (backend, units)
            },),
    ];
    (
        backend,
        any::<bool>(),
        proptest::option::of(prompts()),
        0..4,
        any::<bool>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |((backend, mut units), nullok, prompt, first_pass, timed, ms, debug)| {
                let radius = matches!(backend, Backend::Radius { .. });
                let (low, high, default) = if radius {
                    (100, 30_000, DEFAULT_RADIUS_TIMEOUT)
                } else {
                    (1, MAX_TIMEOUT_MS, DEFAULT_TIMEOUT)
                };
                // The defaults, then each option that is said.
                let mut options = Options {
                    backend,
                    nullok: false,
                    prompt: DEFAULT_PROMPT.to_owned(),
                    first_pass: FirstPass::Prompt,
                    timeout: default,
                    debug,
                };
                // nullok is refused with radius=.
                if nullok && !radius {
                    options.nullok = true;
                    units.push(vec!["nullok".to_owned()]);
                }
                if debug {
                    units.push(vec!["debug".to_owned()]);
                }
                let (said, first_pass) = match first_pass {
                    0 => (&[][..], FirstPass::Prompt),
                    1 => (&["try_first_pass"][..], FirstPass::Try),
                    2 => (&["use_first_pass"][..], FirstPass::Use),
                    _ => (&["use_first_pass", "try_first_pass"][..], FirstPass::Use),
                };
                units.extend(said.iter().map(|word| vec![(*word).to_owned()]));
                options.first_pass = first_pass;
                if timed {
                    let ms = low + ms % (high - low + 1);
                    units.push(vec![format!("timeout_ms={ms}")]);
                    options.timeout = Duration::from_millis(ms);
                }
                if let Some((text, unit)) = prompt {
                    units.push(unit);
                    options.prompt = text;
                }
                (options, units)
            },
        )
        .prop_flat_map(|(options, units)| (Just(options), Just(units).prop_shuffle()))
}

/// Words a PAM line may hold: the options with any value, the flags, and
/// any other word.
fn any_words() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        prop_oneof![
            "(socket|radius|secret_file|prompt|timeout_ms)=[^\0]{0,24}",
            "radius=([0-9.:\\[\\]a-f]{0,16},?){1,10}",
            "timeout_ms=-?[0-9]{0,22}",
            "prompt=\\[[^\0]{0,8}",
            "nullok|debug|use_first_pass|try_first_pass|\\]",
            "[^\0]{0,12}",
        ],
        0..8,
    )
}

/// Whether `word` is an argument the module knows, by name.
fn known(word: &str) -> bool {
    ["nullok", "debug", "use_first_pass", "try_first_pass"].contains(&word)
        || [
            "socket=",
            "radius=",
            "secret_file=",
            "prompt=",
            "timeout_ms=",
        ]
        .iter()
        .any(|p| word.starts_with(p))
}

fn parse(words: &[String]) -> Result<Options, ArgError> {
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    Options::parse(&words)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Every combination of options, its words in any order, is parsed to
    /// what they say.
    #[test]
    fn written_options_come_back_in_any_order((expected, units) in options()) {
        let words: Vec<String> = units.into_iter().flatten().collect();
        prop_assert_eq!(parse(&words), Ok(expected), "{:?}", words);
    }

    /// A word the module does not know, between the options of a line
    /// otherwise fine, is refused by name.
    #[test]
    fn an_unknown_word_is_refused_by_name(
        (_, mut units) in options(),
        word in "[^\0]{1,16}".prop_filter("not an argument", |w| !known(w)),
        at in any::<prop::sample::Index>(),
    ) {
        units.insert(at.index(units.len() + 1), vec![word.clone()]);
        let words: Vec<String> = units.into_iter().flatten().collect();
        prop_assert_eq!(parse(&words), Err(ArgError::Unknown(word)), "{:?}", words);
    }

    /// Any words: options, or an error that names the argument at fault,
    /// with a value taken from that argument.
    #[test]
    fn any_words_are_parsed_or_the_wrong_one_named(words in any_words()) {
        match parse(&words) {
            Ok(options) => {
                // What was accepted was said by a word of the line.
                prop_assert!(!options.prompt.trim().is_empty());
                let said = |word: &str| words.iter().any(|w| w == word);
                let backend_said = match &options.backend {
                    Backend::Radius { secret_file, .. } => {
                        words.iter().any(|w| w.starts_with("radius="))
                            && said(&format!("secret_file={}", secret_file.display()))
                    }
                    Backend::Socket(path) => {
                        path.as_os_str() == DEFAULT_SOCKET
                            || said(&format!("socket={}", path.display()))
                    }
                };
                prop_assert!(backend_said, "{:?} from {:?}", options.backend, words);
                prop_assert!(!options.nullok || said("nullok"));
                prop_assert!(!options.debug || said("debug"));
                prop_assert!(options.first_pass == FirstPass::Prompt || said("try_first_pass") || said("use_first_pass"));
            }
            Err(ArgError::Unknown(word)) => {
                prop_assert!(words.contains(&word) && !known(&word), "{:?}", word);
            }
            Err(ArgError::BadValue { name, value, .. }) => {
                let prefix = format!("{name}=");
                let named: Vec<&String> = words.iter().filter(|w| w.starts_with(&prefix)).collect();
                prop_assert!(!named.is_empty(), "{} named, not given: {:?}", name, words);
                if name != "prompt" {
                    prop_assert!(
                        named.iter().any(|w| w.strip_prefix(&prefix).is_some_and(|v| v.contains(value.as_str()))),
                        "{}={:?} is not from {:?}", name, value, words
                    );
                }
            }
            Err(ArgError::UnclosedPrompt) => {
                prop_assert!(words.iter().any(|w| w.starts_with("prompt=[")), "{:?}", words);
            }
            Err(ArgError::Combination(_)) => {
                prop_assert!(
                    words.iter().any(|w| w.starts_with("radius=") || w.starts_with("secret_file=")),
                    "{:?}", words
                );
            }
        }
    }
}
