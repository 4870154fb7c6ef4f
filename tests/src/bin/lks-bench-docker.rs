//! `lks-bench-docker`: lks against `docker exec ... tar` (the mechanism Tilt
//! and Skaffold use to put files into a running container), with the real
//! `lks`, `lks-agent` (the static one, bind-mounted into the containers) and
//! the Docker engine.
//!
//! 1. initial sync of a generated tree into a running container, cold (empty
//!    root) and warm (nothing changed), vs
//!    `tar -cf - . | docker exec -i C tar -xf - -C /data2`, cold into an empty
//!    directory and warm (the same again: tar re-sends everything);
//! 2. one file edited N times: `lks sync` in watch mode, from the write until
//!    the new content is in the container's filesystem (seen through the
//!    container's overlay upper directory on the host), vs one
//!    `docker exec -i C tar -xf -` of that file per edit (start to exit);
//! 3. the Node.js example under `lks up --runtime docker frontend --local web`:
//!    edit the greeting in `web/server.js`, until `GET /` on :18080 answers the
//!    new one.
//!
//! Every sync is checked (a manifest of paths, modes and sha256 computed by
//! python3 inside the container must equal the local one); a wrong sync or a
//! failing tool ends the run with exit code 1. A slow figure is only reported
//! (MISS). Every container it starts carries the label `dev.lks.bench-docker`
//! and is removed at the end, on an error, a panic, or SIGINT/SIGTERM; what
//! `lks up` started is removed by `lks up` itself and then `lks down`.
//!
//! ```text
//! cargo build --release --workspace --bins
//! RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p lks-agent --target x86_64-unknown-linux-gnu
//! TMPDIR=/dev/shm ./target/release/lks-bench-docker
//! cargo run -p lks-e2e --bin lks-bench-docker -- --smoke
//! ```
//!
//! Needs: a running dockerd, the image `lks/debian:bookworm`
//! (`images/base/build.sh`), python3 on the host, and the ports 18080 and
//! 18081 free (the examples' fixed ports) for the third measurement.

use anyhow::{Context, bail};
use lks_e2e::bench::{
    Args, Row, cpus, default_dirs, fmt_bytes, fmt_ms, fs_kind, generate_source, lks_sync_once,
    median, ms, percentile, profile, scratch_dir, settle, spread, timed_sh, timed_with_input,
};
use lks_e2e::{Rng, Watch, bin, http_get, process_alive, wait_until};
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

const TOKEN: &str = "lks-bench-docker-token";
const IMAGE: &str = "lks/debian:bookworm";
/// Where the static agent is bind-mounted in the containers (as `lks up` does).
const AGENT_IN_CONTAINER: &str = "/.lks/lks-agent";
/// The label on every container this program starts; its value is our pid.
const LABEL: &str = "dev.lks.bench-docker";
/// The examples' fixed ports (web, api).
const EXAMPLE_PORTS: [u16; 2] = [18080, 18081];

const USAGE: &str = "\
usage: lks-bench-docker [--smoke] [--files N] [--dirs N] [--mb N] [--runs N] [--edits N] [--up-edits N]

  --smoke        a small, quick run (200 files / 2 MB, 3 runs, 3 edits each)
  --files N      files in the generated tree (default 5000)
  --dirs N       directories they are spread over (default: one per 10 files)
  --mb N         total size of the generated tree in MB (default 50)
  --runs N       cold and warm initial-sync runs, each (default 5)
  --edits N      single-file edits, for lks and for docker exec tar (default 100)
  --up-edits N   edits of web/server.js under `lks up --runtime docker` (default 30)

Build the binaries and the static agent first; real numbers come from release builds:
  cargo build --release --workspace --bins
  RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p lks-agent --target x86_64-unknown-linux-gnu
  TMPDIR=/dev/shm ./target/release/lks-bench-docker";

/// What to measure, and how much.
#[derive(Clone, Debug)]
struct Config {
    smoke: bool,
    files: usize,
    dirs: usize,
    mb: u64,
    runs: usize,
    edits: usize,
    up_edits: usize,
}

impl Config {
    fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Config> {
        let args = Args::parse(
            args,
            &[
                "--files",
                "--dirs",
                "--mb",
                "--runs",
                "--edits",
                "--up-edits",
            ],
            USAGE,
        )?;
        let c = if args.smoke {
            Config {
                smoke: true,
                files: 200,
                dirs: 0,
                mb: 2,
                runs: 3,
                edits: 3,
                up_edits: 3,
            }
        } else {
            Config {
                smoke: false,
                files: 5000,
                dirs: 0,
                mb: 50,
                runs: 5,
                edits: 100,
                up_edits: 30,
            }
        };
        let files = args.number("--files", c.files as u64) as usize;
        Ok(Config {
            files,
            dirs: args.number("--dirs", default_dirs(files) as u64) as usize,
            mb: args.number("--mb", c.mb),
            runs: args.number("--runs", c.runs as u64) as usize,
            edits: args.number("--edits", c.edits as u64) as usize,
            up_edits: args.number("--up-edits", c.up_edits as u64) as usize,
            ..c
        })
    }
}

// ---------------------------------------------------------------------------
// Clean-up: containers and `lks up` runs, on drop and on a signal
// ---------------------------------------------------------------------------

/// What must go when the program ends, whichever way. Whatever starts
/// something holds the lock while it does, and the signal handler holds it
/// from the signal to the exit: nothing starts behind its back.
struct Cleanup {
    containers: Vec<String>,
    /// `lks up` processes and their workspace files (for `lks down`).
    ups: Vec<(u32, PathBuf)>,
    /// The temporary directory.
    dirs: Vec<PathBuf>,
}

static CLEANUP: Mutex<Cleanup> = Mutex::new(Cleanup {
    containers: Vec::new(),
    ups: Vec::new(),
    dirs: Vec::new(),
});

fn cleanup_list() -> std::sync::MutexGuard<'static, Cleanup> {
    CLEANUP.lock().unwrap_or_else(|e| e.into_inner())
}

/// On SIGINT, SIGTERM or SIGHUP: stops the `lks up` runs, removes the
/// containers, and exits with 130 (Drop guards do not run on a signal).
fn clean_up_on_signals() -> anyhow::Result<()> {
    lks_e2e::bench::on_signals("lks-bench-docker", || {
        let c = cleanup_list();
        for (pid, ws_file) in &c.ups {
            stop_lks_up(*pid, ws_file);
        }
        for name in &c.containers {
            let _ = docker_quiet(&["rm", "-f", "-v", name]);
        }
        for dir in &c.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        // Held until the exit: nothing starts behind the clean-up's back.
        std::mem::forget(c);
    })
}

/// SIGTERM to `lks up` (it removes its containers), up to 20 s for it to
/// exit, then `lks down` for its workspace in case anything is left.
fn stop_lks_up(pid: u32, ws_file: &Path) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
    }
    let _ = wait_until(Duration::from_secs(20), || !process_alive(pid));
    let _ = Command::new(bin("lks"))
        .args(["down", "-f"])
        .arg(ws_file)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Removes containers an earlier, killed run of this program left behind
/// (their label names a pid that is gone).
fn remove_stale_containers() {
    let Ok(out) = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={LABEL}"),
        "--format",
        &format!("{{{{.Names}}}} {{{{.Label \"{LABEL}\"}}}}"),
    ]) else {
        return;
    };
    for line in out.lines() {
        let Some((name, pid)) = line.split_once(' ') else {
            continue;
        };
        let alive = pid.parse::<u32>().is_ok_and(process_alive);
        if !alive {
            println!("  removing {name}, left by an earlier run (pid {pid})");
            let _ = docker_quiet(&["rm", "-f", "-v", name]);
        }
    }
}

// ---------------------------------------------------------------------------
// Docker
// ---------------------------------------------------------------------------

/// The trimmed stdout of a successful `docker ARGS`.
fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("run docker (is docker.io installed? tests/run.sh installs it)")?;
    if !out.status.success() {
        bail!(
            "docker {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn docker_quiet(args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

/// The statically linked agent to bind-mount: `LKS_AGENT_BIN`, else the one
/// Cargo builds for `--target x86_64-unknown-linux-gnu` in the same profile.
fn static_agent() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("LKS_AGENT_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let lks = bin("lks");
            let dir = lks.parent().context("the binaries' directory")?;
            let profile = dir.file_name().context("the profile directory")?;
            let target = dir.parent().context("the target directory")?;
            target
                .join("x86_64-unknown-linux-gnu")
                .join(profile)
                .join("lks-agent")
        }
    };
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "no static agent at {}: build it with RUSTFLAGS=\"-C target-feature=+crt-static\" \
             cargo build [--release] -p lks-agent --target x86_64-unknown-linux-gnu \
             (or set LKS_AGENT_BIN)",
            path.display()
        )
    })?;
    // Checked here, before any container runs it: lks finds (and checks) its
    // own static agent only for `lks up`, the third measurement.
    let elf = goblin::elf::Elf::parse(&bytes)
        .with_context(|| format!("{} is not an ELF executable", path.display()))?;
    if elf.interpreter.is_some() {
        bail!(
            "{} is dynamically linked; the containers need the static one",
            path.display()
        );
    }
    Ok(path)
}

/// A container running `lks-agent serve --root /data`, with an empty `/data2`
/// for tar; removed on drop.
struct Container {
    name: String,
    /// `http://127.0.0.1:PORT` of the agent (published on loopback only).
    url: String,
    /// The container's overlay upper directory on the host, when the storage
    /// driver has one (what the container writes lands there).
    upper: Option<PathBuf>,
}

impl Container {
    fn start(idx: usize, agent: &Path) -> anyhow::Result<Container> {
        let pid = std::process::id();
        let name = format!("lks-bench-docker-{pid}-{idx}");
        // Constructed before `docker run`, so a failure past this point is
        // cleaned up too (and before the lock is taken: its drop takes it).
        let mut c = Container {
            name: name.clone(),
            url: String::new(),
            upper: None,
        };
        let mut cleanup = cleanup_list();
        cleanup.containers.push(name.clone());
        let out = Command::new("docker")
            .args(["run", "-d", "--name", &name, "--label"])
            .arg(format!("{LABEL}={pid}"))
            .args(["-e", "LKS_TOKEN", "-v"])
            .arg(format!("{}:{AGENT_IN_CONTAINER}:ro", agent.display()))
            .args(["-p", "127.0.0.1::7690", "--entrypoint", "/bin/sh", IMAGE, "-c"])
            .arg(format!(
                "mkdir -p /data /data2 && exec {AGENT_IN_CONTAINER} serve --root /data --listen 0.0.0.0:7690"
            ))
            .env("LKS_TOKEN", TOKEN)
            .output()
            .context("run docker run")?;
        drop(cleanup);
        if !out.status.success() {
            bail!(
                "docker run {name} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut logs = String::new();
        let up = wait_until(Duration::from_secs(30), || {
            logs = docker(&["logs", &name]).unwrap_or_default();
            logs.contains("listening on")
        });
        if !up {
            let err = Command::new("docker").args(["logs", &name]).output();
            let err = err
                .map(|o| String::from_utf8_lossy(&o.stderr).to_string())
                .unwrap_or_default();
            bail!("the agent in {name} did not start within 30 s: {logs}{err}");
        }
        let ports = docker(&["port", &name, "7690/tcp"])?;
        let addr = ports
            .lines()
            .find(|l| l.starts_with("127.0.0.1:"))
            .with_context(|| format!("no loopback port published for {name}: {ports:?}"))?;
        c.url = format!("http://{addr}");
        let upper = docker(&[
            "inspect",
            "--format",
            "{{with .GraphDriver.Data}}{{.UpperDir}}{{end}}",
            &name,
        ])
        .unwrap_or_default();
        c.upper = Some(PathBuf::from(upper))
            .filter(|p| !p.as_os_str().is_empty() && p.join("data").is_dir());
        Ok(c)
    }

    /// `path`, as the host sees it in the container's upper directory.
    fn on_host(&self, path: &str) -> Option<PathBuf> {
        self.upper
            .as_ref()
            .map(|u| u.join(path.trim_start_matches('/')))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker_quiet(&["rm", "-f", "-v", &self.name]);
        cleanup_list().containers.retain(|n| n != &self.name);
    }
}

// ---------------------------------------------------------------------------
// Checking what arrived
// ---------------------------------------------------------------------------

/// Prints `path kind mode [sha256|target]` for everything beneath argv[1],
/// sorted, skipping names starting with argv[2] (the agent's staging files).
const MANIFEST_PY: &str = r#"
import hashlib, os, stat, sys
root, skip = sys.argv[1], sys.argv[2]
out = []
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        if n.startswith(skip):
            continue
        p = os.path.join(d, n)
        st = os.lstat(p)
        rel = os.path.relpath(p, root)
        m = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            out.append("%s l %s" % (rel, os.readlink(p)))
        elif stat.S_ISDIR(st.st_mode):
            out.append("%s d %o" % (rel, m))
        else:
            with open(p, "rb") as f:
                out.append("%s f %o %s" % (rel, m, hashlib.sha256(f.read()).hexdigest()))
out.sort()
print("\n".join(out))
"#;

fn manifest(cmd: &mut Command, what: &str) -> anyhow::Result<Vec<String>> {
    let out = cmd
        .output()
        .with_context(|| format!("run python3 for {what}"))?;
    if !out.status.success() {
        bail!(
            "the manifest of {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// Fails unless `dir` in the container holds exactly what `src` holds
/// (paths, kinds, permission bits, content).
fn verify(src: &Path, c: &Container, dir: &str, what: &str) -> anyhow::Result<()> {
    let local = manifest(
        Command::new("python3")
            .args(["-c", MANIFEST_PY])
            .arg(src)
            .arg(lks_proto::STAGING_PREFIX),
        "the local tree",
    )?;
    let remote = manifest(
        Command::new("docker").args([
            "exec",
            &c.name,
            "python3",
            "-c",
            MANIFEST_PY,
            dir,
            lks_proto::STAGING_PREFIX,
        ]),
        &format!("{dir} in {}", c.name),
    )?;
    if local != remote {
        let l: std::collections::BTreeSet<&String> = local.iter().collect();
        let r: std::collections::BTreeSet<&String> = remote.iter().collect();
        let mut d: Vec<String> = l
            .difference(&r)
            .take(5)
            .map(|s| format!("only local:     {s}"))
            .collect();
        d.extend(
            r.difference(&l)
                .take(5)
                .map(|s| format!("only container: {s}")),
        );
        bail!(
            "{what}: {dir} in the container differs from the local tree ({} vs {} entries):\n  {}",
            local.len(),
            remote.len(),
            d.join("\n  ")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------

/// The `X ms` at the end of a `synced: ...`, `batch N: ...` or
/// `web synced ... in X ms` line.
fn trailing_ms(line: &str) -> Option<f64> {
    let rest = line.trim().strip_suffix(" ms")?;
    rest.rsplit([' ', ','])
        .next()
        .and_then(|n| n.parse::<f64>().ok())
}

/// The `N bytes sent` of an lks summary line.
fn bytes_sent(line: &str) -> Option<u64> {
    let i = line.find(" bytes sent")?;
    line[..i].rsplit([' ', ',']).next()?.parse().ok()
}

const NOTES: [&str; 5] = [
    "- initial sync: wall time of the whole `lks sync --once` command (agent in the container, its port published on 127.0.0.1) vs `tar -C SRC -cf - . | docker exec -i C tar -xf - -C /data2`; each cold run uses a fresh container (both roots empty), the warm runs repeat both against the last one.",
    "- single-file edit, lks: `lks sync` in watch mode, from just before writing the file until its new content is in the container's filesystem (read through the container's overlay upper directory on the host, on inotify events and every 1 ms). \"as lks reports it\": its `batch N: ... X ms` lines (first local event -> the agent's ack).",
    "- single-file edit, baseline: one `docker exec -i C tar -xf - -C /data2` of that file per edit, its tar archive made beforehand, timed from spawning the docker CLI to its exit (change detection not included: favourable to the baseline).",
    "- `docker exec C true`: the cost of an exec alone, the floor under any exec-based sync.",
    "- lks up: `lks up --runtime docker frontend --local web` on a copy of examples/web and examples/api; from writing web/server.js with a new greeting until `GET /` on 127.0.0.1:18080 answers it (polled every 2 ms). The restart of `node server.js` is part of it.",
];

// ---------------------------------------------------------------------------
// 1. Initial sync
// ---------------------------------------------------------------------------

/// `tar -C src -cf - . | docker exec -i C tar -xf - -C dir`; its wall time.
fn tar_into(src: &Path, c: &Container, dir: &str) -> anyhow::Result<Duration> {
    timed_sh(
        "tar | docker exec tar",
        r#"set -e; tar -C "$1" -cf - . | docker exec -i "$2" tar -xf - -C "$3""#,
        &[src.as_os_str(), c.name.as_ref(), dir.as_ref()],
    )
}

struct Initial {
    cold_lks: Vec<f64>,
    cold_tar: Vec<f64>,
    warm_lks: Vec<f64>,
    warm_tar: Vec<f64>,
    warm_bytes: u64,
}

fn measure_initial(
    cfg: &Config,
    src: &Path,
    agent: &Path,
    containers: &mut Vec<Container>,
) -> anyhow::Result<Initial> {
    println!(
        "1. initial sync into a running container ({} cold runs, each in a fresh container, then {} warm runs)",
        cfg.runs, cfg.runs
    );
    let mut r = Initial {
        cold_lks: Vec::new(),
        cold_tar: Vec::new(),
        warm_lks: Vec::new(),
        warm_tar: Vec::new(),
        warm_bytes: 0,
    };
    // No container is removed before the end: deleting thousands of files on
    // ext4 (where the overlay upper directories live) slows the file creation
    // that follows, for tar and lks alike.
    for i in 0..cfg.runs {
        let t = Instant::now();
        let c = Container::start(i, agent)?;
        let started = t.elapsed();
        let tar_first = i % 2 == 0;
        let mut tar_ms = 0.0;
        let mut lks = (0.0, String::new());
        for step in 0..2 {
            settle();
            if (step == 0) == tar_first {
                tar_ms = ms(tar_into(src, &c, "/data2")?);
            } else {
                let (d, line) = lks_sync_once(src, &c.url, TOKEN)?;
                lks = (ms(d), line);
            }
        }
        verify(src, &c, "/data2", "cold tar")?;
        verify(src, &c, "/data", "cold lks sync --once")?;
        println!(
            "   run {}: tar {}, lks {} ({}; container started in {})",
            i + 1,
            fmt_ms(tar_ms),
            fmt_ms(lks.0),
            lks.1,
            fmt_ms(ms(started))
        );
        r.cold_tar.push(tar_ms);
        r.cold_lks.push(lks.0);
        containers.push(c);
    }
    let c = containers.last().expect("at least one run");
    for i in 0..cfg.runs {
        let mut tar_ms = 0.0;
        let mut lks = (0.0, String::new());
        for step in 0..2 {
            settle();
            if (step == 0) == (i % 2 == 0) {
                tar_ms = ms(tar_into(src, c, "/data2")?);
            } else {
                let (d, line) = lks_sync_once(src, &c.url, TOKEN)?;
                lks = (ms(d), line);
            }
        }
        println!(
            "   warm {}: tar {}, lks {} ({})",
            i + 1,
            fmt_ms(tar_ms),
            fmt_ms(lks.0),
            lks.1
        );
        r.warm_bytes = bytes_sent(&lks.1).unwrap_or(0);
        r.warm_tar.push(tar_ms);
        r.warm_lks.push(lks.0);
    }
    verify(src, c, "/data2", "warm tar")?;
    verify(src, c, "/data", "warm lks sync --once")?;
    Ok(r)
}

// ---------------------------------------------------------------------------
// 2. Single-file edits
// ---------------------------------------------------------------------------

struct Edits {
    /// Write -> new content in the container's filesystem (when observable).
    lks: Vec<f64>,
    /// What lks printed per batch (first event -> ack).
    lks_says: Vec<f64>,
    tar: Vec<f64>,
    exec_floor: Vec<f64>,
}

/// New content for a file that held `old`: `size` random bytes.
fn new_content(rng: &mut Rng, size: u64, old: &[u8]) -> Vec<u8> {
    loop {
        let data = rng.bytes(size as usize);
        if data != old {
            return data;
        }
    }
}

fn measure_edits(cfg: &Config, src: &Path, file: &Path, c: &Container) -> anyhow::Result<Edits> {
    let rel = file
        .strip_prefix(src)
        .context("the edited file is in the tree")?
        .to_string_lossy()
        .to_string();
    let size = (cfg.mb * 1_000_000 / cfg.files as u64).max(1);
    let in_upper = c.on_host(&format!("data/{rel}"));
    println!(
        "2. single-file edit -> applied: {rel}, {} random bytes per edit, {} edits each",
        size, cfg.edits
    );
    let mut r = Edits {
        lks: Vec::new(),
        lks_says: Vec::new(),
        tar: Vec::new(),
        exec_floor: Vec::new(),
    };
    let mut rng = Rng::new(11);

    // lks sync in watch mode.
    let (tx, events) = mpsc::channel();
    let mut _watcher = None;
    if let Some(target) = &in_upper {
        let dir = target.parent().context("the file's directory")?;
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok() {
                let _ = tx.send(());
            }
        })
        .context("an inotify watcher")?;
        w.watch(dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watch {}", dir.display()))?;
        _watcher = Some(w);
    } else {
        println!(
            "   the storage driver has no upper directory to look into: lks's own batch figures only"
        );
    }
    let mut watch = Watch::start(src, &c.url, TOKEN, &[]);
    for i in 0..cfg.edits {
        let data = new_content(&mut rng, size, &std::fs::read(file)?);
        let want = blake3::hash(&data);
        while events.try_recv().is_ok() {}
        while watch.stdout.try_recv().is_ok() {}
        let t0 = Instant::now();
        std::fs::write(file, &data)?;
        if let Some(target) = &in_upper {
            let seen = loop {
                let _ = events.recv_timeout(Duration::from_millis(1));
                if std::fs::read(target).is_ok_and(|d| blake3::hash(&d) == want) {
                    break t0.elapsed();
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    let err: Vec<String> = watch.stderr.try_iter().collect();
                    bail!(
                        "edit {}: {rel} did not reach the container within 10 s; lks stderr: {err:#?}",
                        i + 1
                    );
                }
            };
            r.lks.push(ms(seen));
        }
        let line = watch.wait_line("batch ", Duration::from_secs(10));
        r.lks_says
            .push(trailing_ms(&line).with_context(|| format!("cannot parse {line:?}"))?);
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = watch.terminate();
    if !status.success() {
        bail!("lks sync (watch mode) exited with {status} on SIGTERM");
    }
    verify(src, c, "/data", "after the watch-mode edits")?;
    if !r.lks.is_empty() {
        println!("   lks (write -> in the container): {}", spread(&r.lks));
    }
    println!(
        "   lks (as it reports it):          {}",
        spread(&r.lks_says)
    );

    // docker exec -i C tar -xf - per edit.
    for _ in 0..cfg.edits {
        let data = new_content(&mut rng, size, &std::fs::read(file)?);
        std::fs::write(file, &data)?;
        let archive = Command::new("tar")
            .arg("-C")
            .arg(src)
            .args(["-cf", "-", &rel])
            .output()
            .context("run tar -c")?;
        if !archive.status.success() {
            bail!("tar -c {rel}: {}", String::from_utf8_lossy(&archive.stderr));
        }
        let took = timed_with_input(
            Command::new("docker").args(["exec", "-i", &c.name, "tar", "-xf", "-", "-C", "/data2"]),
            &archive.stdout,
            "docker exec tar -x",
        )?;
        r.tar.push(ms(took));
        std::thread::sleep(Duration::from_millis(20));
    }
    verify(src, c, "/data2", "after the docker exec tar edits")?;
    println!("   docker exec tar (spawn -> exit):  {}", spread(&r.tar));

    // The floor under any exec-based sync.
    for _ in 0..cfg.edits.clamp(3, 30) {
        let t0 = Instant::now();
        docker(&["exec", &c.name, "true"])?;
        r.exec_floor.push(ms(t0.elapsed()));
    }
    println!(
        "   docker exec C true:               {}",
        spread(&r.exec_floor)
    );
    Ok(r)
}

// ---------------------------------------------------------------------------
// 3. lks up --runtime docker, Node.js example
// ---------------------------------------------------------------------------

/// A running `lks up`, its stdout lines timestamped as they arrive; stopped
/// (and its workspace's containers removed) on drop.
struct UpRun {
    child: Child,
    ws_file: PathBuf,
    out: mpsc::Receiver<(Instant, String)>,
    err: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl UpRun {
    fn start(ws: &Path, args: &[&str]) -> anyhow::Result<UpRun> {
        let ws_file = ws.join("lks.yaml");
        let mut cleanup = cleanup_list();
        let mut child = lks_e2e::up_command(ws, args)
            .spawn()
            .context("spawn lks up")?;
        cleanup.ups.push((child.id(), ws_file.clone()));
        drop(cleanup);
        let out = lks_e2e::timed_lines(child.stdout.take().context("lks up's stdout")?);
        let err = lks_e2e::lines(child.stderr.take().context("lks up's stderr")?);
        Ok(UpRun {
            child,
            ws_file,
            out,
            err,
            seen: Vec::new(),
        })
    }

    /// Waits for a line containing all of `needles`.
    fn wait(&mut self, needles: &[&str], timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok((_, line)) => {
                    self.seen.push(line.clone());
                    if needles.iter().all(|n| line.contains(n)) {
                        return Ok(line);
                    }
                }
                Err(_) => {
                    let err: Vec<String> = self.err.try_iter().collect();
                    bail!(
                        "lks up printed no line with {needles:?} within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                        self.seen.join("\n"),
                        err.join("\n")
                    );
                }
            }
        }
    }

    /// The lines that arrived since the last call, with when they arrived.
    fn take(&mut self) -> Vec<(Instant, String)> {
        let v: Vec<(Instant, String)> = self.out.try_iter().collect();
        self.seen.extend(v.iter().map(|(_, l)| l.clone()));
        v
    }
}

impl Drop for UpRun {
    fn drop(&mut self) {
        let pid = self.child.id();
        if let Ok(None) = self.child.try_wait() {
            stop_lks_up(pid, &self.ws_file);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        cleanup_list().ups.retain(|(p, _)| *p != pid);
    }
}

/// Whether nothing listens on, or answers at, 127.0.0.1:`port`.
fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() && http_get(port, "/").is_none()
}

/// `server.js` with `const greeting = "GREETING";`.
fn with_greeting(text: &str, greeting: &str) -> anyhow::Result<String> {
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("const greeting = ") {
                found = true;
                format!("const greeting = \"{greeting}\";")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        bail!("examples/web/server.js has no `const greeting = ` line any more");
    }
    Ok(out.join("\n") + "\n")
}

struct UpEdits {
    response: Vec<f64>,
    /// lks's `web synced ... in X ms` figures.
    synced_says: Vec<f64>,
    /// When `web listening on` (the restarted app's first line) reached us.
    app_listening: Vec<f64>,
    startup: Duration,
}

fn measure_up(cfg: &Config, base: &Path) -> anyhow::Result<UpEdits> {
    println!(
        "3. lks up --runtime docker frontend --local web (examples/web, Node.js): {} edits of the greeting",
        cfg.up_edits
    );
    for port in EXAMPLE_PORTS {
        if !port_free(port) {
            println!("   waiting for 127.0.0.1:{port} to be free (the examples' fixed port)");
            if !wait_until(Duration::from_secs(120), || port_free(port)) {
                bail!(
                    "127.0.0.1:{port} is in use (another lks up of the examples?); the Node example needs it"
                );
            }
        }
    }
    let ws = base.join("ws");
    lks_e2e::copy_web_and_api_examples(&ws);
    let t = Instant::now();
    let mut up = UpRun::start(&ws, &["--runtime", "docker", "frontend", "--local", "web"])?;
    up.wait(&["web", "[ready]"], Duration::from_secs(300))?;
    let startup = t.elapsed();
    println!("   lks up: web ready after {}", fmt_ms(ms(startup)));
    let first = http_get(EXAMPLE_PORTS[0], "/").unwrap_or_default();
    if !first.starts_with("hello from web; api says: hello from api") {
        bail!("web answered {first:?} at first");
    }
    let server = ws.join("web/server.js");
    let original = std::fs::read_to_string(&server)?;
    let mut r = UpEdits {
        response: Vec::new(),
        synced_says: Vec::new(),
        app_listening: Vec::new(),
        startup,
    };
    for i in 0..cfg.up_edits {
        let greeting = format!("hello from web, edit {}", i + 1);
        let text = with_greeting(&original, &greeting)?;
        let want = format!("{greeting}; api says: hello from api");
        up.take();
        let t0 = Instant::now();
        std::fs::write(&server, text)?;
        let answered = loop {
            let body = http_get(EXAMPLE_PORTS[0], "/");
            if body.as_deref().is_some_and(|b| b.starts_with(&want)) {
                break t0.elapsed();
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!(
                    "edit {}: web never answered the new greeting (last answer {body:?})\n{}",
                    i + 1,
                    up.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        r.response.push(ms(answered));
        // Let lks up finish the cycle (readiness again) before the next edit.
        std::thread::sleep(Duration::from_millis(200));
        for (at, line) in up.take() {
            if !line.starts_with("web ") {
                continue;
            }
            if line.contains(" synced ") {
                if let Some(v) = trailing_ms(&line) {
                    r.synced_says.push(v);
                }
            } else if line.contains("web listening on") {
                r.app_listening.push(ms(at.saturating_duration_since(t0)));
            }
        }
    }
    println!(
        "   edit -> new response:              {}",
        spread(&r.response)
    );
    println!(
        "   lks says `web synced ... in X ms`: {}",
        spread(&r.synced_says)
    );
    println!(
        "   `web listening on` reached us at:  {}",
        spread(&r.app_listening)
    );
    let status = lks_e2e::terminate(&mut up.child, "lks up", Duration::from_secs(30));
    if !status.success() {
        bail!("lks up exited with {status} on SIGTERM");
    }
    Ok(r)
}

// ---------------------------------------------------------------------------

fn run(cfg: &Config) -> anyhow::Result<Vec<Row>> {
    docker(&["info", "--format", "{{.ServerVersion}}"])
        .context("the Docker engine does not answer (tests/run.sh starts dockerd)")?;
    docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE]).with_context(|| {
        format!("the image {IMAGE} is missing: build it with images/base/build.sh")
    })?;
    let agent = static_agent()?;
    clean_up_on_signals()?;
    remove_stale_containers();

    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let engine = docker(&[
        "info",
        "--format",
        "{{.ServerVersion}}, storage driver {{.Driver}}",
    ])?;
    let tmp = scratch_dir("lks-bench-docker.")?;
    let base = tmp.path();
    cleanup_list().dirs.push(base.to_path_buf());
    println!(
        "lks-bench-docker{}: {} files / {} MB tree, {} runs, {} edits, {} lks up edits",
        if cfg.smoke { " --smoke" } else { "" },
        cfg.files,
        cfg.mb,
        cfg.runs,
        cfg.edits,
        cfg.up_edits
    );
    println!(
        "  machine: {} CPUs ({model}), kernel {kernel}, Docker {engine}; {} build; local tree in {} ({})",
        cpus(),
        profile(),
        base.display(),
        fs_kind(base)
    );
    println!(
        "  binaries: {}, static agent {}",
        bin("lks").display(),
        agent.display()
    );

    let src = base.join("src");
    let files = generate_source(&src, cfg.files, cfg.dirs, cfg.mb);
    let mut rows = Vec::new();
    let mut containers: Vec<Container> = Vec::new();

    // 1.
    let init = measure_initial(cfg, &src, &agent, &mut containers)?;
    let (cold_lks, cold_tar) = (median(&init.cold_lks), median(&init.cold_tar));
    let cold_ratio = cold_lks / cold_tar;
    rows.push(Row {
        measure: format!("cold initial sync, median of {}", cfg.runs),
        ours: fmt_ms(cold_lks),
        baseline: format!("tar|exec {}", fmt_ms(cold_tar)),
        ratio: format!("{cold_ratio:.2}x"),
        target: "<= 0.5x".into(),
        pass: Some(cold_ratio <= 0.5),
    });
    let (warm_lks, warm_tar) = (median(&init.warm_lks), median(&init.warm_tar));
    let warm_ratio = warm_lks / warm_tar;
    rows.push(Row {
        measure: format!(
            "warm resync (no change, lks sent {}), median of {}",
            fmt_bytes(init.warm_bytes),
            cfg.runs
        ),
        ours: fmt_ms(warm_lks),
        baseline: format!("tar|exec {}", fmt_ms(warm_tar)),
        ratio: format!("{warm_ratio:.3}x"),
        target: "<= 0.1x".into(),
        pass: Some(warm_ratio <= 0.1),
    });

    // 2.
    let c = containers.last().expect("a container");
    let edits = measure_edits(cfg, &src, &files[files.len() / 2], c)?;
    let lks_edit = if edits.lks.is_empty() {
        &edits.lks_says
    } else {
        &edits.lks
    };
    let n = edits.tar.len();
    for (p, target) in [(50.0, true), (99.0, false)] {
        let (ours, theirs) = (percentile(lks_edit, p), percentile(&edits.tar, p));
        let speedup = theirs / ours;
        rows.push(Row {
            measure: format!("single-file edit -> applied, p{p:.0} ({n} edits)"),
            ours: fmt_ms(ours),
            baseline: format!("exec tar {}", fmt_ms(theirs)),
            ratio: format!("{speedup:.1}x faster"),
            target: if target { ">= 10x faster" } else { "-" }.into(),
            pass: target.then_some(speedup >= 10.0),
        });
    }
    rows.push(Row::info(
        "single-file edit, p50 as lks reports it (event -> ack)".into(),
        fmt_ms(percentile(&edits.lks_says, 50.0)),
        format!("exec true {}", fmt_ms(percentile(&edits.exec_floor, 50.0))),
    ));

    // The containers go before lks up starts its own.
    drop(containers);

    // 3.
    let up = measure_up(cfg, base)?;
    let n = up.response.len();
    rows.push(Row {
        measure: format!("lks up docker, Node edit -> new response, p50 ({n} edits)"),
        ours: fmt_ms(percentile(&up.response, 50.0)),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "<= 500 ms".into(),
        pass: Some(percentile(&up.response, 50.0) <= 500.0),
    });
    rows.push(Row::info(
        format!("lks up docker, Node edit -> new response, p99 ({n} edits)"),
        fmt_ms(percentile(&up.response, 99.0)),
        "-".into(),
    ));
    rows.push(Row::info(
        "  of which: lks says synced+restarted (p50)".into(),
        fmt_ms(percentile(&up.synced_says, 50.0)),
        "-".into(),
    ));
    rows.push(Row::info(
        "  of which: restarted app printed `listening` (p50)".into(),
        fmt_ms(percentile(&up.app_listening, 50.0)),
        "-".into(),
    ));
    rows.push(Row::info(
        "lks up docker: start -> web ready (build, push, run)".into(),
        fmt_ms(ms(up.startup)),
        "-".into(),
    ));

    tmp.close().context("remove the temporary directory")?;
    Ok(rows)
}

fn main() -> std::process::ExitCode {
    let details = |cfg: &Config, took: Duration| {
        format!(
            "{} files / {} MB, {} runs, {} edits, {} lks up edits; {} build, {} CPUs; {:.0} s",
            cfg.files,
            cfg.mb,
            cfg.runs,
            cfg.edits,
            cfg.up_edits,
            profile(),
            cpus(),
            took.as_secs_f64()
        )
    };
    lks_e2e::bench::main("lks-bench-docker", Config::parse, run, details, &NOTES)
}
