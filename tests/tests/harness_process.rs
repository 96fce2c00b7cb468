//! The harness's way of running a program (`e2e::run_with_input`): it reads
//! the child's stdout and stderr while the child runs, so a child that says
//! a lot cannot fill a pipe and hang; it notices the child's exit at once,
//! with no poll interval under every run (benchmarks time these runs); and
//! it kills a child that outlives its deadline, with a message naming the
//! program.
//!
//! Needs no root and no peer: `sh`, `head`, `cat` and `true` only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{assert_success, run_with_input, run_with_input_within};

const MIB: usize = 1 << 20;

#[test]
fn a_mebibyte_on_stdin_stdout_and_stderr_does_not_fill_a_pipe() {
    // 1 MiB in, echoed on stdout, then 1 MiB of its own on stderr: each is
    // 16 times a pipe's buffer, so a harness that read only after the
    // child's exit would never see it exit.
    let input: String = (0..MIB)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let started = Instant::now();
    let output = run_with_input_within(
        Command::new("sh").args(["-c", "cat; head -c 1048576 /dev/zero >&2"]),
        &input,
        Duration::from_secs(20),
    );
    let took = started.elapsed();
    assert_success(&output, "sh -c 'cat; head -c 1048576 /dev/zero >&2'");
    assert_eq!(output.stdout.len(), MIB, "all of stdout");
    assert!(output.stdout == input.as_bytes(), "stdout is the input");
    assert_eq!(output.stderr.len(), MIB, "all of stderr");
    assert!(output.stderr.iter().all(|&b| b == 0), "stderr is /dev/zero");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn both_pipes_at_once_a_mebibyte_each() {
    // stdout and stderr written in turns of 64 KiB, each pipe full in turn.
    let script = "i=0; while [ $i -lt 16 ]; do head -c 65536 /dev/zero; \
                  head -c 65536 /dev/zero >&2; i=$((i + 1)); done";
    let output = run_with_input_within(
        Command::new("sh").args(["-c", script]),
        "",
        Duration::from_secs(20),
    );
    assert_success(&output, "interleaved writes");
    assert_eq!(output.stdout.len(), MIB);
    assert_eq!(output.stderr.len(), MIB);
}

#[test]
fn a_quick_child_is_not_kept_waiting() {
    // A poll every 20 ms would put 20 ms under every run; the fastest of ten
    // runs of `true` shows any such floor however busy the machine is.
    let fastest = (0..10)
        .map(|_| {
            let started = Instant::now();
            let output = run_with_input(&mut Command::new("true"), "");
            assert_success(&output, "true");
            started.elapsed()
        })
        .min()
        .unwrap();
    assert!(
        fastest < Duration::from_millis(10),
        "the fastest run of `true` took {fastest:?}"
    );
}

#[test]
fn the_deadline_kills_a_sleeping_child_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    // The shell becomes `sleep` (exec), so the PID written is the sleeper's.
    let script = format!(
        "echo $$ > {}; echo about to sleep; exec sleep 600",
        pid_file.display()
    );
    let started = Instant::now();
    let panic = std::panic::catch_unwind(|| {
        run_with_input_within(
            Command::new("sh").args(["-c", &script]),
            "",
            Duration::from_secs(1),
        )
    })
    .expect_err("a child sleeping past its deadline must panic");
    let took = started.elapsed();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.starts_with("sh did not finish and was killed at the deadline of 1s"),
        "{message}"
    );
    assert!(message.contains("exec sleep 600"), "the command: {message}");
    assert!(
        message.contains("about to sleep"),
        "what it said: {message}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let pid = pid.trim();
    assert!(!pid.is_empty(), "the child wrote its PID");
    // Killed and reaped: no process, not even a zombie, has that PID.
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} is still there"
    );
}
