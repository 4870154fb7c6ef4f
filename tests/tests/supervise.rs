//! `lks-agent supervise`: the app runs in its own process group, restarts when a
//! batch asks (after its steps succeed) and after crashes (with growing delays),
//! its output is passed through and streamed as events, and stopping the agent
//! leaves no process behind. Steps run under plain `serve` too.
//!
//! The apps are small shell scripts; they write their pid (and their children's)
//! to files in the root so the tests can check real processes.

use lks_e2e::*;
use lks_proto::v1::agent_client::AgentClient;
use lks_proto::v1::apply_request::Op;
use lks_proto::v1::{
    AppExited, AppStarted, ApplyRequest, ApplyResult, Commit, Event, EventsRequest, HelloRequest,
    OutputSource, OutputStream, Step, event,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;
use tonic::Request;
use tonic::transport::Channel;

const TOKEN: &str = "supervise-test-token-5f2a";
/// Generous bound for anything that should take well under a second.
const SOON: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A temporary root (canonical path) with `app.sh` written into it.
fn root_with_app(script: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("app.sh"), script).unwrap();
    (tmp, root)
}

/// The agent command for `sh app.sh` in `root`, with a marker variable in its
/// environment that the app and the steps must see.
fn supervise_app(root: &Path, extra: &[&str]) -> Command {
    let mut cmd = supervise_command(root, TOKEN, extra, &["sh", "app.sh"]);
    cmd.env("LKS_E2E_APP_VAR", "from-the-agent");
    cmd
}

async fn client(url: &str) -> AgentClient<Channel> {
    let channel = lks_e2e::agent_channel(url).await;
    AgentClient::new(channel)
}

fn authorized<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(
        lks_proto::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().unwrap(),
    );
    req
}

fn step(argv: &[&str]) -> Step {
    Step {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Sends a batch holding only a commit; panics if the call itself fails.
async fn commit(url: &str, batch_id: &str, steps: Vec<Step>, restart: bool) -> ApplyResult {
    let msg = ApplyRequest {
        op: Some(Op::Commit(Commit {
            batch_id: batch_id.into(),
            steps,
            restart,
            ..Default::default()
        })),
    };
    let mut c = client(url).await;
    let call = c.apply(authorized(tokio_stream::iter(vec![msg])));
    tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("Apply did not answer within 60 s")
        .unwrap_or_else(|s| panic!("Apply failed as a call: {s:?}"))
        .into_inner()
}

/// Events received from one subscription, in order.
struct Events {
    rx: UnboundedReceiver<Event>,
    seen: Vec<Event>,
}

impl Events {
    /// Subscribes; once this returns, every later event is received.
    async fn subscribe(url: &str) -> Events {
        let mut c = client(url).await;
        let mut stream = c
            .events(authorized(EventsRequest {}))
            .await
            .expect("Events call")
            .into_inner();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(e)) = stream.message().await {
                if tx.send(e).is_err() {
                    break;
                }
            }
        });
        Events {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits up to `timeout` for an event for which `f` returns `Some`.
    async fn wait_for<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(e)) => {
                    let hit = f(&e);
                    self.seen.push(e);
                    if let Some(t) = hit {
                        return t;
                    }
                }
                Ok(None) => panic!("the event stream ended while waiting for {what}"),
                Err(_) => panic!(
                    "no {what} within {timeout:?}; events seen:\n{:#?}",
                    self.seen
                ),
            }
        }
    }

    async fn app_started(&mut self) -> AppStarted {
        self.wait_for(SOON, "AppStarted", |e| match &e.kind {
            Some(event::Kind::AppStarted(s)) => Some(s.clone()),
            _ => None,
        })
        .await
    }

    async fn app_exited(&mut self, timeout: Duration) -> AppExited {
        self.wait_for(timeout, "AppExited", |e| match &e.kind {
            Some(event::Kind::AppExited(x)) => Some(*x),
            _ => None,
        })
        .await
    }
}

/// Reads the pid the app wrote to `name` in the root.
fn pid_in(root: &Path, name: &str, not: Option<u32>) -> u32 {
    read_pid_file(&root.join(name), SOON, not)
}

fn pid_gone(pid: u32) -> bool {
    let p = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH)
}

fn group_gone(pgid: u32) -> bool {
    let p = rustix::process::Pid::from_raw(pgid as i32).unwrap();
    rustix::process::test_kill_process_group(p) == Err(rustix::io::Errno::SRCH)
}

// ---------------------------------------------------------------------------
// Restart
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_restart_stops_the_app_and_starts_a_new_process_in_a_new_group() {
    let (_tmp, root) = root_with_app("echo $$ > app.pid\nexec sleep 1000\n");
    let agent = SupervisedAgent::spawn(supervise_app(&root, &[]));
    let old = pid_in(&root, "app.pid", None);
    assert_eq!(
        proc_stat(old).unwrap().pgrp,
        old,
        "the app leads its own group"
    );
    let mut events = Events::subscribe(&agent.url).await;

    let r = commit(&agent.url, "restart-1", vec![], true).await;
    assert!(r.restarted, "not restarted: {r:?}");
    assert_eq!(r.restart_skipped, "");

    let exited = events.app_exited(SOON).await;
    assert_eq!(exited.pid, old);
    assert!(exited.requested);
    assert_eq!(exited.signal, 15, "stopped by SIGTERM: {exited:?}");
    let started = events.app_started().await;
    assert_ne!(started.pid, old);
    assert_eq!(started.restarts, 1);
    assert_eq!(started.argv, ["sh", "app.sh"]);
    // The old process and its group were gone before the reply.
    assert!(pid_gone(old), "the old app {old} is still there");
    assert!(
        group_gone(old),
        "the old process group {old} still has processes"
    );
    assert_eq!(pid_in(&root, "app.pid", Some(old)), started.pid);
    assert!(process_alive(started.pid));
    assert_eq!(proc_stat(started.pid).unwrap().pgrp, started.pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let (_tmp, root) =
        root_with_app("trap '' TERM\necho $$ > app.pid\nwhile :; do sleep 1; done\n");
    let agent = SupervisedAgent::spawn(supervise_app(&root, &["--grace-period", "1"]));
    let old = pid_in(&root, "app.pid", None);
    let mut events = Events::subscribe(&agent.url).await;

    let t = Instant::now();
    let r = commit(&agent.url, "restart-stubborn", vec![], true).await;
    let took = t.elapsed();
    assert!(r.restarted, "not restarted: {r:?}");
    assert!(
        took >= Duration::from_millis(900),
        "restarted after {took:?}: the grace period was not given"
    );
    assert!(took < Duration::from_secs(15), "restart took {took:?}");
    let exited = events.app_exited(SOON).await;
    assert_eq!(exited.pid, old);
    assert_eq!(exited.signal, 9, "not SIGKILLed: {exited:?}");
    assert!(pid_gone(old));
    assert!(group_gone(old));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_children_die_with_it_on_restart() {
    let (_tmp, root) =
        root_with_app("sleep 1000 &\necho $! > child.pid\necho $$ > app.pid\nwait\n");
    let agent = SupervisedAgent::spawn(supervise_app(&root, &[]));
    let old = pid_in(&root, "app.pid", None);
    let old_child = pid_in(&root, "child.pid", None);
    assert_eq!(proc_stat(old_child).unwrap().pgrp, old);

    let r = commit(&agent.url, "restart-tree", vec![], true).await;
    assert!(r.restarted, "not restarted: {r:?}");
    assert!(!process_alive(old), "the old app {old} survived");
    assert!(
        !process_alive(old_child),
        "the old app's child {old_child} survived"
    );
    assert!(live_group_members(old).is_empty());
    let new = pid_in(&root, "app.pid", Some(old));
    let new_child = pid_in(&root, "child.pid", Some(old_child));
    assert!(process_alive(new) && process_alive(new_child));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_start_the_app_starts_with_the_first_batch_that_asks_after_its_steps_built_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    let agent = SupervisedAgent::spawn(supervise_app(&root, &["--no-start"]));
    let mut events = Events::subscribe(&agent.url).await;
    let build = step(&[
        "sh",
        "-c",
        "printf 'echo $$ > app.pid\\nexec sleep 1000\\n' > app.sh",
    ]);
    let r = commit(&agent.url, "first", vec![build], true).await;
    assert!(r.steps[0].success, "{r:?}");
    assert!(r.restarted, "{r:?}");
    let started = events.app_started().await;
    assert_eq!(started.restarts, 0, "the app had been started before");
    assert_eq!(pid_in(&root, "app.pid", None), started.pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_agent_stops_the_app_and_exits_zero_leaving_no_process_behind() {
    let (_tmp, root) =
        root_with_app("sleep 1000 &\necho $! > child.pid\necho $$ > app.pid\nwait\n");
    let mut agent = SupervisedAgent::spawn(supervise_app(&root, &[]));
    let app = pid_in(&root, "app.pid", None);
    let child = pid_in(&root, "child.pid", None);
    // An open event stream must not hold the agent up.
    let _events = Events::subscribe(&agent.url).await;

    let status = agent.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(!process_alive(app), "the app {app} is still running");
    assert!(
        !process_alive(child),
        "the app's child {child} is still running"
    );
    assert!(live_group_members(app).is_empty());
}

// ---------------------------------------------------------------------------
// --wait-for-sync: a new pod's app waits for lks's first batch (bounded)
// ---------------------------------------------------------------------------

/// Says hello as lks does first when it connects.
async fn hello(url: &str) {
    client(url)
        .await
        .hello(authorized(HelloRequest {
            protocol_version: lks_proto::PROTOCOL_VERSION,
            client_version: "test".into(),
        }))
        .await
        .expect("Hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_for_sync_the_app_starts_with_the_first_batch_even_an_empty_one_not_before() {
    let (_tmp, root) = root_with_app("echo $$ > app.pid\nexec sleep 1000\n");
    let agent = SupervisedAgent::spawn(supervise_app(&root, &["--wait-for-sync", "30"]));
    let mut events = Events::subscribe(&agent.url).await;
    hello(&agent.url).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !root.join("app.pid").exists(),
        "the app started before the first batch"
    );
    // The end of a full sync with nothing to send: an empty commit.
    let r = commit(&agent.url, "first", vec![], false).await;
    assert!(!r.restarted, "{r:?}");
    let started = events.app_started().await;
    assert_eq!(pid_in(&root, "app.pid", None), started.pid);
    assert_eq!(started.restarts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_for_sync_and_no_lks_connecting_the_app_starts_after_the_wait() {
    let (_tmp, root) = root_with_app("echo $$ > app.pid\nexec sleep 1000\n");
    let t0 = Instant::now();
    let agent = SupervisedAgent::spawn(supervise_app(&root, &["--wait-for-sync", "1"]));
    let mut events = Events::subscribe(&agent.url).await;
    events.app_started().await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "started after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_for_sync_a_connected_lks_keeps_the_app_waiting_for_its_batch_past_the_wait() {
    let (_tmp, root) = root_with_app("echo $$ > app.pid\nexec sleep 1000\n");
    let agent = SupervisedAgent::spawn(supervise_app(&root, &["--wait-for-sync", "1"]));
    let mut events = Events::subscribe(&agent.url).await;
    hello(&agent.url).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !root.join("app.pid").exists(),
        "the app did not wait for the connected client's batch"
    );
    let r = commit(&agent.url, "first", vec![], true).await;
    assert!(r.restarted, "a restart starts the held app: {r:?}");
    events.app_started().await;
}

#[test]
fn supervise_without_a_token_runs_the_app_serves_nothing_and_stops_on_sigterm() {
    let (_tmp, root) = root_with_app("echo started\necho $$ > app.pid\nexec sleep 1000\n");
    let mut cmd = Command::new(bin("lks-agent"));
    cmd.args(supervise_args(
        &root,
        &["--wait-for-sync", "30"],
        &["sh", "app.sh"],
    ))
    .env_remove("LKS_TOKEN")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let out = lines(child.stdout.take().unwrap());
    let err = lines(child.stderr.take().unwrap());
    // At once (no lks can connect: nothing to wait for), and nothing listens.
    let first = out.recv_timeout(SOON).expect("the app's output");
    assert_eq!(first, "started");
    let app = pid_in(&root, "app.pid", None);
    let log: Vec<String> = err.try_iter().collect();
    assert!(
        log.iter()
            .any(|l| l.contains("not serving lks, only supervising")),
        "{log:?}"
    );
    let status = terminate(&mut child, "lks-agent supervise", Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    assert!(!process_alive(app), "the app outlived the agent");
}

// ---------------------------------------------------------------------------
// Crashes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_exits_at_once_is_restarted_with_growing_delays_not_in_a_tight_loop() {
    let (_tmp, root) = root_with_app("echo $$ >> starts.log\nexit 3\n");
    let t0 = Instant::now();
    let agent = SupervisedAgent::spawn(supervise_app(&root, &[]));
    let mut events = Events::subscribe(&agent.url).await;

    // Crashes are reported with a growing delay until the 5th (3.2 s).
    let mut last: Option<AppExited> = None;
    loop {
        let x = events.app_exited(SOON).await;
        assert!(!x.requested);
        assert_eq!(x.exit_code, 3);
        if let Some(prev) = &last {
            assert_eq!(x.crashes_in_a_row, prev.crashes_in_a_row + 1, "{x:?}");
            assert_eq!(x.restart_in_ms, prev.restart_in_ms * 2, "{x:?}");
        }
        let done = x.restart_in_ms >= 3200;
        last = Some(x);
        if done {
            break;
        }
    }
    let last = last.unwrap();
    assert_eq!(last.crashes_in_a_row, 5);
    let starts = |root: &Path| {
        std::fs::read_to_string(root.join("starts.log"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    // 0 + 0.2 + 0.4 + 0.8 + 1.6 s: five starts took at least 3 s.
    assert!(t0.elapsed() >= Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(starts(&root) <= 6, "{} starts: a tight loop", starts(&root));

    // Now it waits 3.2 s; a batch's restart starts it at once and forgets the
    // crashes.
    let r = commit(&agent.url, "fix", vec![], true).await;
    assert!(r.restarted, "not restarted: {r:?}");
    let started = events.app_started().await;
    let x = events.app_exited(SOON).await;
    assert_eq!(x.pid, started.pid);
    assert_eq!(
        x.crashes_in_a_row, 1,
        "the crash count was not reset: {x:?}"
    );
    assert_eq!(x.restart_in_ms, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_cannot_be_started_is_reported_and_the_agent_keeps_serving() {
    let (_tmp, root) = root_with_app("");
    let agent = SupervisedAgent::start(&root, TOKEN, &[], &["lks-e2e-no-such-app"]);
    let mut c = client(&agent.url).await;
    let hello = c
        .hello(authorized(HelloRequest {
            protocol_version: lks_proto::PROTOCOL_VERSION,
            client_version: "supervise-test".into(),
        }))
        .await
        .expect("Hello")
        .into_inner();
    assert!(hello.capabilities.iter().any(|c| c == "supervise"));
    let r = commit(&agent.url, "try", vec![], true).await;
    assert!(!r.restarted);
    assert!(
        r.restart_skipped.contains("could not be started")
            && r.restart_skipped.contains("lks-e2e-no-such-app")
            && r.restart_skipped.contains("not found"),
        "{:?}",
        r.restart_skipped
    );
}

// ---------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_run_in_order_in_the_root_with_the_apps_env_and_their_output_is_reported() {
    let (_tmp, root) = root_with_app("echo $$ > app.pid\nexec sleep 1000\n");
    std::fs::create_dir(root.join("sub")).unwrap();
    let agent = SupervisedAgent::spawn(supervise_app(&root, &[]));
    let old = pid_in(&root, "app.pid", None);
    let mut events = Events::subscribe(&agent.url).await;

    let first = Step {
        argv: [
            "sh",
            "-c",
            "echo \"in $(pwd) app=$LKS_E2E_APP_VAR own=$STEP_VAR\"; echo oops >&2; echo 0 >> order.txt",
        ]
        .map(String::from)
        .to_vec(),
        workdir: "sub".into(),
        env: HashMap::from([("STEP_VAR".into(), "step-value".into())]),
    };
    let second = step(&["sh", "-c", "echo second; echo 1 >> sub/order.txt"]);
    let r = commit(&agent.url, "build-7", vec![first, second], true).await;

    assert_eq!(r.steps.len(), 2, "{r:?}");
    for (i, s) in r.steps.iter().enumerate() {
        assert_eq!(s.index, i as u32);
        assert!(s.success && s.exit_code == 0 && s.error.is_empty(), "{s:?}");
    }
    let expected = format!(
        "in {} app=from-the-agent own=step-value",
        root.join("sub").display()
    );
    assert!(
        r.steps[0].output_tail.contains(&expected),
        "{:?}",
        r.steps[0]
    );
    assert!(r.steps[0].output_tail.contains("oops"), "{:?}", r.steps[0]);
    assert_eq!(r.steps[1].output_tail, "second");
    assert_eq!(
        std::fs::read_to_string(root.join("sub/order.txt")).unwrap(),
        "0\n1\n"
    );
    assert!(r.restarted, "{r:?}");
    assert_ne!(pid_in(&root, "app.pid", Some(old)), old);

    // Events: each step starts, writes, finishes, in order; then the restart.
    events.app_started().await;
    let mut trail = Vec::new();
    for e in &events.seen {
        match &e.kind {
            Some(event::Kind::StepStarted(s)) => {
                assert_eq!(s.batch_id, "build-7");
                trail.push(format!("started {}", s.index));
            }
            Some(event::Kind::StepFinished(f)) => {
                assert_eq!(f.batch_id, "build-7");
                let res = f.result.as_ref().unwrap();
                assert!(res.success);
                trail.push(format!("finished {}", res.index));
            }
            Some(event::Kind::Output(o)) if o.source == OutputSource::Step as i32 => {
                assert_eq!(o.batch_id, "build-7");
                let stream = if o.stream == OutputStream::Stderr as i32 {
                    "err"
                } else {
                    "out"
                };
                trail.push(format!("{} {stream} {}", o.step_index, o.line));
            }
            Some(event::Kind::AppExited(_)) => trail.push("app exited".into()),
            Some(event::Kind::AppStarted(_)) => trail.push("app started".into()),
            _ => {}
        }
    }
    let pos = |needle: &str| {
        trail
            .iter()
            .position(|t| t == needle)
            .unwrap_or_else(|| panic!("no {needle:?} in {trail:#?}"))
    };
    assert!(pos("started 0") < pos(&format!("0 out {expected}")));
    assert!(pos("0 err oops") < pos("finished 0"));
    assert!(pos("finished 0") < pos("started 1"));
    assert!(pos("started 1") < pos("1 out second"));
    assert!(pos("1 out second") < pos("finished 1"));
    assert!(pos("finished 1") < pos("app exited"));
    assert!(pos("app exited") < pos("app started"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_stops_the_later_steps_and_the_restart_and_the_old_app_keeps_running() {
    let (_tmp, root) = root_with_app("echo $$ > app.pid\nexec sleep 1000\n");
    let agent = SupervisedAgent::spawn(supervise_app(&root, &[]));
    let old = pid_in(&root, "app.pid", None);

    let r = commit(
        &agent.url,
        "broken",
        vec![
            step(&["true"]),
            step(&["sh", "-c", "echo about to fail; exit 3"]),
            step(&["touch", "never"]),
        ],
        true,
    )
    .await;
    assert_eq!(r.steps.len(), 2, "the third step ran: {r:?}");
    assert!(r.steps[0].success);
    let failed = &r.steps[1];
    assert!(!failed.success);
    assert_eq!(failed.exit_code, 3);
    assert_eq!(failed.error, "");
    assert_eq!(failed.output_tail, "about to fail");
    assert!(!root.join("never").exists());
    assert!(!r.restarted);
    assert_eq!(
        r.restart_skipped,
        "step 2 (`sh -c echo about to fail; exit 3`) failed with exit code 3"
    );
    assert!(process_alive(old), "the old app is gone");
    assert_eq!(pid_in(&root, "app.pid", None), old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_does_not_exist_is_reported_with_a_clear_error_and_the_agent_keeps_serving() {
    let (_tmp, root) = root_with_app("echo $$ > app.pid\nexec sleep 1000\n");
    let agent = SupervisedAgent::spawn(supervise_app(&root, &[]));
    let old = pid_in(&root, "app.pid", None);

    let r = commit(
        &agent.url,
        "typo",
        vec![step(&["lks-e2e-no-such-command", "--flag"])],
        true,
    )
    .await;
    assert_eq!(r.steps.len(), 1);
    let s = &r.steps[0];
    assert!(!s.success);
    assert_eq!(s.exit_code, -1);
    assert!(
        s.error
            .contains("`lks-e2e-no-such-command` was not found on PATH"),
        "{:?}",
        s.error
    );
    assert!(
        r.restart_skipped
            .starts_with("step 1 (`lks-e2e-no-such-command --flag`) could not start: "),
        "{:?}",
        r.restart_skipped
    );
    assert!(process_alive(old));

    // A workdir outside the root and an empty argv are refused, not run.
    let outside = Step {
        argv: vec!["touch".into(), "escaped".into()],
        workdir: "../".into(),
        ..Default::default()
    };
    let r = commit(&agent.url, "bad-workdir", vec![outside], false).await;
    assert!(
        r.steps[0].error.contains("refused workdir"),
        "{:?}",
        r.steps[0]
    );
    assert_eq!(r.restart_skipped, "", "no restart was asked");
    assert!(!root.parent().unwrap().join("escaped").exists());
    let r = commit(&agent.url, "no-argv", vec![step(&[])], false).await;
    assert!(r.steps[0].error.contains("no command"), "{:?}", r.steps[0]);

    // Still serving: a good batch restarts the app.
    let r = commit(&agent.url, "fixed", vec![step(&["true"])], true).await;
    assert!(r.steps[0].success && r.restarted, "{r:?}");
    assert!(!process_alive(old));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_arrives_during_steps_waits_for_them_and_the_restart() {
    let (_tmp, root) = root_with_app("echo $$ > app.pid\nexec sleep 1000\n");
    let agent = SupervisedAgent::spawn(supervise_app(&root, &[]));
    pid_in(&root, "app.pid", None);
    let mut events = Events::subscribe(&agent.url).await;

    let url = agent.url.clone();
    let slow = tokio::spawn(async move {
        commit(&url, "slow", vec![step(&["sh", "-c", "sleep 1"])], true).await
    });
    events
        .wait_for(SOON, "StepStarted of the slow batch", |e| match &e.kind {
            Some(event::Kind::StepStarted(s)) if s.batch_id == "slow" => Some(()),
            _ => None,
        })
        .await;
    let next = commit(&agent.url, "next", vec![], false).await;
    assert!(next.steps.is_empty() && !next.restarted);
    assert!(slow.await.unwrap().restarted);
    events
        .wait_for(SOON, "BatchApplied of the next batch", |e| match &e.kind {
            Some(event::Kind::BatchApplied(b)) if b.batch_id == "next" => Some(()),
            _ => None,
        })
        .await;
    let order: Vec<&str> = events
        .seen
        .iter()
        .filter_map(|e| match &e.kind {
            Some(event::Kind::StepFinished(_)) => Some("step finished"),
            Some(event::Kind::AppStarted(_)) => Some("app started"),
            Some(event::Kind::BatchApplied(b)) if b.batch_id == "next" => Some("next applied"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["step finished", "app started", "next applied"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_serve_steps_run_and_a_restart_is_skipped_because_no_app_is_supervised() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let agent = Agent::start(&root, TOKEN);
    let r = commit(
        &agent.url,
        "plain",
        vec![step(&["sh", "-c", "echo built"])],
        true,
    )
    .await;
    assert_eq!(r.steps.len(), 1);
    assert!(r.steps[0].success, "{r:?}");
    assert_eq!(r.steps[0].output_tail, "built");
    assert!(!r.restarted);
    assert_eq!(r.restart_skipped, "no app is supervised (lks-agent serve)");
}

// ---------------------------------------------------------------------------
// Output and environment
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_output_passes_through_the_agent_unprefixed_and_arrives_as_events() {
    let (_tmp, root) = root_with_app(
        "echo $$ > app.pid\nwhile :; do echo 'tick out'; echo 'tick err' >&2; sleep 0.2; done\n",
    );
    let agent = SupervisedAgent::spawn(supervise_app(&root, &[]));
    let mut events = Events::subscribe(&agent.url).await;
    for (stream, name) in [(OutputStream::Stdout, "out"), (OutputStream::Stderr, "err")] {
        events
            .wait_for(SOON, &format!("the app's {name} line"), |e| match &e.kind {
                Some(event::Kind::Output(o))
                    if o.source == OutputSource::App as i32
                        && o.stream == stream as i32
                        && o.line == format!("tick {name}") =>
                {
                    Some(())
                }
                _ => None,
            })
            .await;
    }
    let out = agent.stdout.recv_timeout(SOON).expect("a stdout line");
    assert_eq!(out, "tick out");
    let deadline = Instant::now() + SOON;
    let mut err_lines = Vec::new();
    while !err_lines.iter().any(|l: &String| l == "tick err") {
        let left = deadline.saturating_duration_since(Instant::now());
        err_lines.push(agent.stderr.recv_timeout(left).unwrap_or_else(|_| {
            panic!("no `tick err` line on the agent's stderr: {err_lines:#?}")
        }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_not_visible_in_the_apps_or_the_steps_environment() {
    let (_tmp, root) = root_with_app("env > app.env\necho $$ > app.pid\nexec sleep 1000\n");
    let agent = SupervisedAgent::spawn(supervise_app(&root, &[]));
    pid_in(&root, "app.pid", None);
    let r = commit(
        &agent.url,
        "env",
        vec![step(&["sh", "-c", "env > step.env"])],
        false,
    )
    .await;
    assert!(r.steps[0].success, "{r:?}");
    for file in ["app.env", "step.env"] {
        let env = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(
            env.contains("LKS_E2E_APP_VAR=from-the-agent"),
            "{file} lacks the agent's environment:\n{env}"
        );
        assert!(!env.contains(TOKEN), "{file} shows the token:\n{env}");
        assert!(!env.contains("LKS_TOKEN"), "{file} has LKS_TOKEN:\n{env}");
    }
}

// ---------------------------------------------------------------------------
// PID 1
// ---------------------------------------------------------------------------

/// Whether `unshare --pid --fork` works here (it needs root or user namespaces).
fn pid_namespaces_work() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_pid_1_the_agent_reaps_the_orphans_the_app_leaves() {
    if !pid_namespaces_work() {
        eprintln!("skipped: `unshare --pid --fork` does not work on this machine");
        return;
    }
    // Five orphans that live 2 s: their parent shell exits at once, so they are
    // handed to PID 1, the agent. Unreaped, they would stay zombies.
    let (_tmp, root) = root_with_app(
        "for i in 1 2 3 4 5; do sh -c 'sleep 2 &'; done\necho $$ > app.pid\nexec sleep 1000\n",
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child"])
        .arg(bin("lks-agent"))
        .args(supervise_args(&root, &[], &["sh", "app.sh"]))
        .env("LKS_TOKEN", TOKEN);
    let mut agent = SupervisedAgent::spawn(cmd);
    let unshare = agent.pid();
    let mut pid1 = None;
    assert!(wait_until(SOON, || {
        pid1 = all_processes()
            .into_iter()
            .find(|p| p.ppid == unshare)
            .map(|p| p.pid);
        pid1.is_some()
    }));
    let pid1 = pid1.unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid1}/status")).unwrap();
    let nspid = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .unwrap_or_default();
    assert!(nspid.trim_end().ends_with("\t1"), "not PID 1: {nspid:?}");

    let orphans = || {
        all_processes()
            .into_iter()
            // Not the app itself, which leads its group.
            .filter(|p| p.ppid == pid1 && p.comm == "sleep" && p.pgrp != p.pid)
            .collect::<Vec<_>>()
    };
    // The orphans were adopted by the agent...
    assert!(
        wait_until(SOON, || orphans().len() >= 5),
        "orphans not adopted by PID 1: {:#?}",
        all_processes()
            .into_iter()
            .filter(|p| p.ppid == pid1)
            .collect::<Vec<_>>()
    );
    // ...and once they exit, reaped: no zombie child is left.
    let zombies = || {
        all_processes()
            .into_iter()
            .filter(|p| p.ppid == pid1 && p.state == 'Z')
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(SOON, || orphans().is_empty() && zombies().is_empty()),
        "left: {:#?} zombies: {:#?}",
        orphans(),
        zombies()
    );
    // Still reaping after a few seconds (not a one-off).
    std::thread::sleep(Duration::from_millis(500));
    assert!(zombies().is_empty(), "{:#?}", zombies());

    // SIGTERM to PID 1 (a handler is installed, so the kernel delivers it).
    let pid = rustix::process::Pid::from_raw(pid1 as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = agent.wait(Duration::from_secs(30)).expect("agent exited");
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_app_runs_in_the_root_unless_workdir_says_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let elsewhere = tmp.path().join("workdir");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let app = ["sh", "-c", "pwd > where.txt; exec sleep 60"];
    {
        let mut agent = SupervisedAgent::start(&root, TOKEN, &[], &app);
        assert!(wait_until(Duration::from_secs(10), || root
            .join("where.txt")
            .exists()));
        agent.terminate(Duration::from_secs(10));
    }
    let pwd = std::fs::read_to_string(root.join("where.txt")).unwrap();
    assert_eq!(pwd.trim(), root.canonicalize().unwrap().to_str().unwrap());
    let mut agent = SupervisedAgent::start(
        &root,
        TOKEN,
        &["--workdir", elsewhere.to_str().unwrap()],
        &app,
    );
    assert!(wait_until(Duration::from_secs(10), || elsewhere
        .join("where.txt")
        .exists()));
    agent.terminate(Duration::from_secs(10));
    let pwd = std::fs::read_to_string(elsewhere.join("where.txt")).unwrap();
    assert_eq!(pwd.trim(), elsewhere.to_str().unwrap());
}
