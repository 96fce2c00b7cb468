//! A benchmark's command line: `--flag value` pairs. The benchmarks in
//! `src/bin` print figures; they are not tests.

use std::str::FromStr;

/// Hands each `--flag value` pair of the command line to `set`, which
/// answers false for a flag it does not know: that ends the program with a
/// pointer to the usage comment at the top of `bench`'s source.
pub fn bench_args(bench: &str, mut set: impl FnMut(&str, &str) -> bool) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        if !set(&pair[0], value) {
            panic!(
                "unknown option {}; see the comment at the top of {bench}.rs",
                pair[0]
            );
        }
    }
}

/// `value` parsed; a panic showing `usage` (e.g. `--users N`) when it does
/// not parse.
pub fn bench_value<T: FromStr>(value: &str, usage: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| panic!("{usage}: cannot read {value:?}"))
}
