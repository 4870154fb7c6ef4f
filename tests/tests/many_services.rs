//! Many services under one `lks up`: each holds a few open files in lks (its
//! tunnel, its agent's pipes), so the usual soft limit (1024) would run out
//! near 200 services. lks raises its soft limit to the hard one; here a soft
//! limit of 64 and 40 services stand for 1024 and 300.

use lks_e2e::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn forty_services_start_under_a_soft_limit_of_64_open_files() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let n = 40;
    let mut yaml = String::from("services:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - name: s{i:02}\n    command: sh -c \"sleep 1000\"\n    live_update:\n      sync: [{{local: ., remote: .}}]\n"
        ));
    }
    write(ws, "lks.yaml", &yaml);
    let lks = bin("lks");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -Sn 64 && exec \"$0\" up --runtime local -f lks.yaml")
        .arg(&lks)
        .current_dir(ws)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut up = Up::spawn(cmd);
    for i in 0..n {
        let line = up.wait(&[&format!("s{i:02} "), "[ready]"], Duration::from_secs(90));
        assert!(!line.contains("Too many open files"), "{line}");
    }
    let said = up.drain().join("\n");
    assert!(!said.contains("Too many open files"), "{said}");
    assert!(up.terminate().success());
}
