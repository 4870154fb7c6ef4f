//! The command lines: help with examples, and clear errors for what a user gets
//! wrong most often.

use lks_e2e::*;
use std::process::Command;

#[test]
fn sync_help_shows_examples_and_what_is_ignored() {
    let out = Command::new(bin("lks"))
        .args(["sync", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        help.contains("Examples:") && help.contains("--once") && help.contains(".lksignore"),
        "{help}"
    );
}

#[test]
fn agent_help_shows_examples() {
    let out = Command::new(bin("lks-agent"))
        .args(["--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Examples:") && help.contains("serve"),
        "{help}"
    );
}

#[test]
fn sync_once_to_an_unreachable_agent_fails_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    // A port nobody listens on.
    let addr = format!("127.0.0.1:{}", free_port());
    let out = sync_once(tmp.path(), &format!("http://{addr}"), "t", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot reach the agent") && err.contains("lks-agent serve"),
        "{err}"
    );
}

#[test]
fn sync_rejects_a_url_that_is_not_http() {
    let tmp = tempfile::tempdir().unwrap();
    let out = sync_once(tmp.path(), "127.0.0.1:7690", "t", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad agent URL") && err.contains("http://127.0.0.1:7690"),
        "{err}"
    );
}

#[test]
fn sync_without_a_token_says_where_to_put_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = lks_sync()
        .arg(tmp.path())
        .args(["--to", "http://127.0.0.1:1", "--once"])
        .env_remove("LKS_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("LKS_TOKEN") && err.contains("--token-file"),
        "{err}"
    );
}

#[test]
fn sync_of_a_missing_directory_names_it() {
    let out = sync_once(
        std::path::Path::new("/nonexistent/lks-src"),
        "http://127.0.0.1:1",
        "t",
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/nonexistent/lks-src"), "{err}");
}

#[test]
fn an_empty_local_directory_does_not_wipe_a_populated_agent_root() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(dst.join("app")).unwrap();
    std::fs::write(dst.join("app/server.js"), b"baked into the image").unwrap();
    let agent = Agent::start(&dst, "tok");
    let out = sync_once(&src, &agent.url, "tok", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("is empty while the agent's has"), "{err}");
    assert_eq!(
        std::fs::read(dst.join("app/server.js")).unwrap(),
        b"baked into the image"
    );
}
