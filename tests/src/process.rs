//! The built programs, the child processes the tests run, and what they
//! printed.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a started server may take to answer.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one otpctl run or HTTP request may take (argon2id is slow by
/// design, and tests run in parallel on two cores).
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The `otpd` binary: `$OTPD_BIN`, or `target/debug/otpd` beside this test.
pub fn otpd_bin() -> PathBuf {
    built_binary("OTPD_BIN", "otpd")
}

/// The `otpctl` binary: `$OTPCTL_BIN`, or `target/debug/otpctl`.
pub fn otpctl_bin() -> PathBuf {
    built_binary("OTPCTL_BIN", "otpctl")
}

pub(crate) fn built_binary(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{var}={} is not a file", path.display());
        return path;
    }
    // The test runs as <target>/debug/deps/enrolment-HASH; the programs are
    // <target>/debug/otpd and <target>/debug/otpctl.
    let exe = std::env::current_exe().expect("current_exe");
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} is not built (looked at {candidates:?}); run `cargo build --workspace` \
                 first or set {var}"
            )
        })
}

/// Waits for `child` at most `timeout`; kills it and panics past that.
pub(crate) fn wait_or_kill(
    child: &mut Child,
    timeout: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stdout and stderr of a finished command, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Panics unless `output` exited 0.
pub fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        describe(output)
    );
}

/// Stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Stdout parsed as one JSON value.
pub fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", describe(output)))
}

/// Stdout parsed as JSON Lines (`otpctl audit --json`): one JSON object a
/// line, every line one; panics naming the line that is not.
pub fn stdout_json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .enumerate()
        .map(|(n, line)| {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "stdout line {} is not JSON ({e}): {}",
                    n + 1,
                    describe(output)
                )
            });
            assert!(
                value.is_object(),
                "stdout line {} is no object: {line}",
                n + 1
            );
            value
        })
        .collect()
}

/// Runs `command` with `input` on its stdin and collects its output; kills
/// it and panics after [`RUN_TIMEOUT`].
///
/// Nothing polls: threads feed stdin and drain stdout and stderr while the
/// child runs (a chatty child never fills a pipe), and the caller sleeps
/// until both pipes close. Then the child is reaped at once, so the time
/// this takes is the child's own.
pub fn run_with_input(command: &mut Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        let input = input.to_owned();
        // It may exit before reading: ignore EPIPE. Dropping stdin closes it.
        std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
    }
    let (done, finished) = std::sync::mpsc::channel();
    drain(child.stdout.take(), 0, &done);
    drain(child.stderr.take(), 1, &done);
    drop(done);
    let mut streams = [Vec::new(), Vec::new()];
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut open = 2;
    while open > 0 {
        match finished.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((which, bytes)) => {
                streams[which] = bytes;
                open -= 1;
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().expect("reap the killed child");
                // The pipes close with the child: collect what it said.
                while let Ok((which, bytes)) = finished.recv_timeout(Duration::from_secs(2)) {
                    streams[which] = bytes;
                }
                let [stdout, stderr] = streams;
                panic!(
                    "{command:?} did not finish within {RUN_TIMEOUT:?}: {}",
                    describe(&Output {
                        status,
                        stdout,
                        stderr
                    })
                );
            }
        }
    }
    let status = child.wait().expect("reap the child");
    let [stdout, stderr] = streams;
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Reads `pipe` to its end on a thread of its own and sends the bytes, tagged
/// `which`, to `done`.
fn drain(
    pipe: Option<impl Read + Send + 'static>,
    which: usize,
    done: &std::sync::mpsc::Sender<(usize, Vec<u8>)>,
) {
    let done = done.clone();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = done.send((which, bytes));
    });
}

/// stdout and stderr together, as a person at the terminal reads them.
pub fn said(output: &Output) -> String {
    format!("{}{}", stdout(output), stderr(output))
}
