//! `live_update.local_root`: the local runtime's root named by the
//! developer (e.g. to match the container's `/app` for an app that uses
//! absolute paths). lks fills it, keeps it between runs, and refuses a
//! directory it did not make rather than replace what is in it.

use lks_e2e::*;
use std::path::Path;
use std::time::Duration;

const START: Duration = Duration::from_secs(60);

/// A workspace whose `web` reads `greeting.txt` from `root` by absolute
/// path on every request.
fn workspace(ws: &Path, root: &Path, port: u16) {
    write(ws, "lks.yaml", "services: [web/lks.service.yaml]\n");
    write(
        ws,
        "web/lks.service.yaml",
        &format!(
            "name: web\ncommand: node server.js\nports: [{port}]\n\
             readiness: {{http: 'http://127.0.0.1:{port}/'}}\n\
             live_update:\n  local_root: {}\n  restart: never\n",
            root.display()
        ),
    );
    write(
        ws,
        "web/server.js",
        &format!(
            "const fs = require('fs');\n\
             require('http').createServer((req, res) =>\n\
               res.end(fs.readFileSync('{}/greeting.txt')))\n\
               .listen({port}, '127.0.0.1');\n",
            root.display()
        ),
    );
    write(ws, "web/greeting.txt", "one\n");
}

/// Stops `lks up`, which must end well.
fn stop(up: &mut Up) {
    let status = up.terminate();
    assert!(
        status.success(),
        "{status:?}\nstdout:\n{}\nstderr:\n{}",
        up.drain().join("\n"),
        up.stderr_lines().join("\n")
    );
}

#[test]
fn the_app_runs_in_its_named_root_which_is_kept_for_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, root) = (tmp.path().join("ws"), tmp.path().join("srv/app"));
    let port = free_port();
    workspace(&ws, &root, port);
    let mut up = Up::start(&ws, &[]);
    up.wait(&["web ", "[ready]"], START);
    assert_eq!(http_get(port, "/").as_deref(), Some("one\n"));
    write(&ws, "web/greeting.txt", "two\n");
    assert!(
        wait_until(Duration::from_secs(20), || http_get(port, "/").as_deref()
            == Some("two\n")),
        "the edit never reached the named root: {:?}\n{}",
        http_get(port, "/"),
        up.drain().join("\n")
    );
    assert!(root.join("server.js").is_file());
    assert!(
        !ws.join(".lks/web/root").exists(),
        "the default root was made too"
    );
    stop(&mut up);

    // lks made it: the next run uses it again, though it is not empty.
    let mut up = Up::start(&ws, &[]);
    up.wait(&["web ", "[ready]"], START);
    assert_eq!(http_get(port, "/").as_deref(), Some("two\n"));
    stop(&mut up);
}

#[test]
fn a_named_root_lks_did_not_make_is_refused_and_what_is_in_it_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, root) = (tmp.path().join("ws"), tmp.path().join("srv/app"));
    let port = free_port();
    workspace(&ws, &root, port);
    write(&root, "notes.txt", "the developer's own\n");
    let mut up = Up::start(&ws, &[]);
    let line = up.wait(&["web ", "not starting it again"], START);
    let said = up.drain().join("\n");
    assert!(
        said.contains(&format!(
            "its local_root {} is not empty, and lks did not make it",
            root.display()
        )) && said.contains("Empty it"),
        "{line}\n{said}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("notes.txt")).unwrap(),
        "the developer's own\n"
    );
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        1,
        "lks wrote into it"
    );
    stop(&mut up);

    // Another workspace cannot take a root this one made.
    std::fs::remove_file(root.join("notes.txt")).unwrap();
    let mut up = Up::start(&ws, &[]);
    up.wait(&["web ", "[ready]"], START);
    stop(&mut up);
    let other = tmp.path().join("other");
    workspace(&other, &root, port);
    let mut up = Up::start(&other, &[]);
    up.wait(&["web ", "not starting it again"], START);
    assert!(
        root.join("server.js").is_file(),
        "the first workspace's root was emptied"
    );
    stop(&mut up);
}
