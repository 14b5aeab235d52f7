//! The README's shell examples that talk to a server run here, against a
//! server this test starts, so they keep working on a fresh machine (bash
//! only: no `nc`).
//!
//! A `sh` block whose lines start with `$ ` is a transcript: each command
//! runs in one bash session, in order, and must print the lines that follow
//! it (with the README's port 11211 read as the test server's). Elsewhere a
//! line that calls `mc` (the README's helper, defined in "Using it") must
//! succeed and get a whole reply.

mod common;

use std::process::{Command, Stdio};

const README: &str = include_str!("../README.md");

/// The README's ```sh blocks, in order.
fn sh_blocks() -> Vec<Vec<&'static str>> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<&str>> = None;
    for line in README.lines() {
        match (&mut cur, line.trim_end()) {
            (None, "```sh") => cur = Some(Vec::new()),
            (Some(_), "```") => out.push(cur.take().unwrap()),
            (Some(b), l) => b.push(l),
            _ => {}
        }
    }
    out
}

/// A transcript: (command, expected output lines).
fn transcript(block: &[&'static str]) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for l in block {
        match l.strip_prefix("$ ") {
            Some(cmd) => out.push((cmd, Vec::new())),
            None => {
                if let Some(last) = out.last_mut() {
                    last.1.push(l);
                }
            }
        }
    }
    out
}

fn bash(script: &str, port: u16) -> (bool, String) {
    let out = Command::new("bash")
        .args(["-c", script])
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("running bash");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn readme_examples_work_against_a_server() {
    let server = common::Server::start(&[]);
    let port = server.port;
    let blocks = sh_blocks();
    let talks = |b: &[&str]| b.iter().any(|l| l.trim_start_matches("$ ").starts_with("mc "));
    let mut definition = None;
    let mut checked = 0;
    const SEP: &str = "@@readme-example-end@@";
    for block in blocks.iter().filter(|b| b.iter().any(|l| l.starts_with("$ ")) && talks(b)) {
        let steps = transcript(block);
        let mut script = String::new();
        for (cmd, _) in &steps {
            if cmd.starts_with("mc()") {
                definition = Some(cmd.to_string());
            }
            script.push_str(&format!("{cmd}\necho {SEP}\n"));
        }
        let (ok, stdout) = bash(&script, port);
        assert!(ok, "README transcript failed:\n{script}\noutput:\n{stdout}");
        let outputs: Vec<&str> = stdout.split(&format!("{SEP}\n")).collect();
        for (i, (cmd, want)) in steps.iter().enumerate() {
            let got: Vec<String> = outputs[i].lines().map(|l| l.trim_end_matches('\r').to_string()).collect();
            let want: Vec<String> = want.iter().map(|l| l.replace("11211", &port.to_string())).collect();
            assert_eq!(got, want, "README: $ {cmd}");
            checked += 1;
        }
    }
    let definition = definition.expect("the README defines mc() in a transcript");
    for block in blocks.iter().filter(|b| !b.iter().any(|l| l.starts_with("$ "))) {
        for line in block.iter().filter(|l| l.starts_with("mc ")) {
            let (ok, stdout) = bash(&format!("{definition}\n{line}"), port);
            assert!(ok && stdout.ends_with("END\r\n"), "README: {line}: {stdout:?}");
            checked += 1;
        }
    }
    // The examples this test exists for: it must not pass by finding none.
    assert!(checked >= 5, "only {checked} README examples found");
    server.stop();
}
