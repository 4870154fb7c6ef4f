//! `lks status` and `lks logs` against a running `lks up` (local runtime),
//! through the real CLI: the run's API is found through `.lks/api.json`,
//! refuses a request without the run's token, and is gone with the run.

use lks_e2e::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn lks(ws: &Path, args: &[&str]) -> Output {
    Command::new(bin("lks"))
        .args(args)
        .current_dir(ws)
        .env("NO_COLOR", "1")
        .output()
        .expect("run lks")
}

fn workspace(ws: &Path) {
    write(
        ws,
        "lks.yaml",
        "services:\n  \
         - name: talker\n    command: sh -c \"echo hello from the app; exec sleep 1000\"\n    \
           live_update:\n      sync: [{local: ., remote: .}]\n  \
         - name: quiet\n    command: sh -c \"exec sleep 1000\"\n    deps: [talker]\n",
    );
}

#[test]
fn status_and_logs_show_the_running_services() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    workspace(ws);
    // Before any run: said in one line.
    let out = lks(ws, &["status"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no lks up is running for"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let mut up = Up::start(ws, &["--runtime", "local"]);
    up.wait(&["quiet", "[ready]"], Duration::from_secs(30));
    up.wait(&["talker", "hello from the app"], Duration::from_secs(10));

    let out = lks(ws, &["status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("SERVICE"), "{table}");
    // Launch order: talker first (quiet depends on it).
    assert!(
        lines[1].starts_with("talker") && lines[1].contains("ready"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("quiet") && lines[2].contains("ready"),
        "{table}"
    );

    let out = lks(ws, &["status", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let services: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let talker = &services[0];
    assert_eq!(talker["name"], "talker");
    assert_eq!(talker["ready"], true);
    let pid = talker["app_pid"].as_u64().expect("the app's pid") as u32;
    assert!(process_alive(pid));
    assert_eq!(talker["last_sync"]["kind"], "first");

    let out = lks(ws, &["logs", "talker", "--tail", "50"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let logs = text(&out.stdout);
    assert!(logs.contains("app  hello from the app"), "{logs}");
    assert!(logs.contains("lks  [ready]"), "{logs}");
    let out = lks(ws, &["logs", "nope"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no service \"nope\""),
        "{}",
        text(&out.stderr)
    );

    // Without the run's token the API refuses.
    let found: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.join(".lks/api.json")).unwrap()).unwrap();
    let port: u16 = found["url"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (code, body) = http_status(port, "/api/state").expect("the API answers");
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains("talker"), "{body}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ws.join(".lks/api.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    assert!(up.terminate().success());
    assert!(
        !ws.join(".lks/api.json").exists(),
        "the run left its api.json"
    );
    let out = lks(ws, &["status"]);
    assert!(text(&out.stderr).contains("no lks up is running for"));
}
