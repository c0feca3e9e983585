//! A worker that cannot start makes `ferry` exit non-zero with one clear message
//! naming the command and the cause, never a panic or a hang.

mod harness;

use harness::*;
use std::time::Duration;

fn fails_with(worker: &[&str], expect: &[&str]) {
    let (status, stderr) =
        Ferry::builder(&["--workers", "2"], worker).run_to_exit(Duration::from_secs(30));
    assert!(
        !status.success(),
        "ferry must exit non-zero; stderr:\n{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with("ferry: worker command"))
        .unwrap_or_else(|| panic!("no 'ferry: worker command' line in:\n{stderr}"));
    assert!(
        line.contains(worker[0]),
        "the message names the command: {line}"
    );
    for e in expect {
        assert!(stderr.contains(e), "expected {e:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "no panic:\n{stderr}");
}

#[test]
fn frame_limit_too_small_for_a_request_head_is_refused_at_start() {
    let (status, stderr) = Ferry::builder(&["--max-frame-size", "64KiB"], &[&testbed()])
        .run_to_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        stderr.contains("--max-frame-size 65536 is too small"),
        "{stderr}"
    );
}

#[test]
fn missing_worker_command() {
    fails_with(
        &["/nonexistent/worker-binary"],
        &["cannot run it", "No such file or directory"],
    );
}

#[test]
fn worker_exiting_before_its_handshake() {
    fails_with(
        &[&misbehave(), "exit-at-start"],
        &[
            "exited with status 3",
            "misbehave: cannot find my configuration",
        ],
    );
}

#[test]
fn worker_speaking_another_protocol_version() {
    fails_with(
        &[&misbehave(), "wrong-version"],
        &["protocol version 99", "this ferry speaks version 1"],
    );
}

#[test]
fn worker_that_is_not_a_ferry_worker() {
    // `true` exits 0 at once without a word on the channel.
    fails_with(&["true"], &["exited with status 0"]);
}
