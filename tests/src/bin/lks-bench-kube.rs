//! `lks-bench-kube`: `lks up --runtime kube` in a real cluster against what
//! Tilt and Skaffold do there (`kubectl exec -i POD -- tar -x` per change)
//! and against plain `kubectl`, with the real `lks`, the static `lks-agent`
//! (the agent image the pods' init containers install from) and the
//! cluster of `LKS_TEST_KUBECONFIG`.
//!
//! 1. one file edited N times under `lks up` (a small service `files` of its
//!    own: a Python static file server with `restart: never`, so nothing but
//!    the sync is timed): from the write until lks prints the batch's
//!    `files | synced ...` line (the agent in the pod acknowledged the file
//!    renamed into place), checked each time by fetching the file from the pod
//!    through lks's forwarded port; then N more edits timed from the write
//!    until the pod serves the new content (polled every 2 ms through the
//!    forwarded port). Baseline: per edit, one
//!    `kubectl exec -i POD -c files -- tar -xf - -C DIR` of that file (its
//!    archive made beforehand), spawn to exit; the floors
//!    `kubectl exec POD -- true` and one GET through lks's forwarded port vs
//!    through `kubectl port-forward`;
//! 2. the Node.js example (`web`) under `lks up --runtime kube web api`: edit
//!    the greeting in `web/server.js` until `GET /` through the forwarded port
//!    answers the new one (polled every 2 ms, hedged after 100 ms without an
//!    answer; the restart of `node` is part of it);
//! 3. `lks up --runtime kube web api` from the spawn until both `[ready]`
//!    lines: cold (a fresh namespace; images never built: each Dockerfile of
//!    the copy gets `ENV LKS_BENCH_COLD=<random>` after its `FROM`, so every
//!    layer above the base image is built, pushed and pulled again) and warm
//!    (the same again: images built and pushed, namespace emptied by the last
//!    run); baseline `kubectl apply` + `kubectl rollout status` of the same
//!    manifests with the same images, without the agent.
//!
//! A wrong sync or a failing tool ends the run with exit code 1; a slow
//! figure is only reported (MISS). Everything it makes goes at the end, on an
//! error, a panic, or SIGINT/SIGTERM/SIGHUP: the `lks up` runs (SIGTERM: they
//! delete what they applied), the namespaces (`lks-bench-kube-PID-RUN-*`;
//! ones an earlier, killed run left are deleted at the start), the
//! `kubectl port-forward`, the `dev-` image tags it built (and earlier cold
//! builds no tag names any more), the temporary directory. The namespaces
//! are deleted without waiting: they go within a minute after the exit.
//! Traffic goes to 127.0.0.1 and the cluster only. The registry keeps what
//! was pushed, and `web:latest` and `api:latest` end up as the last cold
//! build (the same apps plus one `ENV`).
//!
//! ```text
//! cargo build --workspace --bins
//! RUSTFLAGS="-C target-feature=+crt-static" cargo build -p lks-agent --target x86_64-unknown-linux-gnu
//! cargo run -p lks-e2e --bin lks-bench-kube -- --smoke      # ~65 s here
//! ./target/debug/lks-bench-kube                             # ~3.5 min here
//! LKS_TEST_KUBECONFIG=/path/to/kubeconfig ./target/release/lks-bench-kube
//! ```
//!
//! Needs: a cluster lks may change (`LKS_TEST_KUBECONFIG`, else
//! `/tmp/lks-k8s/kubeconfig`, the one `tests/run.sh` starts), whose node
//! pulls from lks's registry as `localhost:5000` (`lks up` starts the
//! registry), `kubectl` and a running dockerd with `lks/debian:bookworm`
//! (`images/base/build.sh`).

use anyhow::{Context, bail};
use lks_e2e::bench::{
    Args, Row, cpus, fmt_ms, median, ms, percentile, profile, spread, timed_with_input,
};
use lks_e2e::kube::{examples_on_free_ports, set_greeting};
use lks_e2e::{Rng, bin, free_port, http11_get, process_alive, stop_child, unique, wait_until};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// The default cluster when `LKS_TEST_KUBECONFIG` is not set (what
/// `tests/run.sh` starts with `../shared/k8s/up.sh`).
const DEFAULT_KUBECONFIG: &str = "/tmp/lks-k8s/kubeconfig";
/// Every namespace this program makes is `PREFIX<pid>-<run>-<what>`.
const NS_PREFIX: &str = "lks-bench-kube-";
/// Long enough for a cold build and pull on a loaded 2-core machine.
const START: Duration = Duration::from_secs(300);
/// The file edited in measurement 1, and its size.
const EDITED: &str = "edit.txt";
const EDITED_SIZE: usize = 4096;
/// Where the baseline's tar writes in the `files` container.
const TAR_DIR: &str = "/tmp/lks-bench-tar";

const USAGE: &str = "\
usage: lks-bench-kube [--smoke] [--edits N] [--up-edits N] [--cold N] [--warm N]

  --smoke        a quick run (5 edits, 3 Node edits, 1 cold and 1 warm start)
  --edits N      single-file edits, for lks (twice: acked, served) and for kubectl exec tar (default 50)
  --up-edits N   edits of web/server.js under lks up (default 20)
  --cold N       cold starts of lks up web api, each with new images and a fresh namespace (default 2)
  --warm N       warm starts, and as many kubectl apply + rollout baselines (default 3)

The cluster: LKS_TEST_KUBECONFIG, else /tmp/lks-k8s/kubeconfig (tests/run.sh starts it).
Build the binaries and the static agent first:
  cargo build --workspace --bins
  RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build -p lks-agent --target x86_64-unknown-linux-gnu";

/// What to measure, and how much.
#[derive(Clone, Debug)]
struct Config {
    smoke: bool,
    edits: usize,
    up_edits: usize,
    cold: usize,
    warm: usize,
}

impl Config {
    fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Config> {
        let args = Args::parse(args, &["--edits", "--up-edits", "--cold", "--warm"], USAGE)?;
        let c = if args.smoke {
            Config {
                smoke: true,
                edits: 5,
                up_edits: 3,
                cold: 1,
                warm: 1,
            }
        } else {
            Config {
                smoke: false,
                edits: 50,
                up_edits: 20,
                cold: 2,
                warm: 3,
            }
        };
        Ok(Config {
            edits: args.number("--edits", c.edits as u64) as usize,
            up_edits: args.number("--up-edits", c.up_edits as u64) as usize,
            cold: args.number("--cold", c.cold as u64) as usize,
            warm: args.number("--warm", c.warm as u64) as usize,
            ..c
        })
    }
}

// ---------------------------------------------------------------------------
// Clean-up: lks up runs, port-forwards, namespaces, images, on drop and on a
// signal
// ---------------------------------------------------------------------------

/// What must go when the program ends, whichever way. Whatever starts
/// something holds the lock while it does, and the signal handler holds it
/// from the signal to the exit: nothing starts behind its back.
struct Cleanup {
    /// `lks up` processes.
    ups: Vec<u32>,
    /// `kubectl port-forward` processes.
    forwards: Vec<u32>,
    namespaces: Vec<String>,
    /// `dev-` image tags this run built (local tags; the registry keeps its
    /// copy).
    images: Vec<String>,
    dirs: Vec<PathBuf>,
}

static CLEANUP: Mutex<Cleanup> = Mutex::new(Cleanup {
    ups: Vec::new(),
    forwards: Vec::new(),
    namespaces: Vec::new(),
    images: Vec::new(),
    dirs: Vec::new(),
});

fn cleanup_list() -> std::sync::MutexGuard<'static, Cleanup> {
    CLEANUP.lock().unwrap_or_else(|e| e.into_inner())
}

/// This run's id, in its namespaces' names (with the pid).
fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(unique)
}

/// SIGTERM to `pid`, then up to `grace` for it to exit.
fn terminate_pid(pid: u32, grace: Duration) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
    }
    let _ = wait_until(grace, || !process_alive(pid));
}

/// On SIGINT, SIGTERM or SIGHUP: stops the `lks up` runs (they delete what
/// they applied) and the port-forwards, deletes the namespaces and image
/// tags, and exits with 130 (Drop guards do not run on a signal).
fn clean_up_on_signals() -> anyhow::Result<()> {
    lks_e2e::bench::on_signals("lks-bench-kube", || {
        let c = cleanup_list();
        for pid in &c.forwards {
            terminate_pid(*pid, Duration::from_secs(5));
        }
        for pid in &c.ups {
            terminate_pid(*pid, Duration::from_secs(30));
        }
        for ns in &c.namespaces {
            delete_namespace(ns);
        }
        remove_images(&c.images);
        for dir in &c.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        // Held until the exit: nothing starts behind the clean-up's back.
        std::mem::forget(c);
    })
}

/// Untags `refs`, then removes the images they named that no tag names any
/// more (a cold build whose `latest` moved on to the next one).
fn remove_images(refs: &[String]) {
    let id_of = |r: &str| {
        let out = Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", r])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let ids: Vec<String> = refs.iter().filter_map(|r| id_of(r)).collect();
    for r in refs {
        let _ = quiet(Command::new("docker").args(["rmi", r]));
    }
    for id in ids {
        let tags = Command::new("docker")
            .args(["image", "inspect", "--format", "{{len .RepoTags}}", &id])
            .stderr(Stdio::null())
            .output();
        if tags
            .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
        {
            let _ = quiet(Command::new("docker").args(["rmi", &id]));
        }
    }
}

/// Removes the untagged images of earlier cold builds (`ENV LKS_BENCH_COLD`):
/// a run leaves its last one as `latest`, untagged when the next run builds
/// anew.
fn remove_stale_images() {
    let Ok(out) = Command::new("docker")
        .args(["images", "-q", "--no-trunc", "--filter", "dangling=true"])
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let env = Command::new("docker")
            .args(["image", "inspect", "--format", "{{json .Config.Env}}", id])
            .stderr(Stdio::null())
            .output();
        if env.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("LKS_BENCH_COLD=")) {
            let _ = quiet(Command::new("docker").args(["rmi", id]));
        }
    }
}

fn quiet(cmd: &mut Command) -> std::io::Result<std::process::ExitStatus> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

// ---------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------

/// The kubeconfig every `kubectl` and `lks up` of this run uses.
static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();

/// `LKS_TEST_KUBECONFIG`, else [`DEFAULT_KUBECONFIG`] when it exists.
fn find_kubeconfig() -> anyhow::Result<PathBuf> {
    match std::env::var_os("LKS_TEST_KUBECONFIG") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                bail!("LKS_TEST_KUBECONFIG={} is not a file", p.display());
            }
            Ok(p)
        }
        _ if Path::new(DEFAULT_KUBECONFIG).is_file() => Ok(PathBuf::from(DEFAULT_KUBECONFIG)),
        _ => bail!(
            "no Kubernetes cluster: LKS_TEST_KUBECONFIG is not set and {DEFAULT_KUBECONFIG} does not exist. \
             Set LKS_TEST_KUBECONFIG=/path/to/kubeconfig (cluster-admin on a cluster lks may change: \
             kind, k3d, minikube, a server on this machine), or start the test cluster \
             (tests/run.sh starts ../shared/k8s/up.sh, which writes {DEFAULT_KUBECONFIG})"
        ),
    }
}

fn kubectl_command<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.args(args).env(
        "KUBECONFIG",
        KUBECONFIG.get().expect("the kubeconfig is set"),
    );
    cmd
}

/// The stdout of a successful `kubectl ARGS`.
fn kubectl<S: AsRef<OsStr>>(args: &[S]) -> anyhow::Result<String> {
    let out = kubectl_command(args)
        .stdin(Stdio::null())
        .output()
        .context("run kubectl (is it on PATH?)")?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed ({}): {}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes `ns` and what it holds, without waiting.
fn delete_namespace(ns: &str) {
    let _ = quiet(&mut kubectl_command(&[
        "delete",
        "namespace",
        ns,
        "--ignore-not-found",
        "--wait=false",
    ]));
}

/// A namespace of this run (`lks up --namespace` creates it); deleted, with
/// what it holds, when dropped.
struct Namespace {
    name: String,
}

impl Namespace {
    fn new(what: &str) -> Namespace {
        let name = format!("{NS_PREFIX}{}-{}-{what}", std::process::id(), run_id());
        cleanup_list().namespaces.push(name.clone());
        Namespace { name }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        delete_namespace(&self.name);
        cleanup_list().namespaces.retain(|n| n != &self.name);
    }
}

/// Deletes the namespaces an earlier, killed run of this program left (their
/// name names a pid that is gone).
fn remove_stale_namespaces() -> anyhow::Result<()> {
    let names = kubectl(&[
        "get",
        "namespaces",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.phase}{\"\\n\"}{end}",
    ])?;
    for line in names.lines() {
        let Some((name, phase)) = line.trim().split_once(' ') else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        if phase == "Terminating" {
            continue; // already going
        }
        let mut parts = rest.splitn(3, '-');
        let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
        let run = parts.next().unwrap_or_default();
        let ours = pid == Some(std::process::id()) && run == run_id();
        let alive = pid.is_some_and(|p| p != std::process::id() && process_alive(p));
        if !ours && !alive {
            println!("  deleting the namespace {name}, left by an earlier run");
            delete_namespace(name);
        }
    }
    Ok(())
}

/// The one pod of `selector` in `ns` that is not being deleted.
fn the_pod(ns: &str, selector: &str) -> anyhow::Result<String> {
    let out = kubectl(&[
        "get",
        "pods",
        "-n",
        ns,
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ])?;
    let pods: Vec<&str> = out
        .lines()
        .filter(|l| l.split_whitespace().count() == 1)
        .map(str::trim)
        .collect();
    match pods.as_slice() {
        [one] => Ok(one.to_string()),
        other => bail!("expected one pod of {selector} in {ns}, found {other:?}"),
    }
}

/// Waits until `ns` has no pods left (those of a stopped run terminate).
fn wait_no_pods(ns: &str, timeout: Duration) -> anyhow::Result<()> {
    let ok = wait_until(timeout, || {
        kubectl(&["get", "pods", "-n", ns, "-o", "name"]).is_ok_and(|o| o.trim().is_empty())
    });
    if !ok {
        bail!("the pods in {ns} did not go within {timeout:?}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// lks up
// ---------------------------------------------------------------------------

/// A running `lks up`, its stdout lines timestamped as they arrive; stopped
/// (SIGTERM: it deletes what it applied) on drop.
struct UpRun {
    child: Child,
    spawned: Instant,
    out: mpsc::Receiver<(Instant, String)>,
    err: mpsc::Receiver<String>,
    seen: Vec<(Instant, String)>,
}

impl UpRun {
    fn start(ws: &Path, args: &[&str]) -> anyhow::Result<UpRun> {
        let mut cmd = lks_e2e::up_command(ws, args);
        cmd.env(
            "KUBECONFIG",
            KUBECONFIG.get().expect("the kubeconfig is set"),
        )
        .stdin(Stdio::null());
        let mut cleanup = cleanup_list();
        let spawned = Instant::now();
        let mut child = cmd.spawn().context("spawn lks up")?;
        cleanup.ups.push(child.id());
        drop(cleanup);
        let out = lks_e2e::timed_lines(child.stdout.take().context("lks up's stdout")?);
        let err = lks_e2e::lines(child.stderr.take().context("lks up's stderr")?);
        Ok(UpRun {
            child,
            spawned,
            out,
            err,
            seen: Vec::new(),
        })
    }

    /// Waits for a line, arrived at or after `since`, that `pred` accepts;
    /// returns when it arrived and the line.
    fn wait_for(
        &mut self,
        what: &str,
        since: Instant,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> anyhow::Result<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok((at, line)) => {
                    self.seen.push((at, line.clone()));
                    if at >= since && pred(&line) {
                        return Ok((at, line));
                    }
                }
                Err(e) => {
                    let why = match e {
                        mpsc::RecvTimeoutError::Timeout => format!("within {timeout:?}"),
                        mpsc::RecvTimeoutError::Disconnected => {
                            format!("before it exited ({:?})", self.child.try_wait())
                        }
                    };
                    bail!("lks up printed no {what} {why}\n{}", self.transcript());
                }
            }
        }
    }

    /// The lines that arrived since the last call.
    fn take(&mut self) -> Vec<(Instant, String)> {
        let v: Vec<(Instant, String)> = self.out.try_iter().collect();
        self.seen.extend(v.iter().cloned());
        v
    }

    /// The last lines of its stdout and its stderr, for an error.
    fn transcript(&mut self) -> String {
        self.take();
        let err: Vec<String> = self.err.try_iter().collect();
        let from = self.seen.len().saturating_sub(60);
        let out: Vec<&str> = self.seen[from..].iter().map(|(_, l)| l.as_str()).collect();
        format!(
            "stdout (last {} lines):\n{}\nstderr:\n{}",
            out.len(),
            out.join("\n"),
            err.join("\n")
        )
    }

    /// The field after `label` up to the next comma in the last line of
    /// `service` that has it (`, image ` in `agent at pods ...`).
    fn field(&self, service: &str, label: &str) -> Option<String> {
        let prefix = format!("{service} |");
        self.seen
            .iter()
            .rev()
            .filter(|(_, l)| l.starts_with(&prefix))
            .find_map(|(_, l)| {
                let rest = l.split(label).nth(1)?;
                Some(rest.split([',', ')']).next()?.trim().to_string())
            })
    }

    /// SIGTERM; fails unless it exits successfully within 60 s.
    fn stop(mut self) -> anyhow::Result<()> {
        if let Some(p) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
        // Waited for as our child (its /proc entry turns into a zombie's
        // before the exit is complete).
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => bail!(
                    "lks up did not exit within 60 s of SIGTERM ({other:?})\n{}",
                    self.transcript()
                ),
            }
        };
        if !status.success() {
            bail!(
                "lks up exited with {status} on SIGTERM\n{}",
                self.transcript()
            );
        }
        Ok(())
    }
}

impl Drop for UpRun {
    fn drop(&mut self) {
        let pid = self.child.id();
        stop_child(&mut self.child, Duration::from_secs(60));
        cleanup_list().ups.retain(|p| *p != pid);
    }
}

/// Whether `line` is lks up's `SERVICE | [ready]`.
fn is_ready(line: &str, service: &str) -> bool {
    line.strip_prefix(service)
        .and_then(|r| r.strip_prefix(" |"))
        .is_some_and(|r| r.trim() == "[ready]")
}

/// Whether `line` is lks up's `SERVICE | synced ...` for a live update.
fn is_synced(line: &str, service: &str) -> bool {
    line.strip_prefix(service)
        .and_then(|r| r.strip_prefix(" | "))
        .is_some_and(|r| r.starts_with("synced "))
}

/// The `X ms` at the end of a `SERVICE | synced ... in X ms` line.
fn trailing_ms(line: &str) -> Option<f64> {
    let rest = line.trim().strip_suffix(" ms")?;
    rest.rsplit([' ', ','])
        .next()
        .and_then(|n| n.parse::<f64>().ok())
}

// ---------------------------------------------------------------------------
// 1. Single-file edits: the `files` service
// ---------------------------------------------------------------------------

/// A static file server that does not log each request (lks would carry
/// every line out of the pod).
const SERVE_PY: &str = r#"import http.server, sys

class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

print("files listening on", sys.argv[1], flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Quiet).serve_forever()
"#;

/// The `files` service (`PORT` and `EDITED` replaced): its service file,
/// Dockerfile and manifest.
const FILES_SERVICE: &str = r#"name: files
command: python3 serve.py PORT
ports: [PORT]
readiness:
  http: http://127.0.0.1:PORT/EDITED
k8s: [k8s/*.yaml]
live_update:
  sync:
    - { local: ., remote: . }
  restart: never
"#;

const FILES_DOCKERFILE: &str = r#"ARG BASE=lks/debian:bookworm
FROM ${BASE}
WORKDIR /app
COPY . .
CMD ["python3", "serve.py", "PORT"]
"#;

const FILES_MANIFEST: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: files
spec:
  replicas: 1
  selector:
    matchLabels: {app: files}
  template:
    metadata:
      labels: {app: files}
      annotations:
        lks.dev/agent: "true"
        lks.dev/root: /app
    spec:
      containers:
        - name: files
          image: files
          command: [python3, serve.py, "PORT"]
          ports:
            - containerPort: PORT
"#;

/// A workspace with one service, `files`: `serve.py` on `port` serving its
/// root (`/app`), synced without restarts; `EDITED` holds `first`.
fn files_workspace(ws: &Path, port: u16, first: &str) -> anyhow::Result<()> {
    let dir = ws.join("files");
    std::fs::create_dir_all(dir.join("k8s"))?;
    let fill = |t: &str| {
        t.replace("PORT", &port.to_string())
            .replace("EDITED", EDITED)
    };
    std::fs::write(
        ws.join("lks.yaml"),
        "services: [\"files/lks.service.yaml\"]\n",
    )?;
    std::fs::write(dir.join("lks.service.yaml"), fill(FILES_SERVICE))?;
    std::fs::write(dir.join("Dockerfile"), fill(FILES_DOCKERFILE))?;
    std::fs::write(dir.join("k8s/files.yaml"), fill(FILES_MANIFEST))?;
    std::fs::write(dir.join("serve.py"), SERVE_PY)?;
    std::fs::write(dir.join(EDITED), first)?;
    Ok(())
}

/// `EDITED_SIZE` bytes of text: `edit N`, then lines of random hex.
fn content(rng: &mut Rng, n: usize) -> String {
    let mut s = format!("edit {n}\n");
    while s.len() < EDITED_SIZE {
        for _ in 0..4 {
            s.push_str(&format!("{:016x}", rng.next_u64()));
        }
        s.push('\n');
    }
    s.truncate(EDITED_SIZE - 1);
    s.push('\n');
    s
}

/// A `kubectl port-forward` to `pod`'s `port` on a free local one; stopped
/// on drop.
struct KubectlForward {
    child: Child,
    port: u16,
    /// Read to the end (it prints a line per connection: a closed pipe would
    /// make it fail them).
    _out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
}

impl KubectlForward {
    fn start(ns: &str, pod: &str, port: u16) -> anyhow::Result<KubectlForward> {
        let local = free_port();
        let mut cleanup = cleanup_list();
        let mut child = kubectl_command(&[
            "port-forward",
            "-n",
            ns,
            &format!("pod/{pod}"),
            &format!("{local}:{port}"),
            "--address",
            "127.0.0.1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn kubectl port-forward")?;
        cleanup.forwards.push(child.id());
        drop(cleanup);
        let out = lks_e2e::lines(child.stdout.take().context("its stdout")?);
        let err = lks_e2e::lines(child.stderr.take().context("its stderr")?);
        let first = out.recv_timeout(Duration::from_secs(30));
        let f = KubectlForward {
            child,
            port: local,
            _out: out,
            err,
        };
        match first {
            Ok(l) if l.contains("Forwarding from") => Ok(f),
            other => bail!(
                "kubectl port-forward did not start: {other:?} {:?}",
                f.err.try_iter().collect::<Vec<_>>()
            ),
        }
    }
}

impl Drop for KubectlForward {
    fn drop(&mut self) {
        let pid = self.child.id();
        stop_child(&mut self.child, Duration::from_secs(5));
        cleanup_list().forwards.retain(|p| *p != pid);
    }
}

/// Wall times of `n` runs of `f`, which must succeed.
fn times(n: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Vec<f64>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        f()?;
        v.push(ms(t0.elapsed()));
    }
    Ok(v)
}

struct Edits {
    /// Write -> lks's `synced` line arrived (the agent's ack).
    acked: Vec<f64>,
    /// lks's own figure (first event -> ack).
    says: Vec<f64>,
    /// Write -> the pod serves it through the forwarded port (polled).
    served: Vec<f64>,
    tar: Vec<f64>,
    exec_true: Vec<f64>,
    kubectl_version: Vec<f64>,
    /// One GET through lks's forwarded port, and through kubectl port-forward.
    get_lks: Vec<f64>,
    get_kubectl: Vec<f64>,
}

fn measure_edits(cfg: &Config, base: &Path) -> anyhow::Result<Edits> {
    println!(
        "1. single-file edit -> applied in the pod: {EDITED} ({EDITED_SIZE} bytes of new text each time), \
         {} edits each way",
        cfg.edits
    );
    let ws = base.join("files-ws");
    let port = free_port();
    let mut rng = Rng::new(7);
    files_workspace(&ws, port, &content(&mut rng, 0))?;
    let file = ws.join("files").join(EDITED);
    let ns = Namespace::new("files");
    let mut up = UpRun::start(
        &ws,
        &["--runtime", "kube", "--namespace", &ns.name, "files"],
    )?;
    let t = up.spawned;
    up.wait_for("`files | [ready]`", t, START, |l| is_ready(l, "files"))?;
    let startup = t.elapsed();
    register_built(&up);
    let pod = the_pod(&ns.name, "app=files")?;
    println!(
        "   lks up files: ready after {} (pod {pod}; lks forwards 127.0.0.1:{port})",
        fmt_ms(ms(startup))
    );
    let get = |p: u16| http11_get(p, &format!("/{EDITED}"));
    let mut r = Edits {
        acked: Vec::new(),
        says: Vec::new(),
        served: Vec::new(),
        tar: Vec::new(),
        exec_true: Vec::new(),
        kubectl_version: Vec::new(),
        get_lks: Vec::new(),
        get_kubectl: Vec::new(),
    };
    let mut last = String::new();

    // a. write -> the agent's ack, as lks prints it; each checked in the pod.
    for i in 0..cfg.edits {
        let data = content(&mut rng, i + 1);
        up.take();
        let t0 = Instant::now();
        std::fs::write(&file, &data)?;
        let (mut at, mut line) =
            up.wait_for("`files | synced` line", t0, Duration::from_secs(20), |l| {
                is_synced(l, "files")
            })?;
        // A write seen half-done makes two batches: the second one counts.
        while get(port).as_deref() != Some(data.as_str()) {
            (at, line) = up
                .wait_for(
                    "second `files | synced` line",
                    at,
                    Duration::from_secs(5),
                    |l| is_synced(l, "files"),
                )
                .with_context(|| {
                    format!("edit {}: the pod does not serve what lks synced", i + 1)
                })?;
        }
        r.acked.push(ms(at.saturating_duration_since(t0)));
        r.says
            .push(trailing_ms(&line).with_context(|| format!("cannot parse {line:?}"))?);
        last = data;
        std::thread::sleep(Duration::from_millis(30));
    }
    println!(
        "   lks (write -> `synced` line read):    {}",
        spread(&r.acked)
    );
    println!(
        "   lks (as it reports it, event -> ack): {}",
        spread(&r.says)
    );

    // b. write -> served by the pod, polled through lks's forwarded port.
    for i in 0..cfg.edits {
        let data = content(&mut rng, cfg.edits + i + 1);
        up.take();
        let t0 = Instant::now();
        std::fs::write(&file, &data)?;
        loop {
            if get(port).as_deref() == Some(data.as_str()) {
                r.served.push(ms(t0.elapsed()));
                break;
            }
            if t0.elapsed() > Duration::from_secs(20) {
                bail!(
                    "edit {}: the pod did not serve the new {EDITED} within 20 s\n{}",
                    cfg.edits + i + 1,
                    up.transcript()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        up.wait_for("`files | synced` line", t0, Duration::from_secs(20), |l| {
            is_synced(l, "files")
        })?;
        last = data;
        std::thread::sleep(Duration::from_millis(30));
    }
    println!(
        "   lks (write -> served, polled):        {}",
        spread(&r.served)
    );

    // The cost of one request through a forwarded port: lks's, kubectl's.
    let fwd = KubectlForward::start(&ns.name, &pod, port)?;
    let floor_n = cfg.edits.clamp(5, 20);
    for (p, v) in [(port, &mut r.get_lks), (fwd.port, &mut r.get_kubectl)] {
        *v = times(floor_n, || match get(p) {
            Some(b) if b == last => Ok(()),
            other => bail!(
                "GET /{EDITED} on 127.0.0.1:{p}: {:?} bytes, not the {} expected",
                other.map(|b| b.len()),
                last.len()
            ),
        })?;
    }
    drop(fwd);
    println!(
        "   one GET, lks's forwarded port:        {}",
        spread(&r.get_lks)
    );
    println!(
        "   one GET, kubectl port-forward:        {}",
        spread(&r.get_kubectl)
    );

    // The baseline: kubectl exec -i POD -- tar -x per edit.
    let tar_src = base.join("tar-src");
    std::fs::create_dir_all(&tar_src)?;
    let tar_file = tar_src.join(EDITED);
    // kubectl exec [-i] -n NS POD -c files -- CMD...
    let exec = |interactive: bool, cmd: &[&str]| -> Vec<String> {
        let mut v = vec!["exec".to_string()];
        if interactive {
            v.push("-i".into());
        }
        for a in ["-n", ns.name.as_str(), pod.as_str(), "-c", "files", "--"] {
            v.push(a.into());
        }
        v.extend(cmd.iter().map(|a| a.to_string()));
        v
    };
    kubectl(&exec(false, &["mkdir", "-p", TAR_DIR]))?;
    let extract = exec(true, &["tar", "-xf", "-", "-C", TAR_DIR]);
    let mut last_tar = String::new();
    for i in 0..cfg.edits {
        let data = content(&mut rng, 1000 + i);
        std::fs::write(&tar_file, &data)?;
        let archive = Command::new("tar")
            .arg("-C")
            .arg(&tar_src)
            .args(["-cf", "-", EDITED])
            .output()
            .context("run tar -c")?;
        if !archive.status.success() {
            bail!("tar -c: {}", String::from_utf8_lossy(&archive.stderr));
        }
        let took = timed_with_input(
            &mut kubectl_command(&extract),
            &archive.stdout,
            "kubectl exec tar -x",
        )?;
        r.tar.push(ms(took));
        last_tar = data;
        std::thread::sleep(Duration::from_millis(30));
    }
    println!(
        "   kubectl exec tar (spawn -> exit):     {}",
        spread(&r.tar)
    );
    let true_cmd = exec(false, &["true"]);
    r.exec_true = times(floor_n, || kubectl(&true_cmd).map(drop))?;
    println!(
        "   kubectl exec POD true:                {}",
        spread(&r.exec_true)
    );
    r.kubectl_version = times(floor_n.min(10), || {
        kubectl(&["version", "--client", "-o", "json"]).map(drop)
    })?;
    println!(
        "   kubectl version --client:             {}",
        spread(&r.kubectl_version)
    );

    // Both arrived whole.
    let in_pod = |path: &str| kubectl(&exec(false, &["cat", path]));
    if in_pod(&format!("/app/{EDITED}"))? != last {
        bail!("the pod's /app/{EDITED} is not the last content lks synced");
    }
    if in_pod(&format!("{TAR_DIR}/{EDITED}"))? != last_tar {
        bail!("the pod's {TAR_DIR}/{EDITED} is not the last content tar extracted");
    }
    up.stop()?;
    Ok(r)
}

// ---------------------------------------------------------------------------
// 2. and 3. The examples: starts, Node.js edits, the kubectl baseline
// ---------------------------------------------------------------------------

/// One `lks up web api`, until both are ready.
struct Start {
    total: Duration,
    api_ready: Duration,
    /// `building` -> `built` lines, summed over the services built.
    building: Duration,
}

fn start_examples(ws: &Path, ns: &str) -> anyhow::Result<(UpRun, Start)> {
    let mut up = UpRun::start(ws, &["--runtime", "kube", "--namespace", ns, "web", "api"])?;
    let t = up.spawned;
    let mut ready: [Option<Instant>; 2] = [None, None];
    while ready.iter().any(Option::is_none) {
        let (at, line) = up.wait_for("`[ready]` for web and api", t, START, |l| {
            is_ready(l, "api") || is_ready(l, "web")
        })?;
        ready[usize::from(is_ready(&line, "web"))].get_or_insert(at);
    }
    let (api, web) = (ready[0].unwrap_or(t), ready[1].unwrap_or(t));
    let mut building = Duration::ZERO;
    for service in ["api", "web"] {
        let prefix = format!("{service} | ");
        let at = |what: &str| {
            up.seen
                .iter()
                .find(|(_, l)| l.strip_prefix(&prefix).is_some_and(|r| r.starts_with(what)))
                .map(|(at, _)| *at)
        };
        if let (Some(from), Some(to)) = (at("building "), at("built ")) {
            building += to.saturating_duration_since(from);
        }
    }
    register_built(&up);
    Ok((
        up,
        Start {
            total: api.max(web).saturating_duration_since(t),
            api_ready: api.saturating_duration_since(t),
            building,
        },
    ))
}

/// Records the `dev-` images `up` said it built, for removal at the end.
fn register_built(up: &UpRun) {
    let mut c = cleanup_list();
    for (_, l) in &up.seen {
        let Some((_, rest)) = l.split_once(" | built ") else {
            continue;
        };
        let image = rest.trim().to_string();
        let Some((repo, tag)) = image.rsplit_once(':') else {
            continue;
        };
        let mut tags = vec![];
        if tag.starts_with("dev-") {
            tags.push(image.clone());
            // `files` is the benchmark's own: its `latest` goes too (web's
            // and api's are shared with whoever runs the examples).
            if repo.ends_with("/files") {
                tags.push(format!("{repo}:latest"));
            }
        }
        for t in tags {
            if !c.images.contains(&t) {
                c.images.push(t);
            }
        }
    }
}

/// Gives each Dockerfile of the examples in `ws` a new `ENV LKS_BENCH_COLD`
/// after its `FROM`: new images, every layer above the base built again.
fn make_cold(ws: &Path) -> anyhow::Result<String> {
    let id = unique();
    for service in ["web", "api"] {
        let path = ws.join(service).join("Dockerfile");
        let text = std::fs::read_to_string(&path)?;
        let mut out = Vec::new();
        let mut done = false;
        for l in text.lines() {
            if l.starts_with("ENV LKS_BENCH_COLD=") {
                continue;
            }
            out.push(l.to_string());
            if !done && l.starts_with("FROM ") {
                out.push(format!("ENV LKS_BENCH_COLD={id}"));
                done = true;
            }
        }
        if !done {
            bail!("{} has no FROM line", path.display());
        }
        std::fs::write(&path, out.join("\n") + "\n")?;
    }
    Ok(id)
}

/// How long a GET may go without an answer before another starts beside it.
const HEDGE: Duration = Duration::from_millis(100);

/// Polls `GET /` on 127.0.0.1:`port` until an answer starts with `want`:
/// one request at a time, 2 ms apart, and another beside one that has had
/// no answer for [`HEDGE`] (a request the restarting app reset is passed on
/// by the port-forward only ~1 s later; kubectl port-forward does the same).
/// Returns how long after `t0` that answer arrived, or the last answer seen;
/// every GET that got no answer adds its duration to `failed`.
fn first_answer(
    port: u16,
    want: &str,
    t0: Instant,
    timeout: Duration,
    failed: &Arc<Mutex<Vec<f64>>>,
) -> Result<Duration, Option<String>> {
    let (tx, rx) = mpsc::channel::<(Instant, Option<String>)>();
    let mut in_flight = 0usize;
    let mut last = None;
    loop {
        if t0.elapsed() > timeout {
            return Err(last);
        }
        if in_flight < 8 {
            let (tx, failed) = (tx.clone(), failed.clone());
            in_flight += 1;
            std::thread::spawn(move || {
                let start = Instant::now();
                let body = http11_get(port, "/");
                if body.is_none() {
                    let took = ms(start.elapsed());
                    failed.lock().unwrap_or_else(|e| e.into_inner()).push(took);
                }
                let _ = tx.send((Instant::now(), body));
            });
        }
        // No answer within HEDGE: the next turn starts another beside it.
        if let Ok((at, body)) = rx.recv_timeout(HEDGE) {
            in_flight -= 1;
            if body.as_deref().is_some_and(|b| b.starts_with(want)) {
                return Ok(at.saturating_duration_since(t0));
            }
            last = body.or(last);
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

struct NodeEdits {
    response: Vec<f64>,
    /// lks's `web | synced ... restarted in X ms`.
    says: Vec<f64>,
    /// When the restarted app's `web listening on` line reached us.
    listening: Vec<f64>,
    /// How long each GET that got no answer took (the app was restarting).
    failed_gets: Vec<f64>,
}

/// Edits of the greeting in `web/server.js` until `GET /` answers it.
fn node_edits(cfg: &Config, up: &mut UpRun, ws: &Path, web_port: u16) -> anyhow::Result<NodeEdits> {
    let first = http11_get(web_port, "/").unwrap_or_default();
    if !first.starts_with("hello from web; api says: ") {
        bail!("web answered {first:?} at first");
    }
    let mut r = NodeEdits {
        response: Vec::new(),
        says: Vec::new(),
        listening: Vec::new(),
        failed_gets: Vec::new(),
    };
    let failed = Arc::new(Mutex::new(Vec::new()));
    for i in 0..cfg.up_edits {
        let greeting = format!("hello from web, edit {} of run {}", i + 1, run_id());
        let want = format!("{greeting}; api says: ");
        up.take();
        let t0 = Instant::now();
        set_greeting(ws, &greeting);
        match first_answer(web_port, &want, t0, Duration::from_secs(30), &failed) {
            Ok(took) => r.response.push(ms(took)),
            Err(last) => bail!(
                "edit {}: web never answered the new greeting (last answer {last:?})\n{}",
                i + 1,
                up.transcript()
            ),
        }
        // The cycle ends with readiness checked again.
        up.wait_for(
            "`web | [ready]` after an edit",
            t0,
            Duration::from_secs(30),
            |l| is_ready(l, "web"),
        )?;
        for (at, line) in up.seen.iter().filter(|(at, _)| *at >= t0) {
            if is_synced(line, "web") {
                if let Some(v) = trailing_ms(line) {
                    r.says.push(v);
                }
            } else if line.contains("web listening on") {
                r.listening.push(ms(at.saturating_duration_since(t0)));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    r.failed_gets = failed.lock().unwrap_or_else(|e| e.into_inner()).clone();
    println!(
        "   edit -> new response:                 {}",
        spread(&r.response)
    );
    println!(
        "   lks says `web | synced ... in X ms`:  {}",
        spread(&r.says)
    );
    println!(
        "   `web listening on` reached us at:     {}",
        spread(&r.listening)
    );
    println!(
        "   GETs with no answer ({} of them):      {}",
        r.failed_gets.len(),
        spread(&r.failed_gets)
    );
    Ok(r)
}

/// `kubectl apply` of the examples' manifests in `ws` with `images` in place
/// of the names and without the agent's annotations, then
/// `kubectl rollout status` of both; the wall time of both. The objects are
/// deleted afterwards (not timed).
fn kubectl_deploy(
    ws: &Path,
    dir: &Path,
    ns: &str,
    images: &[(&str, String)],
) -> anyhow::Result<Duration> {
    let mut files = Vec::new();
    for (service, image) in images {
        let src = ws.join(service).join("k8s").join(format!("{service}.yaml"));
        let text = std::fs::read_to_string(&src)?;
        let mut replaced = false;
        let out: Vec<String> = text
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                !(t.starts_with("annotations:") || t.starts_with("lks.dev/"))
            })
            .map(|l| {
                if l.trim() == format!("image: {service}") {
                    replaced = true;
                    l.replace(&format!("image: {service}"), &format!("image: {image}"))
                } else {
                    l.to_string()
                }
            })
            .collect();
        if !replaced {
            bail!("no `image: {service}` in {}", src.display());
        }
        let file = dir.join(format!("{service}.yaml"));
        std::fs::write(&file, out.join("\n") + "\n")?;
        files.push(file.to_string_lossy().into_owned());
    }
    let mut apply = vec!["apply", "-n", ns];
    for f in &files {
        apply.extend(["-f", f.as_str()]);
    }
    let t0 = Instant::now();
    kubectl(&apply)?;
    for (service, _) in images {
        kubectl(&[
            "rollout",
            "status",
            "-n",
            ns,
            &format!("deploy/{service}"),
            "--timeout=300s",
        ])?;
    }
    let took = t0.elapsed();
    let mut delete = vec!["delete", "-n", ns, "--wait=true"];
    for f in &files {
        delete.extend(["-f", f.as_str()]);
    }
    kubectl(&delete)?;
    wait_no_pods(ns, Duration::from_secs(120))?;
    Ok(took)
}

struct Examples {
    cold: Vec<Start>,
    warm: Vec<Start>,
    kubectl: Vec<f64>,
    node: NodeEdits,
}

fn measure_examples(cfg: &Config, base: &Path) -> anyhow::Result<Examples> {
    println!(
        "2./3. the examples (web: Node.js, api: Python) under lks up --runtime kube web api: \
         {} cold and {} warm starts, {} edits of web/server.js",
        cfg.cold, cfg.warm, cfg.up_edits
    );
    let ws = base.join("examples-ws");
    let (web_port, api_port) = examples_on_free_ports(&ws);
    println!("   lks forwards web to 127.0.0.1:{web_port}, api to 127.0.0.1:{api_port}");
    let mut cold = Vec::new();
    let mut namespaces = Vec::new();
    for i in 0..cfg.cold {
        let id = make_cold(&ws)?;
        // The namespaces of earlier cold runs go (in the background).
        namespaces.clear();
        let ns = Namespace::new(&format!("cold{}", i + 1));
        let (mut up, s) = start_examples(&ws, &ns.name)?;
        println!(
            "   cold {} (LKS_BENCH_COLD={id}, namespace {}): both ready after {} (api after {}; building images {})",
            i + 1,
            ns.name,
            fmt_ms(ms(s.total)),
            fmt_ms(ms(s.api_ready)),
            fmt_ms(ms(s.building))
        );
        if s.building.is_zero() {
            bail!(
                "cold start {}: lks built no image\n{}",
                i + 1,
                up.transcript()
            );
        }
        up.stop()?;
        cold.push(s);
        namespaces.push(ns);
    }
    let ns = namespaces.pop().context("at least one cold start")?;
    let mut warm = Vec::new();
    let mut last_up = None;
    for i in 0..cfg.warm {
        wait_no_pods(&ns.name, Duration::from_secs(120))?;
        let (up, s) = start_examples(&ws, &ns.name)?;
        println!(
            "   warm {}: both ready after {} (api after {})",
            i + 1,
            fmt_ms(ms(s.total)),
            fmt_ms(ms(s.api_ready))
        );
        warm.push(s);
        if i + 1 == cfg.warm {
            last_up = Some(up);
        } else {
            up.stop()?;
        }
    }
    let mut up = last_up.context("at least one warm start")?;
    let images: Vec<(&str, String)> = ["api", "web"]
        .into_iter()
        .map(|s| {
            up.field(s, ", image ")
                .map(|i| (s, i))
                .with_context(|| format!("no image named for {s} by lks up"))
        })
        .collect::<anyhow::Result<_>>()?;

    // 2. In the last warm run.
    println!("   Node edits in the last warm run:");
    let node = node_edits(cfg, &mut up, &ws, web_port)?;
    up.stop()?;

    // The baseline: the same images, applied by kubectl.
    let plain = Namespace::new("kubectl");
    kubectl(&["create", "namespace", &plain.name])?;
    let dir = base.join("kubectl-manifests");
    std::fs::create_dir_all(&dir)?;
    let mut plain_ms = Vec::new();
    for i in 0..cfg.warm {
        let took = kubectl_deploy(&ws, &dir, &plain.name, &images)?;
        println!(
            "   kubectl apply + rollout status {} ({}): {}",
            i + 1,
            images
                .iter()
                .map(|(_, i)| i.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            fmt_ms(ms(took))
        );
        plain_ms.push(ms(took));
    }
    Ok(Examples {
        cold,
        warm,
        kubectl: plain_ms,
        node,
    })
}

// ---------------------------------------------------------------------------

const NOTES: [&str; 6] = [
    "- single-file edit, lks: `lks up --runtime kube --namespace NS files`, a service of the benchmark's own (a Python static file server, `restart: never`, agent injected). From just before writing files/edit.txt (4 KiB) until lks's `files | synced 1 files ...` line is read from its stdout: the agent in the pod has renamed the file into place and acknowledged it (each checked by fetching the file from the pod). \"as lks reports it\": the figure in that line (first file event -> the agent's ack).",
    "- single-file edit, served: the same edits again, from the write until GET /edit.txt through lks's forwarded port returns the new content (polled every 2 ms): includes one request through the port-forward. `one GET`: GET /edit.txt through lks's forwarded port (each connection a new port-forward WebSocket to the API server) vs through `kubectl port-forward` to the same pod (streams on one connection), one at a time.",
    "- single-file edit, baseline: one `kubectl exec -i POD -c files -- tar -xf - -C /tmp/lks-bench-tar` per edit, its archive made beforehand, from spawning kubectl to its exit (change detection not included: favourable to the baseline; Tilt and Skaffold call the same exec API in-process, without kubectl's own start, `kubectl version --client`). `kubectl exec POD true`: the floor under any exec-based sync.",
    "- Node edit: the examples' web under `lks up --runtime kube --namespace NS web api` (the last warm run), from writing web/server.js with a new greeting until GET / through lks's forwarded port answers it (polled every 2 ms, one request at a time, and another beside one that has had no answer for 100 ms: a request the old process reset is passed on by the port-forward only ~1 s later, kubectl port-forward's too; those are the `no answer` row); the restart of `node server.js` in the pod is part of it. (Without cluster DNS web's call to api fails fast; only the greeting is checked.)",
    "- lks up -> ready: from spawning `lks up --runtime kube --namespace NS web api` until both `[ready]` lines are read (api first, then web: web depends on it). Cold: a fresh namespace (created by lks), and images never built: every Dockerfile in the copy gets `ENV LKS_BENCH_COLD=<random>` after its FROM, so each layer above lks/debian:bookworm is built again (pip install included), pushed to the registry and pulled by the node; cached: the base image (Docker, registry, node) and the agent image. Warm: the same again, images built and pushed, in the namespace of the last cold run (emptied by its Ctrl-C, pods gone).",
    "- kubectl apply + rollout: the same manifests and images, without the agent (annotations removed), `kubectl apply` of both then `kubectl rollout status` of api and web, in a namespace of their own: what the cluster itself takes to run the two pods (their readiness probes run every 2 s).",
];

fn run(cfg: &Config) -> anyhow::Result<Vec<Row>> {
    let kubeconfig = find_kubeconfig()?;
    KUBECONFIG.get_or_init(|| kubeconfig.clone());
    let context =
        kubectl(&["config", "current-context"]).context("the kubeconfig has no usable context")?;
    let node = kubectl(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}: kubelet {.status.nodeInfo.kubeletVersion}, {.status.nodeInfo.containerRuntimeVersion}; {end}",
    ])
    .context("the cluster does not answer")?;
    let other_pods = kubectl(&["get", "pods", "-A", "--no-headers"])?
        .lines()
        .count();
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()
        .filter(|s| s.success())
        .context("the Docker engine does not answer (tests/run.sh starts dockerd)")?;
    // lks finds its static agent itself; say early if it is missing.
    let _ = bin("lks");
    clean_up_on_signals()?;
    remove_stale_namespaces()?;
    remove_stale_images();

    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let tmp = lks_e2e::bench::scratch_dir("lks-bench-kube.")?;
    let base = tmp.path();
    cleanup_list().dirs.push(base.to_path_buf());
    println!(
        "lks-bench-kube{}: {} edits, {} Node edits, {} cold and {} warm starts",
        if cfg.smoke { " --smoke" } else { "" },
        cfg.edits,
        cfg.up_edits,
        cfg.cold,
        cfg.warm
    );
    println!(
        "  machine: {} CPUs ({model}); {} build; lks {}",
        cpus(),
        profile(),
        bin("lks").display()
    );
    println!(
        "  cluster: {} (context {}), {}pods in it before this run: {other_pods}",
        kubeconfig.display(),
        context.trim(),
        node
    );

    let result = measure_all(cfg, base);
    // The image tags this run built go, whatever happened.
    let images = std::mem::take(&mut cleanup_list().images);
    remove_images(&images);
    remove_stale_images();
    println!(
        "  its namespaces ({NS_PREFIX}{}-{}-*) are being deleted in the background",
        std::process::id(),
        run_id()
    );
    let rows = result?;
    tmp.close().context("remove the temporary directory")?;
    cleanup_list().dirs.clear();
    Ok(rows)
}

fn measure_all(cfg: &Config, base: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();

    // 1.
    let e = measure_edits(cfg, base)?;
    let n = e.acked.len();
    for (p, target) in [(50.0, true), (99.0, false)] {
        let (ours, theirs) = (percentile(&e.acked, p), percentile(&e.tar, p));
        let speedup = theirs / ours;
        rows.push(Row {
            measure: format!("single-file edit -> applied in the pod, p{p:.0} ({n} edits)"),
            ours: fmt_ms(ours),
            baseline: format!("kubectl exec tar {}", fmt_ms(theirs)),
            ratio: format!("{speedup:.1}x faster"),
            target: if target { ">= 10x faster" } else { "-" }.into(),
            pass: target.then_some(speedup >= 10.0),
        });
    }
    rows.push(Row::info(
        "  p50 as lks reports it (event -> agent's ack)".into(),
        fmt_ms(percentile(&e.says, 50.0)),
        format!("exec true {}", fmt_ms(percentile(&e.exec_true, 50.0))),
    ));
    rows.push(Row::info(
        "  kubectl's own start (version --client), p50".into(),
        "-".into(),
        fmt_ms(percentile(&e.kubectl_version, 50.0)),
    ));
    rows.push(Row::info(
        format!(
            "single-file edit -> served by the pod, p50 / p99 ({} edits)",
            e.served.len()
        ),
        format!(
            "{} / {}",
            fmt_ms(percentile(&e.served, 50.0)),
            fmt_ms(percentile(&e.served, 99.0))
        ),
        "-".into(),
    ));
    let (gl, gk) = (
        percentile(&e.get_lks, 50.0),
        percentile(&e.get_kubectl, 50.0),
    );
    rows.push(Row {
        measure: format!(
            "one GET through the forwarded port, p50 ({})",
            e.get_lks.len()
        ),
        ours: fmt_ms(gl),
        baseline: format!("kubectl port-forward {}", fmt_ms(gk)),
        ratio: format!("{:.1}x", gl / gk),
        target: "-".into(),
        pass: None,
    });

    // 2. and 3.
    let x = measure_examples(cfg, base)?;
    let n = x.node.response.len();
    let p50 = percentile(&x.node.response, 50.0);
    rows.push(Row {
        measure: format!("Node edit -> new response (kube), p50 ({n} edits)"),
        ours: fmt_ms(p50),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "<= 200 ms".into(),
        pass: Some(p50 <= 200.0),
    });
    rows.push(Row::info(
        format!("Node edit -> new response (kube), p99 ({n} edits)"),
        fmt_ms(percentile(&x.node.response, 99.0)),
        "-".into(),
    ));
    rows.push(Row::info(
        "  of which: lks says synced + restarted (p50)".into(),
        fmt_ms(percentile(&x.node.says, 50.0)),
        "-".into(),
    ));
    rows.push(Row::info(
        "  of which: restarted app printed `listening` (p50)".into(),
        fmt_ms(percentile(&x.node.listening, 50.0)),
        "-".into(),
    ));
    rows.push(Row::info(
        format!(
            "  a GET while node restarted: no answer after, p50 / max ({})",
            x.node.failed_gets.len()
        ),
        format!(
            "{} / {}",
            fmt_ms(percentile(&x.node.failed_gets, 50.0)),
            fmt_ms(percentile(&x.node.failed_gets, 100.0))
        ),
        "-".into(),
    ));
    let secs = |v: f64| format!("{:.1} s", v / 1000.0);
    let cold: Vec<f64> = x.cold.iter().map(|s| ms(s.total)).collect();
    let cold_build: Vec<f64> = x.cold.iter().map(|s| ms(s.building)).collect();
    let warm: Vec<f64> = x.warm.iter().map(|s| ms(s.total)).collect();
    let warm_api: Vec<f64> = x.warm.iter().map(|s| ms(s.api_ready)).collect();
    let plain = median(&x.kubectl);
    rows.push(Row {
        measure: format!(
            "lks up web api -> both ready, cold, median of {}",
            cold.len()
        ),
        ours: secs(median(&cold)),
        baseline: format!("kubectl apply+rollout {}", secs(plain)),
        ratio: format!("{:.1}x", median(&cold) / plain),
        target: "-".into(),
        pass: None,
    });
    rows.push(Row::info(
        "  of which: building the two images (median)".into(),
        secs(median(&cold_build)),
        "-".into(),
    ));
    rows.push(Row {
        measure: format!(
            "lks up web api -> both ready, warm, median of {}",
            warm.len()
        ),
        ours: secs(median(&warm)),
        baseline: format!("kubectl apply+rollout {}", secs(plain)),
        ratio: format!("{:.1}x", median(&warm) / plain),
        target: "-".into(),
        pass: None,
    });
    rows.push(Row::info(
        "  of which: api ready (it goes first), warm (median)".into(),
        secs(median(&warm_api)),
        "-".into(),
    ));
    Ok(rows)
}

fn main() -> std::process::ExitCode {
    let details = |cfg: &Config, took: Duration| {
        format!(
            "{} edits, {} Node edits, {} cold / {} warm starts; {} build, {} CPUs; {:.0} s",
            cfg.edits,
            cfg.up_edits,
            cfg.cold,
            cfg.warm,
            profile(),
            cpus(),
            took.as_secs_f64()
        )
    };
    lks_e2e::bench::main("lks-bench-kube", Config::parse, run, details, &NOTES)
}
