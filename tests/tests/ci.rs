//! `lks ci` through the real CLI (local runtime): exit 0 once every service
//! is ready, non-zero at the first build failure, crash, readiness timeout or
//! the run's own timeout, naming the service with the end of its log; and
//! nothing left running either way.

use lks_e2e::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn ci(ws: &Path, args: &[&str]) -> Output {
    Command::new(bin("lks"))
        .args(["ci", "--runtime", "local", "-f"])
        .arg(ws.join("lks.yaml"))
        .args(args)
        .current_dir(ws)
        .env("NO_COLOR", "1")
        .output()
        .expect("run lks ci")
}

/// Every agent and app a run recorded or printed is gone.
fn nothing_left(out: &Output) {
    let said = text(&out.stdout);
    let left: Vec<u32> = pids_said(&said)
        .into_iter()
        .filter(|p| process_alive(*p))
        .collect();
    assert!(
        left.is_empty(),
        "still running after lks ci: {left:?}\n{said}"
    );
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    free_port()
}

#[test]
fn every_service_ready_exits_zero_and_removes_everything() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "lks.yaml",
        "services:\n  - name: db\n    command: sh -c \"exec sleep 1000\"\n  \
         - name: app\n    command: sh -c \"exec sleep 1000\"\n    deps: [db]\n",
    );
    let t = Instant::now();
    let out = ci(tmp.path(), &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("lks ci: all 2 services ready after"),
        "{}",
        text(&out.stdout)
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    nothing_left(&out);
}

#[test]
fn a_build_that_fails_fails_the_run_with_its_log() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "lks.yaml",
        "services:\n  - name: app\n    command: sh -c \"exec sleep 1000\"\n    \
         build:\n      local: [\"sh -c 'echo compiling app; exit 3'\"]\n",
    );
    let out = ci(tmp.path(), &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("lks ci: app failed:"), "{err}");
    assert!(err.contains("the end of its log:"), "{err}");
    // The step's own output, not only its command line.
    assert!(err.contains("\n  step compiling app"), "{err}");
    nothing_left(&out);
}

#[test]
fn an_app_that_crashes_fails_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let port = closed_port();
    write(
        tmp.path(),
        "lks.yaml",
        &format!(
            "services:\n  - name: app\n    command: sh -c \"echo dying now; exit 4\"\n    \
             readiness:\n      tcp: 127.0.0.1:{port}\n      timeout: 60s\n"
        ),
    );
    let t = Instant::now();
    let out = ci(tmp.path(), &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("lks ci: app failed: the app exited with exit code 4"),
        "{err}"
    );
    assert!(err.contains("dying now"), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "waited for the readiness timeout"
    );
    nothing_left(&out);
}

#[test]
fn a_readiness_timeout_fails_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let port = closed_port();
    write(
        tmp.path(),
        "lks.yaml",
        &format!(
            "services:\n  - name: app\n    command: sh -c \"exec sleep 1000\"\n    \
             readiness:\n      tcp: 127.0.0.1:{port}\n      timeout: 1s\n"
        ),
    );
    let out = ci(tmp.path(), &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("lks ci: app failed: not ready after 1s"),
        "{err}"
    );
    nothing_left(&out);
}

#[test]
fn the_runs_own_timeout_names_what_was_not_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let port = closed_port();
    write(
        tmp.path(),
        "lks.yaml",
        &format!(
            "services:\n  - name: fast\n    command: sh -c \"exec sleep 1000\"\n  \
             - name: slow\n    command: sh -c \"exec sleep 1000\"\n    \
             readiness:\n      tcp: 127.0.0.1:{port}\n      timeout: 60s\n"
        ),
    );
    let out = ci(tmp.path(), &["--timeout", "2s"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("not every service was ready after 2s; still waiting for: slow"),
        "{err}"
    );
    nothing_left(&out);
}
