//! `lks up` on the local runtime, through the real CLI: services start in
//! dependency order, edits reach the running app, steps run when their
//! triggers match, `fall_back_on` rebuilds, crash loops back off, and SIGTERM
//! leaves nothing behind.

use lks_e2e::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn get(port: u16, path: &str) -> Option<String> {
    http_get(port, path)
}

/// Writes `dir/server.js`: a Node.js server answering `greeting` on `port`.
fn node_server(dir: &Path, port: u16, greeting: &str) {
    write(
        dir,
        "server.js",
        &format!(
            "const http = require('http');\n\
             const greeting = '{greeting}';\n\
             http.createServer((req, res) => res.end(greeting + '\\n'))\n\
               .listen({port}, '127.0.0.1', () => console.log('listening'));\n"
        ),
    );
}

#[test]
fn editing_the_node_handler_changes_the_http_response() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let port = free_port();
    write(ws, "lks.yaml", "services: [\"web/lks.service.yaml\"]\n");
    write(
        ws,
        "web/lks.service.yaml",
        &format!(
            "name: web\ncommand: node server.js\nreadiness:\n  http: http://127.0.0.1:{port}/\n\
             live_update:\n  restart: on-change\n"
        ),
    );
    node_server(&ws.join("web"), port, "hello one");
    let mut up = Up::start(ws, &[]);
    up.wait(&["web", "[ready]"], Duration::from_secs(60));
    assert_eq!(get(port, "/").as_deref(), Some("hello one\n"));
    let t = Instant::now();
    node_server(&ws.join("web"), port, "hello two");
    assert!(
        wait_until(Duration::from_secs(20), || get(port, "/").as_deref()
            == Some("hello two\n")),
        "the response never changed: {:?}\n{}",
        get(port, "/"),
        up.drain().join("\n")
    );
    eprintln!("edit -> new response in {} ms", t.elapsed().as_millis());
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn steps_run_only_when_triggered_and_a_failing_step_keeps_the_old_app() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let port = free_port();
    write(ws, "lks.yaml", "services:\n  - svc/lks.service.yaml\n");
    write(
        ws,
        "svc/lks.service.yaml",
        &format!(
            "name: svc\ncommand: node server.js\nreadiness:\n  tcp: 127.0.0.1:{port}\n\
             live_update:\n  run:\n\
             \x20   - cmd: sh -c \"echo deps >> steps.log\"\n      trigger: [deps.txt]\n\
             \x20   - cmd: sh -c \"test ! -e broken\"\n      trigger: [broken]\n"
        ),
    );
    write(ws, "svc/deps.txt", "a\n");
    let svc = ws.join("svc");
    node_server(&svc, port, "v1");
    let mut up = Up::start(ws, &[]);
    up.wait(&["svc", "[ready]"], Duration::from_secs(60));
    let root = ws.join(".lks/svc/root");
    // A change the step does not care about: no step.
    std::fs::write(svc.join("other.txt"), "x").unwrap();
    up.wait(&["svc", "synced 1 files"], Duration::from_secs(20));
    assert!(
        !root.join("steps.log").exists(),
        "the step ran without its trigger"
    );
    // Its trigger: it runs, in the root.
    std::fs::write(svc.join("deps.txt"), "a\nb\n").unwrap();
    up.wait(&["svc", "step 1 ok"], Duration::from_secs(20));
    assert_eq!(
        std::fs::read_to_string(root.join("steps.log")).unwrap(),
        "deps\n"
    );
    // The step's batch restarted the app: let it come up before the next edit.
    assert!(wait_until(Duration::from_secs(20), || get(port, "/")
        .as_deref()
        == Some("v1\n")));
    std::thread::sleep(Duration::from_millis(300));
    let pid_before = up.pids("svc");
    // A failing step: reported, and the old app keeps serving.
    std::fs::write(svc.join("broken"), "x").unwrap();
    up.wait(
        &["svc", "failed", "keeps running the previous version"],
        Duration::from_secs(20),
    );
    assert_eq!(get(port, "/").as_deref(), Some("v1\n"));
    assert_eq!(
        up.pids("svc"),
        pid_before,
        "the app was restarted after a failed step"
    );
    // The next good change recovers.
    std::fs::remove_file(svc.join("broken")).unwrap();
    node_server(&svc, port, "v2");
    assert!(wait_until(Duration::from_secs(20), || get(port, "/")
        .as_deref()
        == Some("v2\n")));
    up.terminate();
}

#[test]
fn a_fall_back_on_change_rebuilds_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let port = free_port();
    write(ws, "lks.yaml", "services:\n  - svc/lks.service.yaml\n");
    write(
        ws,
        "svc/lks.service.yaml",
        &format!(
            "name: svc\ncommand: node server.js\nbuild:\n  local:\n    - sh -c \"cat version >> builds.log\"\n\
             readiness:\n  tcp: 127.0.0.1:{port}\nlive_update:\n  fall_back_on: [version]\n"
        ),
    );
    write(ws, "svc/version", "1\n");
    node_server(&ws.join("svc"), port, "v1");
    let mut up = Up::start(ws, &[]);
    up.wait(&["svc", "[ready]"], Duration::from_secs(60));
    let log = ws.join(".lks/svc/root/builds.log");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "1\n",
        "the build ran at start"
    );
    std::fs::write(ws.join("svc/version"), "2\n").unwrap();
    up.wait(
        &["svc", "rebuilding: version matches fall_back_on `version`"],
        Duration::from_secs(20),
    );
    up.wait(&["svc", "rebuilt:"], Duration::from_secs(20));
    // A rebuild starts from a fresh root, as a new image would.
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "2\n",
        "the build ran again for the rebuild"
    );
    up.terminate();
}

#[test]
fn a_crash_loop_backs_off_is_reported_and_sigterm_leaves_no_process() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    write(ws, "lks.yaml", "services:\n  - svc/lks.service.yaml\n");
    write(
        ws,
        "svc/lks.service.yaml",
        "name: svc\ncommand: sh -c \"echo crashing; exit 3\"\n",
    );
    let mut up = Up::start(ws, &[]);
    up.wait(&["svc", "crash loop"], Duration::from_secs(60));
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let lines = up.drain().to_vec();
    let delays: Vec<u64> = lines
        .iter()
        .filter_map(|l| {
            let i = l.find("restarting in ")?;
            l[i + 14..].split(' ').next()?.parse().ok()
        })
        .collect();
    assert!(
        delays.windows(2).all(|w| w[1] >= w[0]),
        "delays do not grow: {delays:?}"
    );
    assert!(
        delays.len() <= 12,
        "restarted {} times in {:?}: a tight loop",
        delays.len(),
        t.elapsed()
    );
    assert!(
        lines.iter().any(|l| l.contains("exit code 3")),
        "{lines:#?}"
    );
    let pids = up.pids("svc");
    assert!(!pids.is_empty());
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
    std::thread::sleep(Duration::from_millis(200));
    let left: Vec<i32> = pids
        .into_iter()
        .filter(|p| process_alive(*p as u32))
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[test]
fn dependencies_start_first_and_dependents_wait_for_their_readiness() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let port = free_port();
    write(ws, "lks.yaml", "services:\n  - \"*/lks.service.yaml\"\n");
    // db becomes ready (listens) only after a second.
    write(
        ws,
        "db/lks.service.yaml",
        &format!(
            "name: db\ncommand: node server.js\nreadiness:\n  tcp: 127.0.0.1:{port}\n  period: 50ms\n"
        ),
    );
    write(
        ws,
        "db/server.js",
        &format!(
            "setTimeout(() => require('net').createServer(() => {{}}).listen({port}, '127.0.0.1'), 1000);\n"
        ),
    );
    write(
        ws,
        "app/lks.service.yaml",
        "name: app\ncommand: sh -c \"echo app up; sleep 1000\"\ndeps: [db]\n",
    );
    let mut up = Up::start(ws, &["app"]);
    up.wait(&["app", "app up"], Duration::from_secs(60));
    let lines = up.drain().to_vec();
    let ready = lines
        .iter()
        .position(|l| l.starts_with("db") && l.contains("[ready]"))
        .expect("db ready");
    let started = lines
        .iter()
        .position(|l| l.starts_with("app") && l.contains("agent pid"))
        .expect("app started");
    assert!(
        ready < started,
        "app started before db was ready:\n{}",
        lines.join("\n")
    );
    up.terminate();
}

#[test]
fn an_unknown_target_gets_a_did_you_mean() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    write(ws, "lks.yaml", "services:\n  - svc/lks.service.yaml\n");
    write(
        ws,
        "svc/lks.service.yaml",
        "name: price\ncommand: sh -c \"sleep 1000\"\n",
    );
    let out = Command::new(bin("lks"))
        .args(["up", "-f", ws.join("lks.yaml").to_str().unwrap(), "pricee"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("pricee") && err.contains("did you mean \"price\""),
        "{err}"
    );
}

#[test]
fn the_example_workspace_serves_and_live_updates_web_and_api() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    copy_examples(ws, &[]);
    let mut up = Up::start(ws, &["frontend"]);
    up.wait(&["web", "[ready]"], Duration::from_secs(120));
    assert_eq!(
        get(18080, "/").as_deref(),
        Some("hello from web; api says: hello from api\n")
    );
    let app = ws.join("api/app.py");
    let text = std::fs::read_to_string(&app)
        .unwrap()
        .replace("hello from api", "hello from a live api");
    std::fs::write(&app, text).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || get(18080, "/").as_deref()
            == Some("hello from web; api says: hello from a live api\n")),
        "{:?}\n{}",
        get(18080, "/"),
        up.drain().join("\n")
    );
    // requirements.txt triggers the pip step (no packages: nothing is downloaded).
    std::fs::write(ws.join("api/requirements.txt"), "# still nothing\n").unwrap();
    up.wait(&["api", "step 1 ok"], Duration::from_secs(60));
    assert!(up.terminate().success());
}

#[test]
fn the_go_worker_is_rebuilt_by_its_go_build_step_and_restarted() {
    assert!(
        Command::new("go")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "`go` is not installed: tests/run.sh installs it (apt-get install golang-go)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    copy_examples(ws, &[]);
    let mut up = Up::start(ws, &["worker"]);
    up.wait(&["worker", "worker tick 0"], Duration::from_secs(180));
    let main = ws.join("worker/main.go");
    let text = std::fs::read_to_string(&main)
        .unwrap()
        .replace("worker tick", "worker tock");
    std::fs::write(&main, text).unwrap();
    up.wait(
        &["worker", "step 1 ok", "restarted"],
        Duration::from_secs(180),
    );
    up.wait(&["worker", "worker tock 0"], Duration::from_secs(30));
    assert!(up.terminate().success());
}

#[test]
fn the_tilt_style_local_form_is_accepted_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    write(ws, "lks.yaml", "services:\n  - svc/lks.service.yaml\n");
    write(
        ws,
        "svc/lks.service.yaml",
        "name: price\ncommand: sh -c \"sleep 1000\"\n",
    );
    let file = ws.join("lks.yaml");
    let run = |args: &[&str]| {
        let out = Command::new(bin("lks"))
            .args(["up", "-f", file.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = run(&["price", "--", "--local", "bank"]);
    assert!(!ok && err.contains("--local bank: not a service"), "{err}");
    let (ok, err) = run(&["price", "--", "--bogus"]);
    assert!(
        !ok && err.contains("only `--local SERVICE` is accepted"),
        "{err}"
    );
    // And the accepted form really runs.
    let mut up = Up::start(ws, &["price", "--", "--local", "price"]);
    up.wait(&["price", "[ready]"], Duration::from_secs(60));
    assert!(up.terminate().success());
}

#[test]
fn a_killed_agent_is_reported_and_the_service_comes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let port = free_port();
    write(ws, "lks.yaml", "services: [\"web/lks.service.yaml\"]\n");
    write(
        ws,
        "web/lks.service.yaml",
        &format!(
            "name: web\ncommand: node server.js\nreadiness:\n  http: http://127.0.0.1:{port}/\n"
        ),
    );
    node_server(&ws.join("web"), port, "before");
    let mut up = Up::start(ws, &[]);
    up.wait(&["web", "[ready]"], Duration::from_secs(60));
    let agent_line = up.wait(&["web", "agent pid"], Duration::from_secs(5));
    let agent_pid: i32 = agent_line
        .split("agent pid ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let pid = rustix::process::Pid::from_raw(agent_pid).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    up.wait(&["web", "starting again in"], Duration::from_secs(20));
    // A change made while it was down is there once it is back.
    node_server(&ws.join("web"), port, "after");
    assert!(
        wait_until(Duration::from_secs(30), || get(port, "/").as_deref()
            == Some("after\n")),
        "{}",
        up.drain().join("\n")
    );
    assert!(up.terminate().success());
}

#[test]
fn several_sync_mappings_land_in_their_own_directories_and_share_one_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let port = free_port();
    write(ws, "lks.yaml", "services: [\"svc/lks.service.yaml\"]\n");
    write(
        ws,
        "svc/lks.service.yaml",
        &format!(
            "name: svc\ncommand: node app/server.js\nreadiness:\n  tcp: 127.0.0.1:{port}\n\
             live_update:\n  sync:\n    - {{ local: src, remote: app }}\n    - {{ local: conf, remote: /app/config }}\n"
        ),
    );
    write(ws, "svc/conf/greeting.txt", "hello from conf\n");
    write(
        ws,
        "svc/src/server.js",
        &format!(
            "const fs = require('fs');\n\
             require('http').createServer((q, r) => r.end(fs.readFileSync('config/greeting.txt')))\n\
               .listen({port}, '127.0.0.1');\n"
        ),
    );
    let mut up = Up::start(ws, &[]);
    up.wait(&["svc", "[ready]"], Duration::from_secs(60));
    assert_eq!(get(port, "/").as_deref(), Some("hello from conf\n"));
    let root = ws.join(".lks/svc/root");
    assert!(root.join("app/server.js").is_file() && root.join("config/greeting.txt").is_file());
    std::fs::write(ws.join("svc/conf/greeting.txt"), "edited conf\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || get(port, "/").as_deref()
            == Some("edited conf\n")),
        "{}",
        up.drain().join("\n")
    );
    assert!(up.terminate().success());
}

#[test]
fn sync_mappings_that_overlap_on_the_agent_are_refused_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    write(ws, "lks.yaml", "services: [\"svc/lks.service.yaml\"]\n");
    write(
        ws,
        "svc/lks.service.yaml",
        "name: svc\ncommand: sh -c \"sleep 1000\"\n\
         live_update:\n  sync:\n    - { local: ., remote: . }\n    - { local: sub, remote: sub }\n",
    );
    write(ws, "svc/sub/x", "x");
    // Refused before anything starts, by `lks up` and `lks config check` alike.
    for args in [&["up"][..], &["config", "check"][..]] {
        let out = std::process::Command::new(bin("lks"))
            .args(args)
            .arg("-f")
            .arg(ws.join("lks.yaml"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "lks {args:?} accepted overlapping mappings"
        );
        assert!(
            err.contains("svc/lks.service.yaml:6:7: ") && err.contains("overlap on the agent"),
            "lks {args:?}: {err}"
        );
    }
}

#[test]
fn an_emptied_sync_directory_is_not_mirrored_and_syncing_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let port = free_port();
    write(ws, "lks.yaml", "services: [\"svc/lks.service.yaml\"]\n");
    write(
        ws,
        "svc/lks.service.yaml",
        &format!(
            "name: svc\ncommand: node app/server.js\nreadiness:\n  tcp: 127.0.0.1:{port}\n\
             live_update:\n  sync:\n    - {{ local: src, remote: app }}\n    - {{ local: conf, remote: config }}\n"
        ),
    );
    for i in 0..20 {
        write(ws, &format!("svc/conf/d{i}/f{i}.txt"), "x\n");
    }
    write(ws, "svc/conf/greeting.txt", "hello from conf\n");
    write(
        ws,
        "svc/src/server.js",
        &format!(
            "const fs = require('fs');\n\
             require('http').createServer((q, r) => r.end(fs.readFileSync('config/greeting.txt')))\n\
               .listen({port}, '127.0.0.1');\n"
        ),
    );
    let mut up = Up::start(ws, &[]);
    up.wait(&["svc", "[ready]"], Duration::from_secs(60));
    let root = ws.join(".lks/svc/root");
    let before = snapshot(&root.join("config"));
    // Everything in conf goes (an rm -rf of its content, in pieces).
    for e in std::fs::read_dir(ws.join("svc/conf")).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }
    up.wait(
        &["svc", "is empty while the agent's has"],
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        snapshot(&root.join("config")),
        before,
        "the emptying was mirrored"
    );
    assert_eq!(get(port, "/").as_deref(), Some("hello from conf\n"));
    // A file comes back: the mirror resumes (and now it mirrors the rest).
    write(ws, "svc/conf/greeting.txt", "back again\n");
    assert!(
        wait_until(Duration::from_secs(20), || get(port, "/").as_deref()
            == Some("back again\n")),
        "{}",
        up.drain().join("\n")
    );
    assert!(up.terminate().success());
}

#[test]
fn a_service_that_cannot_run_as_defined_is_not_retried_and_the_others_run() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    write(
        ws,
        "lks.yaml",
        "services: [\"ok/lks.service.yaml\", \"broken/lks.service.yaml\"]\n",
    );
    write(
        ws,
        "ok/lks.service.yaml",
        "name: ok\ncommand: sh -c \"sleep 1000\"\nlive_update:\n  sync:\n    - { local: ., remote: . }\n",
    );
    // No `command`: the local runtime has nothing to start.
    write(
        ws,
        "broken/lks.service.yaml",
        "name: broken\nlive_update:\n  sync:\n    - { local: ., remote: . }\n",
    );
    let mut up = Up::start(ws, &[]);
    up.wait(&["ok", "[ready]"], Duration::from_secs(20));
    let line = up.wait(
        &["broken", "not starting it again"],
        Duration::from_secs(10),
    );
    assert!(line.contains("fix what the error says"), "{line}");
    let said = up.drain().to_vec();
    assert!(
        said.iter()
            .any(|l| l.contains("broken") && l.contains("needs a `command`")),
        "{said:#?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let said = up.drain().to_vec();
    assert!(
        !said
            .iter()
            .any(|l| l.contains("broken") && l.contains("starting again in")),
        "a service that cannot run was retried: {said:#?}"
    );
    assert!(
        !ws.join(".lks/broken").exists(),
        "the work dir of a service that cannot start was created"
    );
    assert!(up.terminate().success());
}

#[test]
fn a_deleted_service_directory_is_not_mirrored_and_syncing_resumes_when_it_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    write(ws, "lks.yaml", "services: [\"svc/lks.service.yaml\"]\n");
    let service = "name: svc\ncommand: sh -c \"sleep 1000\"\nlive_update:\n  sync:\n    - { local: ., remote: . }\n";
    write(ws, "svc/lks.service.yaml", service);
    write(ws, "svc/a.txt", "a\n");
    write(ws, "svc/b.txt", "b\n");
    let mut up = Up::start(ws, &[]);
    up.wait(&["svc", "[ready]"], Duration::from_secs(20));
    let root = ws.join(".lks/svc/root");
    let before = snapshot(&root);
    assert!(root.join("a.txt").exists() && root.join("b.txt").exists());
    // The whole service directory goes (a branch switch, an rm -rf).
    std::fs::remove_dir_all(ws.join("svc")).unwrap();
    up.wait(&["svc", "is gone"], Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(snapshot(&root), before, "the deletion was mirrored");
    // It comes back with other files: the mirror resumes by itself, without
    // starting the service anew.
    write(ws, "svc/lks.service.yaml", service);
    write(ws, "svc/a.txt", "a again\n");
    write(ws, "svc/c.txt", "c\n");
    assert!(
        wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(root.join("c.txt")).is_ok_and(|c| c == "c\n")
                && std::fs::read_to_string(root.join("a.txt")).is_ok_and(|a| a == "a again\n")
                && !root.join("b.txt").exists()
        }),
        "{}",
        up.drain().join("\n")
    );
    let said = up.drain().to_vec();
    assert!(
        !said
            .iter()
            .any(|l| l.starts_with("svc") && l.contains("starting again in")),
        "the service was started anew: {said:#?}"
    );
    assert!(up.terminate().success());
}

#[test]
fn on_a_terminal_a_last_line_sums_up_every_service() {
    // `script` (util-linux) gives lks up a pseudo-terminal; the run ends
    // after a few seconds with SIGINT, as Ctrl-C would end it.
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    write(
        ws,
        "lks.yaml",
        "services:\n  - name: one\n    command: sh -c \"exec sleep 1000\"\n  \
         - name: two\n    command: sh -c \"exec sleep 1000\"\n    deps: [one]\n",
    );
    let lks = bin("lks");
    let run = format!(
        "NO_COLOR=1 timeout -s INT 5 {} up --runtime local -f {}",
        lks.display(),
        ws.join("lks.yaml").display()
    );
    let out = Command::new("script")
        .args(["-qfec", &run, "/dev/null"])
        .current_dir(ws)
        .output()
        .expect("run script(1) (util-linux)");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("lks: 0/2 ready"), "{said}");
    assert!(said.contains("lks: 2/2 ready"), "{said}");
    // Off a terminal there is no such line.
    let mut up = Up::start(ws, &["--runtime", "local"]);
    up.wait(&["two", "[ready]"], Duration::from_secs(20));
    assert!(!up.drain().iter().any(|l| l.contains("/2 ready")));
    assert!(up.terminate().success());
}
