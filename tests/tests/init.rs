//! `lks init` through the real CLI: on a copy of `examples/` without its lks
//! files it says what it guessed and writes a workspace that `lks config
//! check` accepts and `lks up` runs (web answers with what api says, the Go
//! worker ticks, an edit of api reaches web); it replaces nothing without
//! `--force`, and `lks up` without a workspace suggests it.

use lks_e2e::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// `lks ARGS` run in `dir`, with no kubeconfig (the runtime `lks up` would
/// choose is the local one).
fn lks(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("lks"))
        .args(args)
        .current_dir(dir)
        .env("KUBECONFIG", dir.join("no-kubeconfig"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run lks")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `examples/` copied into `dst` with every `lks.yaml` and
/// `lks.service.yaml` removed, and its ports (18080, 18081) replaced by free
/// ones everywhere (sources, Dockerfiles, manifests), so the test runs beside
/// anything; returns (web, api).
fn examples_without_lks_files(dst: &Path) -> (u16, u16) {
    // The services of the first examples (the tour's use lks's own
    // features: host-side builds, allow-lists).
    copy_examples(
        dst,
        &["notes", "notes-build", "quotes", "clock", "clock-build"],
    );
    let (web, api) = (free_port(), free_port());
    let mut removed = 0;
    for entry in walkdir::WalkDir::new(dst) {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy();
        if entry.file_type().is_file() && (name == "lks.yaml" || name == "lks.service.yaml") {
            std::fs::remove_file(entry.path()).unwrap();
            removed += 1;
        }
    }
    replace_in_files(
        dst,
        &[("18080", web.to_string()), ("18081", api.to_string())],
    );
    assert_eq!(removed, 4, "examples/ has lks.yaml and three service files");
    (web, api)
}

#[test]
fn lks_init_on_the_examples_writes_a_workspace_that_lks_up_runs() {
    assert!(
        Command::new("go")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "`go` is not installed: tests/run.sh installs it (apt-get install golang-go)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let (web, api) = examples_without_lks_files(ws);

    let out = lks(ws, &["init"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for said in [
        "lks init: 3 services in ".to_string(),
        "web: Node.js (package.json): command `node server.js` (package.json scripts.start), \
         restart on change, fall back on package.json, Dockerfile; "
            .into(),
        format!(
            "port {web}, env PORT, API_URL, deps api, ready when http://127.0.0.1:{web}/health answers"
        ),
        "api: Python (requirements.txt): command `python3 app.py` (app.py exists), build \
         `python3 -m pip install"
            .into(),
        "again on a change of requirements.txt".into(),
        format!("port {api}"),
        "worker: Go (go.mod): command `./bin/worker`".into(),
        "build `go build -o bin/worker .`, again on a change of **/*.go or go.mod".into(),
        "wrote lks.yaml, api/lks.service.yaml, web/lks.service.yaml and worker/lks.service.yaml"
            .into(),
        "next: `lks config check`".into(),
    ] {
        assert!(stdout.contains(&said), "no {said:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("note:"), "every guess was made:\n{stdout}");

    let out = lks(ws, &["config", "check"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout,
        "ok: 3 services (api, web, worker), 0 aliases, for the local runtime\n"
    );

    let mut up = Up::start(ws, &[]);
    up.wait(&["web", "[ready]"], Duration::from_secs(120));
    assert_eq!(
        http_get(web, "/").as_deref(),
        Some("hello from web; api says: hello from api\n")
    );
    up.wait(&["worker", "worker tick 0"], Duration::from_secs(180));
    // The guessed rules live-update: an edit of api reaches what web says.
    let app = ws.join("api/app.py");
    let source = std::fs::read_to_string(&app)
        .unwrap()
        .replace("hello from api", "hello from a guessed api");
    std::fs::write(&app, source).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || http_get(web, "/").as_deref()
            == Some("hello from web; api says: hello from a guessed api\n")),
        "{:?}\n{}",
        http_get(web, "/"),
        up.drain().join("\n")
    );
    assert!(up.terminate().success());
}

#[test]
fn lks_init_replaces_nothing_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    examples_without_lks_files(ws);
    // `lks init DIR` from elsewhere.
    let out = lks(ws.parent().unwrap(), &["init", ws.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    let web = ws.join("web/lks.service.yaml");
    let guessed = std::fs::read_to_string(&web).unwrap();
    std::fs::write(&web, "name: web\ncommand: node server.js\n").unwrap();

    let out = lks(ws, &["init"]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains(
            "lks.yaml, api/lks.service.yaml, web/lks.service.yaml and worker/lks.service.yaml \
             already exist"
        ) && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&web).unwrap(),
        "name: web\ncommand: node server.js\n"
    );

    let out = lks(ws, &["init", "--dry-run"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("--- web/lks.service.yaml\n") && stdout.contains(&guessed),
        "{stdout}"
    );
    assert!(stdout.contains("dry run: nothing written"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&web).unwrap(),
        "name: web\ncommand: node server.js\n"
    );

    let out = lks(ws, &["init", "--force"]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(std::fs::read_to_string(&web).unwrap(), guessed);
}

#[test]
fn without_a_workspace_lks_up_and_lks_config_check_suggest_lks_init() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [&["up"][..], &["config", "check"]] {
        let out = lks(tmp.path(), args);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr.contains("no lks.yaml in ") && stderr.contains("`lks init`"),
            "{args:?}: {stderr}"
        );
    }
    // And in a directory with nothing to guess from, lks init says what it looks for.
    write(tmp.path(), "README.md", "nothing here\n");
    let out = lks(tmp.path(), &["init"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("found no service") && stderr.contains("package.json"),
        "{stderr}"
    );
    assert!(!tmp.path().join("lks.yaml").exists());
}
