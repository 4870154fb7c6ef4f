//! What `lks up` leaves behind when it ends badly, through the real binaries
//! on the local runtime: killed (SIGKILL), its terminal closed (SIGHUP), its
//! stdout's reader gone (`lks up | head`). Each time its agents and their
//! apps stop and the app's port is free again.

use lks_e2e::*;
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

/// A workspace with one Node service answering on `port`.
fn workspace(ws: &Path, port: u16) {
    write(ws, "lks.yaml", "services: [\"web/lks.service.yaml\"]\n");
    write(
        ws,
        "web/lks.service.yaml",
        &format!(
            "name: web\ncommand: node server.js\nreadiness:\n  http: http://127.0.0.1:{port}/\n\
             live_update:\n  restart: on-change\n"
        ),
    );
    server(ws, port, "one");
}

fn server(ws: &Path, port: u16, greeting: &str) {
    write(&ws.join("web"), "server.js", &server_code(port, greeting));
}

fn server_code(port: u16, greeting: &str) -> String {
    format!(
        "require('http').createServer((q, r) => r.end('{greeting}\\n'))\n\
           .listen({port}, '127.0.0.1', () => console.log('listening'));\n"
    )
}

/// Every `pid N` in web's lines (its agent's and its app's).
fn pids_in(lines: &[String]) -> Vec<i32> {
    let pids: Vec<i32> = lines
        .iter()
        .filter(|l| l.starts_with("web "))
        .flat_map(|l| pids_said(l))
        .map(|p| p as i32)
        .collect();
    assert!(pids.len() >= 2, "no agent and app pids: {lines:#?}");
    pids
}

/// `lks up`'s agent and app pids for web, once it is ready.
fn ready(up: &mut Up, port: u16) -> Vec<i32> {
    up.wait(&["web", "[ready]"], Duration::from_secs(60));
    assert_eq!(http_get(port, "/").as_deref(), Some("one\n"));
    pids_in(up.drain())
}

/// Within a few seconds every one of `pids` is gone and `port` answers no more.
fn nothing_left(pids: &[i32], port: u16, how: &str) {
    let gone = wait_until(Duration::from_secs(10), || {
        pids.iter().all(|p| !process_alive(*p as u32)) && http_get(port, "/").is_none()
    });
    let left: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|p| process_alive(*p as u32))
        .collect();
    // Never leave them to the next test.
    for p in &left {
        if let Some(p) = rustix::process::Pid::from_raw(*p) {
            let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
    assert!(
        gone,
        "after {how}, still running: {left:?}; port {port} answers {:?}",
        http_get(port, "/")
    );
}

fn signal(up: &Up, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(up.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

#[test]
fn a_killed_lks_up_leaves_no_agent_nor_app_running() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    workspace(tmp.path(), port);
    let mut up = Up::start(tmp.path(), &[]);
    let pids = ready(&mut up, port);
    signal(&up, rustix::process::Signal::KILL);
    let _ = up.child.wait();
    nothing_left(&pids, port, "SIGKILL");
}

#[test]
fn sigterm_as_soon_as_a_service_has_failed_ends_lks_up_well() {
    // A service that fails at once: lks up's first lines come before the
    // rest of its start-up (the handlers were once installed late, and a
    // SIGTERM then killed it without its cleanup).
    for _ in 0..5 {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "lks.yaml",
            "services: [\"web/lks.service.yaml\"]\n",
        );
        write(tmp.path(), "web/lks.service.yaml", "name: web\n");
        let mut up = Up::start(tmp.path(), &[]);
        up.wait(&["web ", "not starting it again"], Duration::from_secs(30));
        signal(&up, rustix::process::Signal::TERM);
        let status = up.terminate();
        assert!(
            status.success(),
            "an early SIGTERM ended lks up with {status:?}\n{}",
            up.drain().join("\n")
        );
    }
}

#[test]
fn a_closed_terminal_stops_lks_up_and_what_it_started() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    workspace(tmp.path(), port);
    let mut up = Up::start(tmp.path(), &[]);
    let pids = ready(&mut up, port);
    signal(&up, rustix::process::Signal::HUP);
    let exited = wait_until(Duration::from_secs(20), || {
        matches!(up.child.try_wait(), Ok(Some(_)))
    });
    assert!(exited, "lks up is still running after SIGHUP");
    // Handled, not killed by it: it stopped its services and exited 0.
    let status = up.child.wait().unwrap();
    assert!(status.success(), "lks up died of SIGHUP: {status:?}");
    up.wait(&["stopping"], Duration::from_secs(5));
    nothing_left(&pids, port, "SIGHUP");
}

#[test]
fn a_panic_in_lks_up_stops_what_it_started_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    workspace(tmp.path(), port);
    let mut cmd = up_command(tmp.path(), &[]);
    // Debug builds only: a task panics 4 s after launch (web is ready by then).
    cmd.env("LKS_TEST_PANIC", "4000");
    let mut up = Up::spawn(cmd);
    let pids = ready(&mut up, port);
    let exited = wait_until(Duration::from_secs(30), || {
        matches!(up.child.try_wait(), Ok(Some(_)))
    });
    assert!(exited, "lks up still runs after a panic");
    let status = up.child.wait().unwrap();
    assert!(!status.success(), "a panic ended lks up with success");
    up.wait(
        &["stopping after an internal error"],
        Duration::from_secs(5),
    );
    let err = up.stderr_lines().join("\n");
    assert!(err.contains("LKS_TEST_PANIC: a panic on purpose"), "{err}");
    assert!(err.contains("this is a bug in lks"), "{err}");
    assert!(err.contains("please report it"), "{err}");
    nothing_left(&pids, port, "a panic");
}

#[test]
fn a_reader_of_stdout_that_goes_away_stops_lks_up_without_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    workspace(tmp.path(), port);
    let mut cmd = up_command(tmp.path(), &[]);
    cmd.stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    // Like `head`: read until the line wanted, then go away.
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("lks up ended before web was ready: {seen:#?}");
        }
        seen.push(line.trim_end().to_string());
        if line.contains("web") && line.contains("[ready]") {
            break;
        }
    }
    let pids = pids_in(&seen);
    drop(out);
    // The next line lks up writes finds no reader.
    server(tmp.path(), port, "two");
    let exited = wait_until(Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let _ = child.wait();
    let err = err.join().unwrap();
    assert!(exited, "lks up still runs with nobody reading it: {err:#?}");
    assert!(!err.iter().any(|l| l.contains("panicked")), "{err:#?}");
    nothing_left(&pids, port, "its reader went away");
}

#[test]
fn a_second_lks_up_of_the_workspace_is_refused_naming_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    workspace(tmp.path(), port);
    let mut up = Up::start(tmp.path(), &[]);
    ready(&mut up, port);
    let file = tmp.path().join("lks.yaml");
    let (out, _) = run_lks(
        &["up", "-f", file.to_str().unwrap()],
        &[],
        Duration::from_secs(30),
    );
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("another lks up (pid {})", up.child.id())),
        "{err}"
    );
    // The first one runs on, untouched.
    assert_eq!(http_get(port, "/").as_deref(), Some("one\n"));
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}

/// A run killed while its agent could not notice (stopped with SIGSTOP):
/// the agent and its app are left running; their pids.
fn a_killed_run_with_a_stuck_agent(ws: &Path, port: u16) -> Vec<i32> {
    let mut up = Up::start(ws, &[]);
    let pids = ready(&mut up, port);
    let agent = rustix::process::Pid::from_raw(pids[0]).unwrap();
    rustix::process::kill_process(agent, rustix::process::Signal::STOP).unwrap();
    signal(&up, rustix::process::Signal::KILL);
    let _ = up.child.wait();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        pids.iter().all(|p| process_alive(*p as u32)),
        "the leftovers this test needs are gone already"
    );
    assert_eq!(http_get(port, "/").as_deref(), Some("one\n"));
    pids
}

#[test]
fn the_next_lks_up_stops_what_a_killed_one_left() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    workspace(tmp.path(), port);
    let left = a_killed_run_with_a_stuck_agent(tmp.path(), port);
    let mut up = Up::start(tmp.path(), &[]);
    up.wait(&["web", "[ready]"], Duration::from_secs(60));
    let err = up.stderr_lines();
    assert!(
        err.iter().any(|l| l.contains(&format!(
            "stopped the agent of web (pid {}) and its app",
            left[0]
        ))),
        "{err:#?}"
    );
    assert!(left.iter().all(|p| !process_alive(*p as u32)), "{left:?}");
    // The new app has the port.
    assert_eq!(http_get(port, "/").as_deref(), Some("one\n"));
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn lks_down_stops_what_a_killed_lks_up_left_on_the_local_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    workspace(tmp.path(), port);
    let left = a_killed_run_with_a_stuck_agent(tmp.path(), port);
    let file = tmp.path().join("lks.yaml");
    let (out, _) = run_lks(
        &["down", "-f", file.to_str().unwrap()],
        &[],
        Duration::from_secs(60),
    );
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!(
            "stopped the agent of web (pid {}) and its app",
            left[0]
        )),
        "{said}\n{}",
        text(&out.stderr)
    );
    assert!(!said.contains("nothing to remove"), "{said}");
    nothing_left(&left, port, "lks down");
}

#[test]
fn a_port_taken_before_the_start_is_named_with_its_holder_never_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    workspace(tmp.path(), port);
    // Another process answers on the service's port (here: this test).
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mut up = Up::start(tmp.path(), &[]);
    let line = up.wait(&["web", "already taken"], Duration::from_secs(60));
    assert!(
        line.contains(&format!(
            "port {port} is already taken by pid {}",
            std::process::id()
        )),
        "{line}"
    );
    up.wait(&["web", "starting again in"], Duration::from_secs(10));
    assert!(
        !up.drain().iter().any(|l| l.contains("[ready]")),
        "{:#?}",
        up.drain()
    );
    // Once it is free, the service starts by itself.
    drop(squatter);
    up.wait(&["web", "[ready]"], Duration::from_secs(60));
    assert_eq!(http_get(port, "/").as_deref(), Some("one\n"));
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}

/// The work dir's own files are never synced, and their growth wakes nothing,
/// with the service beside lks.yaml: written inline, or in its own file.
fn the_work_dir_stays_out(inline: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let port = free_port();
    let service = format!(
        "name: web\ncommand: node server.js\nreadiness:\n  http: http://127.0.0.1:{port}/\n"
    );
    if inline {
        let indented: String = service.lines().map(|l| format!("    {l}\n")).collect();
        write(ws, "lks.yaml", &format!("services:\n  -\n{indented}"));
    } else {
        write(ws, "lks.yaml", "services: [\"lks.service.yaml\"]\n");
        write(ws, "lks.service.yaml", &service);
    }
    write(
        ws,
        "server.js",
        &format!(
            "require('http').createServer((q, r) => r.end('one\\n'))\n\
               .listen({port}, '127.0.0.1', () => console.log('listening'));\n\
             setInterval(() => console.log('the agent log grows'), 20);\n"
        ),
    );
    let mut up = Up::start(ws, &[]);
    up.wait(&["web", "[ready]"], Duration::from_secs(60));
    let mark = up.mark();
    // The app writes (into agent.log) every 20 ms; lks's own files change.
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<String> = up.drain()[mark..]
        .iter()
        .filter(|l| !l.contains("the agent log grows"))
        .cloned()
        .collect();
    assert!(after.is_empty(), "lks woke by itself: {after:#?}");
    let root = ws.join(".lks/web/root");
    assert!(root.join("server.js").is_file(), "not synced at all");
    assert!(
        !root.join(".lks").exists(),
        "the work dir was synced into itself"
    );
    assert!(!root.join("lks.yaml").exists(), "lks.yaml was synced");
    // An edit still arrives.
    write(
        ws,
        "server.js",
        "require('http').createServer((q, r) => r.end('two\\n')).listen(1);\n",
    );
    up.wait_since(mark, &["web", "synced 1 files"], Duration::from_secs(20));
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_work_dir_of_a_service_beside_lks_yaml_is_never_synced_nor_wakes_it() {
    the_work_dir_stays_out(false);
}

#[test]
fn the_work_dir_of_a_service_written_inline_is_never_synced_nor_wakes_it() {
    the_work_dir_stays_out(true);
}

#[test]
fn editors_temporary_files_cause_no_restart_nor_error() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    workspace(tmp.path(), port);
    let dir = tmp.path().join("web");
    let mut up = Up::start(tmp.path(), &[]);
    ready(&mut up, port);
    let mark = up.mark();
    let edits = 3;
    for i in 0..edits {
        let greeting = format!("edit{i}");
        let edit_mark = up.mark();
        // vim: its write test, its swap file, a backup.
        write(&dir, "4913", "");
        std::fs::remove_file(dir.join("4913")).unwrap();
        write(&dir, ".server.js.swp", &"x".repeat(10_000));
        std::fs::copy(dir.join("server.js"), dir.join("server.js~")).unwrap();
        std::thread::sleep(Duration::from_millis(80));
        std::fs::remove_file(dir.join("server.js~")).unwrap();
        // JetBrains' safe write: a temporary file renamed over the original.
        let code = server_code(port, &greeting);
        write(&dir, "server.js___jb_tmp___", &code);
        std::thread::sleep(Duration::from_millis(10));
        std::fs::rename(dir.join("server.js___jb_tmp___"), dir.join("server.js")).unwrap();
        std::fs::remove_file(dir.join(".server.js.swp")).unwrap();
        // GNU sed -i: another temporary file renamed over it.
        let status = std::process::Command::new("sed")
            .args(["-i", &format!("s/{greeting}/{greeting}-sed/"), "server.js"])
            .current_dir(&dir)
            .status()
            .unwrap();
        assert!(status.success());
        let want = format!("{greeting}-sed\n");
        assert!(
            wait_until(Duration::from_secs(20), || http_get(port, "/").as_deref()
                == Some(want.as_str())),
            "edit {i} never arrived: {:?}\n{:#?}",
            http_get(port, "/"),
            up.drain()
        );
        // Let the edit's restart be reported before the next.
        up.wait_since(edit_mark, &["web", "[ready]"], Duration::from_secs(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = up.drain()[mark..].to_vec();
    let restarts = after.iter().filter(|l| l.contains("app started")).count();
    // Two real edits each time (the safe write, then sed): two restarts each
    // at the most, none for a temporary file.
    assert!(restarts <= 2 * edits, "{restarts} restarts: {after:#?}");
    // Only server.js ever went to the agent.
    let synced: Vec<&String> = after.iter().filter(|l| l.contains("synced ")).collect();
    assert!(
        !synced.is_empty()
            && synced
                .iter()
                .all(|l| l.contains("synced 1 files, 0 deleted")),
        "{after:#?}"
    );
    assert!(
        !after
            .iter()
            .any(|l| l.contains("error") || l.contains("warning")),
        "{after:#?}"
    );
    let root = tmp.path().join(".lks/web/root");
    let names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n == "server.js" || n == "lks.service.yaml"),
        "{names:?}"
    );
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}

/// A service file for NAME answering `$GREETING` on `port`.
fn greeter(ws: &Path, name: &str, port: u16, greeting: &str) {
    write(
        &ws.join(name),
        "lks.service.yaml",
        &format!(
            "name: {name}\ncommand: node server.js\nenv:\n  GREETING: {greeting}\n\
             readiness:\n  http: http://127.0.0.1:{port}/\n"
        ),
    );
    write(
        &ws.join(name),
        "server.js",
        &format!(
            "require('http').createServer((q, r) => r.end(process.env.GREETING + '\\n'))\n\
               .listen({port}, '127.0.0.1');\n"
        ),
    );
}

#[test]
fn editing_lks_yaml_or_a_service_file_while_up_runs_reloads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let (web, api) = (free_port(), free_port());
    greeter(ws, "web", web, "hello");
    greeter(ws, "api", api, "api-one");
    write(ws, "lks.yaml", "services: [\"web/lks.service.yaml\"]\n");
    let mut up = Up::start(ws, &[]);
    up.wait(&["web", "[ready]"], Duration::from_secs(60));
    assert_eq!(http_get(web, "/").as_deref(), Some("hello\n"));

    // A changed service file: web starts anew with its new environment.
    let mark = up.mark();
    greeter(ws, "web", web, "bonjour");
    up.wait_since(
        mark,
        &["web/lks.service.yaml changed: restarted with its new definition: web"],
        Duration::from_secs(20),
    );
    assert!(
        wait_until(Duration::from_secs(20), || http_get(web, "/").as_deref()
            == Some("bonjour\n")),
        "{:#?}",
        up.drain()
    );

    // A new service in lks.yaml starts.
    let mark = up.mark();
    write(
        ws,
        "lks.yaml",
        "services: [\"web/lks.service.yaml\", \"api/lks.service.yaml\"]\n",
    );
    up.wait_since(
        mark,
        &["lks.yaml changed: started: api"],
        Duration::from_secs(20),
    );
    up.wait_since(mark, &["api", "[ready]"], Duration::from_secs(60));
    assert_eq!(http_get(api, "/").as_deref(), Some("api-one\n"));

    // An invalid edit: its error with FILE:LINE:COL, and everything runs on.
    let mark = up.mark();
    write(
        &ws.join("api"),
        "lks.service.yaml",
        "name: api\ncommand: node server.js\nports: [not-a-port]\n",
    );
    let said = up.wait_since(
        mark,
        &["has errors; everything runs as it was"],
        Duration::from_secs(20),
    );
    // The errors follow, one a line, each at FILE:LINE:COL.
    let error = up.wait_since(mark, &["api/lks.service.yaml:3:"], Duration::from_secs(5));
    assert!(error.contains("not-a-port"), "{said}\n{error}");
    assert_eq!(http_get(api, "/").as_deref(), Some("api-one\n"));
    assert_eq!(http_get(web, "/").as_deref(), Some("bonjour\n"));

    // A service removed from lks.yaml stops.
    let mark = up.mark();
    write(ws, "lks.yaml", "services: [\"web/lks.service.yaml\"]\n");
    up.wait_since(mark, &["stopped: api"], Duration::from_secs(20));
    assert!(
        wait_until(Duration::from_secs(10), || http_get(api, "/").is_none()),
        "api still answers"
    );
    assert_eq!(http_get(web, "/").as_deref(), Some("bonjour\n"));
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn every_service_of_lks_up_shares_one_inotify_instance() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let names: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
    for n in &names {
        greeter(ws, n, free_port(), n);
    }
    let list: Vec<String> = names
        .iter()
        .map(|n| format!("\"{n}/lks.service.yaml\""))
        .collect();
    write(
        ws,
        "lks.yaml",
        &format!("services: [{}]\n", list.join(", ")),
    );
    let mut up = Up::start(ws, &[]);
    for n in &names {
        up.wait(&[n.as_str(), "[ready]"], Duration::from_secs(60));
    }
    let instances = std::fs::read_dir(format!("/proc/{}/fd", up.child.id()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy() == "anon_inode:inotify")
        .count();
    // One for the services' trees, one for lks.yaml and the service files
    // (not one per service: the kernel allows 128 per user by default).
    assert!(
        instances <= 2,
        "{instances} inotify instances for 5 services"
    );
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn ctrl_c_to_the_terminals_process_group_stops_everything_without_errors() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    workspace(tmp.path(), port);
    // As a shell runs it: lks up leads a process group, the terminal's
    // foreground, and Ctrl-C sends SIGINT to all of that group.
    let mut cmd = up_command(tmp.path(), &[]);
    cmd.process_group(0);
    let mut up = Up::spawn(cmd);
    let pids = ready(&mut up, port);
    // The terminal's signals are lks's to act on: an agent that gets one
    // itself runs on (before, it died first and was reported as gone).
    let agent = rustix::process::Pid::from_raw(pids[0]).unwrap();
    rustix::process::kill_process(agent, rustix::process::Signal::INT).unwrap();
    rustix::process::kill_process(agent, rustix::process::Signal::HUP).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        process_alive(pids[0] as u32),
        "the agent died of SIGINT/SIGHUP"
    );
    assert_eq!(http_get(port, "/").as_deref(), Some("one\n"));
    let group = rustix::process::Pid::from_raw(up.child.id() as i32).unwrap();
    rustix::process::kill_process_group(group, rustix::process::Signal::INT).unwrap();
    let exited = wait_until(Duration::from_secs(20), || {
        matches!(up.child.try_wait(), Ok(Some(_)))
    });
    assert!(exited, "lks up still runs after Ctrl-C");
    assert!(up.child.wait().unwrap().success());
    let said = up.drain().join("\n");
    // lks stopped the agents, in order, rather than seeing them die first.
    assert!(!said.contains("[error"), "{said}");
    assert!(!said.contains("went away"), "{said}");
    nothing_left(&pids, port, "Ctrl-C");
}
