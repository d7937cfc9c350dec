//! `mqttx completions` into a pipe whose reader is gone (as in `mqttx completions zsh | head`
//! once `head` has exited) ends quietly: no panic, exit status 0.

use std::process::{Command, Stdio};

#[test]
fn completions_into_a_closed_pipe_end_quietly() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    // Every write now fails with EPIPE (Rust programs ignore SIGPIPE).
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_mqttx"))
        .args(["completions", "zsh"])
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run mqttx");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}
