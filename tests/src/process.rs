//! The built programs, the child processes the tests run, and what they
//! printed.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;

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

/// Waits for `child` at most `timeout`; kills it and panics past that,
/// naming it `what`.
pub(crate) fn wait_or_kill(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    wait_until(child, Instant::now() + timeout).unwrap_or_else(|| {
        kill_and_reap(child);
        panic!("{what} did not finish within {timeout:?} and was killed")
    })
}

/// The exit status of `child` once it exits, or None at `deadline` with the
/// child still running.
///
/// Nothing polls: a thread sleeps in waitid(2) until the child has exited
/// and leaves it unreaped (`WNOWAIT`), so its PID cannot pass to another
/// process before this function reaps it, at once; at the deadline the
/// caller can still kill it by that PID.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("a PID fits in an i32"));
    let (exited, gone) = mpsc::channel();
    std::thread::spawn(move || {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
        while waitid(Id::Pid(pid), flags) == Err(Errno::EINTR) {}
        let _ = exited.send(());
    });
    match gone.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Err(RecvTimeoutError::Timeout) => None,
        // Exited, or already reaped (waitid fails with ECHILD and `wait`
        // returns the status it kept).
        Ok(()) | Err(RecvTimeoutError::Disconnected) => Some(child.wait().expect("reap the child")),
    }
}

/// SIGKILL to `child`, then reaps it.
fn kill_and_reap(child: &mut Child) -> ExitStatus {
    // It may have exited meanwhile: then the kill fails and wait reaps it.
    let _ = child.kill();
    child.wait().expect("reap the killed child")
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
pub fn run_with_input(command: &mut Command, input: &str) -> Output {
    run_with_input_within(command, input, RUN_TIMEOUT)
}

/// [`run_with_input`] with a deadline of `timeout`: past it the child is
/// killed and the panic names the command and shows what it said so far.
///
/// Nothing polls and no pipe can fill: threads feed stdin and drain stdout
/// and stderr while the child runs, and the caller sleeps until the child
/// exits (see [`wait_until`]), then until its pipes close (at once, unless
/// something it started still holds them: that too panics at the
/// deadline). The time this takes is the child's own.
pub fn run_with_input_within(command: &mut Command, input: &str, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
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
    let (done, finished) = mpsc::channel();
    drain(child.stdout.take(), 0, &done);
    drain(child.stderr.take(), 1, &done);
    drop(done);
    let (status, killed) = match wait_until(&mut child, deadline) {
        Some(status) => (status, false),
        None => (kill_and_reap(&mut child), true),
    };
    // The pipes close with the child, unless something it started holds
    // them; after a kill, a moment to collect what it said.
    let until = if killed {
        Instant::now() + Duration::from_secs(2)
    } else {
        deadline
    };
    let ([stdout, stderr], closed) = collect(&finished, until);
    let output = Output {
        status,
        stdout,
        stderr,
    };
    if killed || !closed {
        let program = command.get_program().to_string_lossy();
        let what = if killed {
            "did not finish and was killed"
        } else {
            "exited, but a process it started still held its stdout or stderr open"
        };
        panic!(
            "{program} {what} at the deadline of {timeout:?} ({command:?}): {}",
            describe(&output)
        );
    }
    output
}

/// Reads `pipe` to its end on a thread of its own and sends the bytes, tagged
/// `which`, to `done`.
fn drain(
    pipe: Option<impl Read + Send + 'static>,
    which: usize,
    done: &mpsc::Sender<(usize, Vec<u8>)>,
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

/// What the [`drain`] threads read, stdout and stderr, waiting for them
/// until `until`; and whether both pipes closed by then.
fn collect(finished: &mpsc::Receiver<(usize, Vec<u8>)>, until: Instant) -> ([Vec<u8>; 2], bool) {
    let mut streams = [Vec::new(), Vec::new()];
    for _ in 0..streams.len() {
        match finished.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok((which, bytes)) => streams[which] = bytes,
            Err(_) => return (streams, false),
        }
    }
    (streams, true)
}

/// stdout and stderr together, as a person at the terminal reads them.
pub fn said(output: &Output) -> String {
    format!("{}{}", stdout(output), stderr(output))
}
