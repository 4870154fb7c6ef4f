//! What Tilt users' live updates say, through `lks up` on the local runtime:
//! shell steps in a working directory, restart triggers (only some changes
//! restart the app), an allow-list per sync mapping, `ignore` patterns that
//! mean the same in every mapping, and a sync folder a host-side build makes
//! after the service started.

use lks_e2e::*;
use std::path::Path;
use std::time::Duration;

/// Writes `dir/server.js`: answers its process id on `port`.
fn pid_server(dir: &Path, port: u16) {
    write(
        dir,
        "server.js",
        &format!(
            "require('http').createServer((req, res) => res.end(String(process.pid)))\n\
               .listen({port}, '127.0.0.1');\n"
        ),
    );
}

fn app_pid(port: u16) -> Option<String> {
    http_get(port, "/")
}

#[test]
fn shell_steps_run_in_their_workdir_and_only_the_named_changes_restart_the_app() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let port = free_port();
    write(ws, "lks.yaml", "services: [svc/lks.service.yaml]\n");
    write(
        ws,
        "svc/lks.service.yaml",
        &format!(
            "name: svc\ncommand: {{sh: 'exec node server.js'}}\nreadiness:\n  tcp: 127.0.0.1:{port}\n\
             live_update:\n  run:\n\
             \x20   - sh: 'pwd > ../where.txt && cat *.txt | wc -l >> ../ran.log'\n\
             \x20     workdir: tools\n      trigger: ['tools/**']\n\
             \x20 restart: {{on-change: ['*.js']}}\n"
        ),
    );
    let svc = ws.join("svc");
    pid_server(&svc, port);
    write(&svc, "static/a.css", "a {}\n");
    write(&svc, "tools/one.txt", "1\n");
    let mut up = Up::start(ws, &[]);
    up.wait(&["svc", "[ready]"], Duration::from_secs(60));
    let root = ws.join(".lks/svc/root");
    let first = app_pid(port).expect("the app answers");

    // Not named by the restart triggers: synced, the app keeps running.
    let mark = up.mark();
    write(&svc, "static/a.css", "a { color: red }\n");
    up.wait_since(mark, &["svc", "synced 1 files"], Duration::from_secs(20));
    assert_eq!(
        std::fs::read_to_string(root.join("static/a.css")).unwrap(),
        "a { color: red }\n"
    );
    assert_eq!(app_pid(port).as_deref(), Some(first.as_str()), "restarted");

    // The step's trigger: it runs with the shell, in its workdir; no restart.
    let mark = up.mark();
    write(&svc, "tools/two.txt", "2\n");
    up.wait_since(mark, &["svc", "step 1 ok"], Duration::from_secs(20));
    let where_ = std::fs::read_to_string(root.join("where.txt")).unwrap();
    assert!(where_.trim_end().ends_with("/tools"), "ran in {where_:?}");
    assert_eq!(
        std::fs::read_to_string(root.join("ran.log"))
            .unwrap()
            .trim(),
        "2"
    );
    assert_eq!(app_pid(port).as_deref(), Some(first.as_str()), "restarted");

    // A change the triggers name: the app restarts.
    let server = std::fs::read_to_string(svc.join("server.js")).unwrap();
    write(&svc, "server.js", &format!("{server}// v2\n"));
    assert!(
        wait_until(Duration::from_secs(20), || app_pid(port)
            .is_some_and(|p| p != first)),
        "the app was not restarted after server.js changed\n{}",
        up.drain().join("\n")
    );
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn an_allow_list_and_the_services_ignore_pick_what_each_mapping_syncs_and_a_later_folder_arrives() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let port = free_port();
    write(ws, "lks.yaml", "services: [svc/lks.service.yaml]\n");
    write(
        ws,
        "svc/lks.service.yaml",
        &format!(
            "name: svc\ncommand: node web/src/server.js\nreadiness:\n  tcp: 127.0.0.1:{port}\n\
             live_update:\n  sync:\n\
             \x20   - {{local: web, remote: web, only: [src/, index.html]}}\n\
             \x20   - {{local: dist, remote: dist}}\n\
             \x20 ignore: ['/*', '!/web/', '!/dist/', '*.log']\n"
        ),
    );
    let svc = ws.join("svc");
    pid_server(&svc.join("web/src"), port);
    write(&svc, "web/src/lib/util.js", "module.exports = 1;\n");
    write(&svc, "web/src/debug.log", "noise\n");
    write(&svc, "web/index.html", "<h1>hi</h1>\n");
    write(&svc, "web/notes.md", "not for the app\n");
    write(&svc, "web/node_modules/m/index.js", "module.exports = 2;\n");
    write(&svc, "top.txt", "ignored by /*\n");
    let mut up = Up::start(ws, &[]);
    up.wait(&["svc", "[ready]"], Duration::from_secs(60));
    let root = ws.join(".lks/svc/root");
    // `/*` is anchored at the service directory: everything in web/ that
    // the allow-list names arrives, and nothing else.
    for synced in ["web/src/server.js", "web/src/lib/util.js", "web/index.html"] {
        assert!(root.join(synced).is_file(), "{synced} was not synced");
    }
    for left_out in [
        "web/src/debug.log",
        "web/notes.md",
        "web/node_modules",
        "top.txt",
    ] {
        assert!(
            root.join(left_out).symlink_metadata().is_err(),
            "{left_out} was synced"
        );
    }

    // The mapping of the folder not made yet holds nothing.
    assert!(
        std::fs::read_dir(root.join("dist")).map_or(true, |mut d| d.next().is_none()),
        "dist is not empty"
    );

    // A change outside the allow-list: nothing to sync, no rebuild.
    write(&svc, "web/notes.md", "still not for the app\n");
    // The folder a host-side build makes later: picked up when it appears.
    let mark = up.mark();
    write(&svc, "dist/bundle.js", "built\n");
    up.wait_since(mark, &["svc", "synced"], Duration::from_secs(20));
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(
            root.join("dist/bundle.js")
        )
        .is_ok_and(|t| t == "built\n")),
        "dist/bundle.js never arrived\n{}",
        up.drain().join("\n")
    );
    assert!(root.join("web/notes.md").symlink_metadata().is_err());
    let lines = up.drain().join("\n");
    assert!(!lines.contains("rebuild"), "a rebuild:\n{lines}");
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_stack_trace_in_the_apps_output_names_the_developers_files() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().canonicalize().unwrap();
    let port = free_port();
    write(&ws, "lks.yaml", "services: [svc/lks.service.yaml]\n");
    write(
        &ws,
        "svc/lks.service.yaml",
        &format!("name: svc\ncommand: node server.js\nreadiness:\n  tcp: 127.0.0.1:{port}\n"),
    );
    write(
        &ws,
        "svc/server.js",
        &format!(
            "console.log(new Error('boom').stack);\n\
             require('http').createServer((q, r) => r.end('ok')).listen({port}, '127.0.0.1');\n"
        ),
    );
    let mut up = Up::start(&ws, &[]);
    up.wait(&["svc", "[ready]"], Duration::from_secs(60));
    let local = format!("{}:1:13", ws.join("svc/server.js").display());
    let line = up.wait(&["svc", "at Object"], Duration::from_secs(20));
    let lines = up.drain().join("\n");
    assert!(
        lines.contains(&local),
        "no line names {local} (first frame: {line})\n{lines}"
    );
    assert!(
        !lines
            .lines()
            .any(|l| l.contains("    at ") && l.contains(".lks/svc/root")),
        "{lines}"
    );
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}
