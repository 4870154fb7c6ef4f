//! `lks status` and `lks logs` against a running `lks up` (local runtime),
//! through the real CLI: the run's API is found through `.lks/api.json`,
//! refuses a request without the run's token, and is gone with the run.

use lks_e2e::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn lks(dir: &Path, args: &[&str]) -> Output {
    lks_in(dir, args)
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

#[test]
fn logs_of_every_service_follow_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    write(
        ws,
        "lks.yaml",
        "services:\n  \
         - name: ticker\n    command: sh -c \"i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done\"\n  \
         - name: once\n    command: sh -c \"echo said once; exec sleep 1000\"\n",
    );
    let mut up = Up::start(ws, &["--runtime", "local"]);
    up.wait(&["once", "said once"], Duration::from_secs(30));
    up.wait(&["ticker", "tick 3"], Duration::from_secs(30));

    // Every service, each line with its service.
    let out = lks(ws, &["logs", "--tail", "1000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = text(&out.stdout);
    assert!(all.contains("once   | app  said once"), "{all}");
    assert!(all.contains("ticker | app  tick 1"), "{all}");

    // The last N, as JSON, one object a line, in order.
    let out = lks(ws, &["logs", "ticker", "--tail", "3", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines
            .windows(2)
            .all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64())
    );
    assert!(lines.iter().all(|l| l["service"] == "ticker"));

    // Only what is recent.
    let out = lks(ws, &["logs", "once", "--since", "1h"]);
    assert!(text(&out.stdout).contains("said once"));

    // Follow: new ticks keep coming, and it ends with the run.
    let mut follow = Command::new(bin("lks"))
        .args(["logs", "ticker", "-f", "--tail", "1"])
        .current_dir(ws)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let got = lines_of(follow.stdout.take().unwrap());
    let first: u64 = tick_of(&got.recv_timeout(Duration::from_secs(10)).unwrap());
    let mut last = first;
    while last < first + 5 {
        let l = got
            .recv_timeout(Duration::from_secs(10))
            .expect("a new tick");
        let n = tick_of(&l);
        assert_eq!(n, last + 1, "a tick lost or repeated: {l}");
        last = n;
    }
    assert!(up.terminate().success());
    let ended = wait_until(Duration::from_secs(10), || {
        matches!(follow.try_wait(), Ok(Some(_)))
    });
    if !ended {
        let _ = follow.kill();
    }
    assert!(ended, "lks logs -f outlived the run");
}

fn lines_of(r: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    lks_e2e::lines(r)
}

fn tick_of(line: &str) -> u64 {
    line.rsplit("tick ")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("not a tick: {line}"))
}

/// The app pid `lks status -o json` gives for `service`.
fn app_pid(ws: &Path, service: &str) -> Option<u32> {
    field_of(ws, service, "app_pid").as_u64().map(|p| p as u32)
}

fn status_of(ws: &Path, service: &str) -> String {
    field_of(ws, service, "status")
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn trigger_disable_and_enable_steer_a_running_service() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    workspace(ws);
    let mut up = Up::start(ws, &["--runtime", "local"]);
    up.wait(&["quiet", "[ready]"], Duration::from_secs(30));
    let first = wait_for_pid(ws, "talker");

    // Trigger: started anew, a new app.
    let out = lks(ws, &["trigger", "talker"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "talker: started anew");
    assert!(wait_until(Duration::from_secs(20), || {
        app_pid(ws, "talker").is_some_and(|p| p != first) && status_of(ws, "talker") == "ready"
    }));
    assert!(wait_until(Duration::from_secs(10), || !process_alive(
        first
    )));

    // Disable: stopped with its app, and stays so.
    let second = wait_for_pid(ws, "talker");
    let out = lks(ws, &["disable", "talker"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "talker: disabled");
    assert!(wait_until(Duration::from_secs(10), || !process_alive(
        second
    )));
    assert_eq!(status_of(ws, "talker"), "disabled");
    let out = lks(ws, &["trigger", "talker"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("talker is disabled (lks enable talker)"));
    // A reload keeps it disabled (before: any reload started it again).
    let mark = up.mark();
    let yaml = std::fs::read_to_string(ws.join("lks.yaml")).unwrap();
    write(ws, "lks.yaml", &format!("{yaml}# edited\n"));
    up.wait_since(mark, &["lks.yaml changed"], Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status_of(ws, "talker"), "disabled");

    // Enable: it runs again.
    let out = lks(ws, &["enable", "talker"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(wait_until(Duration::from_secs(20), || status_of(
        ws, "talker"
    ) == "ready"));
    let third = wait_for_pid(ws, "talker");
    assert!(process_alive(third) && third != second);

    // Unknown services, and a request without the token.
    let out = lks(ws, &["disable", "nope"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no service \"nope\" in this run"));
    let found: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.join(".lks/api.json")).unwrap()).unwrap();
    let addr = found["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let answer = raw_post(&addr, &addr, "/api/disable?service=quiet", None);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Another name for the server (a rebound DNS name): refused, even with the token.
    let token = found["token"].as_str().unwrap();
    let answer = raw_post(
        &addr,
        "evil.example:80",
        "/api/disable?service=quiet",
        Some(token),
    );
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(status_of(ws, "quiet"), "ready");
    assert!(up.terminate().success());
}

fn wait_for_pid(ws: &Path, service: &str) -> u32 {
    let mut pid = None;
    assert!(wait_until(Duration::from_secs(20), || {
        pid = app_pid(ws, service);
        pid.is_some_and(process_alive)
    }));
    pid.unwrap()
}

/// A POST to `path` on `addr` with the `Host` header `host` (and the token,
/// if any), the answer whole.
fn raw_post(addr: &str, host: &str, path: &str, token: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

/// A field of `service` in `lks status -o json` (null when there is none,
/// or no answer).
fn field_of(ws: &Path, service: &str, field: &str) -> serde_json::Value {
    let out = lks(ws, &["status", "-o", "json"]);
    let services: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    services
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == service))
        .map_or(serde_json::Value::Null, |s| s[field].clone())
}

#[test]
fn restart_and_manual_mode_from_the_shell() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    workspace(ws);
    let mut up = Up::start(ws, &["--runtime", "local", "--no-ui"]);
    up.wait(&["quiet", "[ready]"], Duration::from_secs(30));
    assert!(
        !up.drain().iter().any(|l| l.contains("web UI at")),
        "--no-ui printed a web UI line"
    );
    let first = wait_for_pid(ws, "talker");
    let agent = field_of(ws, "talker", "agent_pid");

    // Restart: a new app under the same agent.
    let out = lks(ws, &["restart", "talker"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "talker: restarting its app");
    let restarted = wait_until(Duration::from_secs(20), || {
        app_pid(ws, "talker").is_some_and(|p| p != first) && status_of(ws, "talker") == "ready"
    });
    assert!(restarted, "not restarted:\n{}", up.drain().join("\n"));
    assert!(wait_until(Duration::from_secs(10), || !process_alive(
        first
    )));
    assert_eq!(
        field_of(ws, "talker", "agent_pid"),
        agent,
        "the agent was started anew"
    );

    // Manual: a change waits until the trigger.
    let out = lks(ws, &["manual", "talker"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "talker: changes now wait for a trigger"
    );
    write(ws, "waits.txt", "waited\n");
    assert!(
        wait_until(Duration::from_secs(10), || field_of(
            ws, "talker", "waiting"
        ) == 1),
        "no change waits: {}\n{}",
        field_of(ws, "talker", "waiting"),
        up.drain().join("\n")
    );
    let synced = ws.join(".lks/talker/root/waits.txt");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!synced.exists(), "synced without a trigger");
    let out = lks(ws, &["trigger", "talker"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "talker: applying the changes that waited"
    );
    assert!(wait_until(Duration::from_secs(10), || synced.exists()));
    assert_eq!(field_of(ws, "talker", "waiting"), 0);
    assert_eq!(
        field_of(ws, "talker", "last_sync")["paths"],
        serde_json::json!(["waits.txt"])
    );

    // Auto: changes apply as they come again.
    let out = lks(ws, &["auto", "talker"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    write(ws, "flows.txt", "at once\n");
    assert!(wait_until(Duration::from_secs(10), || ws
        .join(".lks/talker/root/flows.txt")
        .exists()));
    assert!(up.terminate().success());
}

#[test]
fn another_user_cannot_use_the_api_even_with_the_token() {
    if !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test runs a request as another user: it needs root (CI runs as root)"
        );
        eprintln!(
            "*** another_user_cannot_use_the_api_even_with_the_token did NOT run: it needs root ***"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    workspace(ws);
    let mut up = Up::start(ws, &["--runtime", "local"]);
    up.wait(&["quiet", "[ready]"], Duration::from_secs(30));
    let found: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.join(".lks/api.json")).unwrap()).unwrap();
    let (url, token) = (
        found["url"].as_str().unwrap(),
        found["token"].as_str().unwrap(),
    );
    let script = format!(
        "import urllib.request, urllib.error\n\
         r = urllib.request.Request('{url}/api/disable?service=quiet', method='POST', headers={{'Authorization': 'Bearer {token}'}})\n\
         try:\n    urllib.request.urlopen(r); print('200')\n\
         except urllib.error.HTTPError as e:\n    print(e.code, e.read().decode())\n"
    );
    let me = rustix::process::geteuid().as_raw();
    let other = if me == 65534 { 65533 } else { 65534 };
    let out = Command::new("setpriv")
        .arg(format!("--reuid={other}"))
        .arg(format!("--regid={other}"))
        .arg("--clear-groups")
        // Not a shim in root's home (another user cannot run it).
        .arg(if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        })
        .args(["-c", &script])
        .output()
        .expect("setpriv (util-linux)");
    let said = text(&out.stdout);
    assert!(said.starts_with("403"), "{said}{}", text(&out.stderr));
    assert!(
        said.contains(&format!("uid {other} cannot use it")),
        "{said}"
    );
    assert_eq!(status_of(ws, "quiet"), "ready");
    // The same request from this user works.
    let out = lks(ws, &["disable", "quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(up.terminate().success());
}
