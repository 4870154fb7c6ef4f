//! `lks-bench-scale`: N services under one `lks up` (local runtime) on this
//! machine, beside the same N apps started as plain processes in the same run.
//!
//! The workspace it generates: `shared`, and `svc-001`..`svc-(N-1)`, each a
//! small Python HTTP app (`app.py` answers with the content `greeting.txt` had
//! when it started) with an HTTP readiness check on a free port; every other
//! service depends on `shared`. It measures
//! - the time from `lks up` to all N `[ready]` (and the plain processes' time
//!   to all answering, the baseline);
//! - `lks`'s own CPU (utime + stime) over an idle window once all are ready,
//!   and its resident memory (VmRSS, and the peak VmHWM);
//! - edits while all run: `greeting.txt` of one service after another is
//!   rewritten, and the time until that service answers with the new text
//!   (sync, restart of the app, its start) is recorded.
//!
//! `lks` starts with the soft open-files limit at 1024, the usual default,
//! whatever this shell's is (`--nofile N` to change it).
//!
//! ```text
//! cargo build --release --workspace --bins && ./target/release/lks-bench-scale
//! cargo run -p lks-e2e --bin lks-bench-scale -- --smoke   # 20 services, 5 edits
//! ```

use anyhow::{Context, bail};
use lks_e2e::bench::{Args, Row, fmt_bytes, fmt_ms, ms, percentile};
use lks_e2e::{bin, free_port, http_get, lines, stop_child};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: lks-bench-scale [--smoke] [--services N] [--edits N] [--idle SECONDS] [--nofile N]

  --services N   services in the workspace (default 300; --smoke: 20)
  --edits N      edits measured once all are ready (default 30; --smoke: 5)
  --idle S       seconds lks's idle CPU is measured over (default 20; --smoke: 5)
  --nofile N     lks's soft open-files limit (default 1024, the usual default)";

/// The app every service runs: it reads its greeting once, at start, so an
/// edit shows in its answers only after lks restarted it.
const APP: &str = r#"import http.server, os
greeting = open("greeting.txt", "rb").read().strip()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(greeting)))
        self.end_headers()
        self.wfile.write(greeting)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

struct Config {
    services: usize,
    edits: usize,
    idle: Duration,
    nofile: u64,
}

struct Service {
    name: String,
    port: u16,
    dir: PathBuf,
}

fn main() -> ExitCode {
    lks_e2e::bench::main(
        "lks-bench-scale",
        parse,
        run,
        |c, took| {
            format!(
                "{} services, {} edits, idle window {} s, lks soft nofile {}, {} build, {} CPUs, {:.0} s",
                c.services,
                c.edits,
                c.idle.as_secs(),
                c.nofile,
                lks_e2e::bench::profile(),
                lks_e2e::bench::cpus(),
                took.as_secs_f64()
            )
        },
        &[
            "baseline: the same apps started as plain processes (no lks, no agents), \
             in the same run.",
            "idle CPU and RSS are lks's own process; its agents are counted apart (agents).",
            "an edit rewrites one service's greeting.txt; it is measured until that \
             service answers with the new text (sync, restart, the app's start).",
        ],
    )
}

fn parse(args: std::iter::Skip<std::env::Args>) -> anyhow::Result<Config> {
    let a = Args::parse(
        args,
        &["--services", "--edits", "--idle", "--nofile"],
        USAGE,
    )?;
    let (services, edits, idle) = if a.smoke { (20, 5, 5) } else { (300, 30, 20) };
    let services = a.number("--services", services) as usize;
    if services < 2 {
        bail!("--services: at least 2 (shared and one that depends on it)\n\n{USAGE}");
    }
    Ok(Config {
        services,
        edits: a.number("--edits", edits) as usize,
        idle: Duration::from_secs(a.number("--idle", idle)),
        nofile: a.number("--nofile", 1024),
    })
}

fn run(c: &Config) -> anyhow::Result<Vec<Row>> {
    which_python()?;
    let tmp = lks_e2e::bench::scratch_dir("lks-bench-scale")?;
    let services = generate(tmp.path(), c.services)?;
    println!(
        "lks-bench-scale: {} services in {}",
        services.len(),
        tmp.path().display()
    );

    let plain = plain_baseline(&services)?;
    println!(
        "plain processes: all {} answering after {}",
        services.len(),
        fmt_ms(ms(plain))
    );

    let mut lks = Up::start(tmp.path(), c.nofile)?;
    let ready = lks.wait_all_ready(&services, Duration::from_secs(60 + 2 * c.services as u64))?;
    println!(
        "lks up: all {} ready after {}",
        services.len(),
        fmt_ms(ms(ready))
    );
    for s in &services {
        if http_get(s.port, "/").is_none() {
            bail!(
                "{} is [ready] but does not answer on port {}",
                s.name,
                s.port
            );
        }
    }

    // Let the start-up's work (first syncs, readiness checks) end first.
    std::thread::sleep(Duration::from_secs(3));
    let idle = lks.idle_cpu(c.idle)?;
    let rss = lks.memory()?;
    let agents = lks.agents()?;
    println!(
        "lks idle: {:.2}% of one CPU over {} s; RSS {} (peak {}); {} agents, {} together",
        idle,
        c.idle.as_secs(),
        fmt_bytes(rss.0),
        fmt_bytes(rss.1),
        agents.0,
        fmt_bytes(agents.1)
    );

    let edits = edit_loop(&services, c.edits)?;
    lks.stop();

    let p50 = percentile(&edits, 50.0);
    let p99 = percentile(&edits, 99.0);
    let ratio = ready.as_secs_f64() / plain.as_secs_f64().max(1e-3);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    Ok(vec![
        Row {
            measure: format!("time to all {} ready", services.len()),
            ours: fmt_ms(ms(ready)),
            baseline: fmt_ms(ms(plain)),
            ratio: format!("{ratio:.1}x"),
            target: "all ready".into(),
            pass: Some(true),
        },
        Row {
            measure: format!("lks idle CPU ({} s)", c.idle.as_secs()),
            ours: format!("{idle:.2}%"),
            baseline: "-".into(),
            ratio: "-".into(),
            target: "<= 1%".into(),
            pass: Some(idle <= 1.0),
        },
        Row {
            measure: "lks RSS, all running".into(),
            ours: format!("{:.1} MiB", mib(rss.0)),
            baseline: "-".into(),
            ratio: "-".into(),
            target: "<= 100 MiB".into(),
            pass: Some(mib(rss.0) <= 100.0),
        },
        Row::info(
            "lks peak RSS".into(),
            format!("{:.1} MiB", mib(rss.1)),
            "-".into(),
        ),
        Row::info(
            format!("agents' RSS ({} processes)", agents.0),
            format!("{:.1} MiB", mib(agents.1)),
            "-".into(),
        ),
        Row {
            measure: format!("edit -> new response, p50 ({} edits)", edits.len()),
            ours: fmt_ms(p50),
            baseline: "-".into(),
            ratio: "-".into(),
            target: "<= 300 ms".into(),
            pass: Some(p50 <= 300.0),
        },
        Row::info("edit -> new response, p99".into(), fmt_ms(p99), "-".into()),
    ])
}

/// Writes the workspace: `lks.yaml`, and a directory per service.
fn generate(ws: &Path, n: usize) -> anyhow::Result<Vec<Service>> {
    let mut ports = BTreeSet::new();
    while ports.len() < n {
        ports.insert(free_port());
    }
    let mut out = Vec::with_capacity(n);
    for (i, port) in ports.into_iter().enumerate() {
        let name = if i == 0 {
            "shared".to_string()
        } else {
            format!("svc-{i:03}")
        };
        let dir = ws.join(&name);
        std::fs::create_dir_all(&dir)?;
        let deps = if i % 2 == 1 { "deps: [shared]\n" } else { "" };
        std::fs::write(
            dir.join("lks.service.yaml"),
            format!(
                "name: {name}\ncommand: python3 app.py\nenv:\n  PORT: \"{port}\"\n\
                 ports: [{port}]\n{deps}readiness:\n  http: http://127.0.0.1:{port}/\n"
            ),
        )?;
        std::fs::write(dir.join("app.py"), APP)?;
        std::fs::write(dir.join("greeting.txt"), format!("{name} start\n"))?;
        out.push(Service { name, port, dir });
    }
    std::fs::write(ws.join("lks.yaml"), "services: [\"*/lks.service.yaml\"]\n")?;
    Ok(out)
}

/// Starts every app as a plain process and returns the time until all answer.
fn plain_baseline(services: &[Service]) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut children = Vec::with_capacity(services.len());
    let result = (|| {
        for s in services {
            let child = Command::new("python3")
                .arg("app.py")
                .current_dir(&s.dir)
                .env("PORT", s.port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting python3 app.py")?;
            children.push(Killed(child));
        }
        wait_answering(services, t, Duration::from_secs(120))
    })();
    drop(children);
    // The ports must be free again before lks starts the same apps.
    for s in services {
        let t = Instant::now();
        while std::net::TcpListener::bind(("127.0.0.1", s.port)).is_err() {
            if t.elapsed() > Duration::from_secs(10) {
                bail!("port {} still taken after the plain run", s.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    result
}

fn wait_answering(services: &[Service], t: Instant, timeout: Duration) -> anyhow::Result<Duration> {
    let mut waiting: Vec<&Service> = services.iter().collect();
    while !waiting.is_empty() {
        waiting.retain(|s| http_get(s.port, "/").is_none());
        if t.elapsed() > timeout {
            bail!("{} apps did not answer within {timeout:?}", waiting.len());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(t.elapsed())
}

/// `lks up` on the workspace; stopped (SIGTERM, then SIGKILL) when dropped.
struct Up {
    child: Child,
    ws: PathBuf,
    out: std::sync::mpsc::Receiver<String>,
    started: Instant,
}

impl Up {
    fn start(ws: &Path, nofile: u64) -> anyhow::Result<Up> {
        let mut cmd = Command::new(bin("lks"));
        cmd.args(["up", "-f"])
            .arg(ws.join("lks.yaml"))
            .env("NO_COLOR", "1")
            .env("LKS_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(ws.join("lks.stderr"))?);
        set_soft_nofile(&mut cmd, nofile);
        let started = Instant::now();
        let mut child = cmd.spawn().context("starting lks up")?;
        let out = lines(child.stdout.take().context("lks up's stdout")?);
        Ok(Up {
            child,
            ws: ws.to_path_buf(),
            out,
            started,
        })
    }

    /// Waits for a `[ready]` line from every service; fails on the first error.
    fn wait_all_ready(
        &mut self,
        services: &[Service],
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let mut waiting: HashSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
        while !waiting.is_empty() {
            let left = timeout.saturating_sub(self.started.elapsed());
            let line = match self.out.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => bail!(
                    "lks up: {} services not ready after {:?} (e.g. {:?})",
                    waiting.len(),
                    self.started.elapsed(),
                    waiting.iter().take(3).collect::<Vec<_>>()
                ),
            };
            let Some((name, text)) = line.split_once(" | ") else {
                continue;
            };
            if text.contains("[error") {
                bail!("lks up: {line}{}", self.agent_log_tail(name.trim()));
            }
            if text.trim() == "[ready]" {
                waiting.remove(name.trim());
            }
        }
        Ok(self.started.elapsed())
    }

    /// The end of `service`'s agent log, to explain an error.
    fn agent_log_tail(&self, service: &str) -> String {
        let log = self.ws.join(".lks").join(service).join("agent.log");
        match std::fs::read_to_string(&log) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n  ");
                let stderr =
                    std::fs::read_to_string(self.ws.join("lks.stderr")).unwrap_or_default();
                let mine: Vec<&str> = stderr.lines().filter(|l| l.contains(service)).collect();
                let mine = mine[mine.len().saturating_sub(10)..].join("\n  ");
                format!(
                    "\nthe end of {}:\n  {tail}\nlks's log of {service}:\n  {mine}",
                    log.display()
                )
            }
            Err(e) => format!("\n(no agent log at {}: {e})", log.display()),
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// lks's CPU over `window`, in percent of one CPU.
    fn idle_cpu(&self, window: Duration) -> anyhow::Result<f64> {
        let ticks = rustix::param::clock_ticks_per_second();
        let before = cpu_ticks(self.pid())?;
        let t = Instant::now();
        std::thread::sleep(window);
        let used = (cpu_ticks(self.pid())? - before) as f64 / ticks as f64;
        Ok(100.0 * used / t.elapsed().as_secs_f64())
    }

    /// lks's VmRSS and VmHWM, in bytes.
    fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let m = lks_e2e::proc_memory(self.child.id()).context("lks is gone")?;
        Ok((m.rss, m.peak))
    }

    /// How many agents lks runs (its children), and their RSS together.
    fn agents(&self) -> anyhow::Result<(usize, u64)> {
        let children: Vec<u32> = lks_e2e::all_processes()
            .into_iter()
            .filter(|p| p.ppid == self.child.id())
            .map(|p| p.pid)
            .collect();
        let rss = children
            .iter()
            .filter_map(|&pid| lks_e2e::proc_memory(pid))
            .map(|m| m.rss)
            .sum();
        Ok((children.len(), rss))
    }

    fn stop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(30));
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Edits one service after another (spread over the workspace) and returns
/// each edit's time to the new answer, in ms.
fn edit_loop(services: &[Service], edits: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(edits);
    let step = (services.len() / edits.max(1)).max(1);
    for i in 0..edits {
        let s = &services[(i * step + i / services.len()) % services.len()];
        let greeting = format!("{} edit {i}", s.name);
        let t = Instant::now();
        std::fs::write(s.dir.join("greeting.txt"), format!("{greeting}\n"))?;
        loop {
            if http_get(s.port, "/").as_deref().map(str::trim) == Some(greeting.as_str()) {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!(
                    "{}: edit {i} never showed up (last answer {:?})",
                    s.name,
                    http_get(s.port, "/")
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        out.push(ms(t.elapsed()));
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(out)
}

/// Stopped (SIGTERM, SIGKILL after 5 s) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        stop_child(&mut self.0, Duration::from_secs(5));
    }
}

/// Sets the soft RLIMIT_NOFILE of the spawned process (the hard one is kept).
fn set_soft_nofile(cmd: &mut Command, soft: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    use std::os::unix::process::CommandExt;
    let hard = getrlimit(Resource::Nofile).maximum;
    let limit = Rlimit {
        current: Some(hard.map_or(soft, |h| soft.min(h))),
        maximum: hard,
    };
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || setrlimit(Resource::Nofile, limit).map_err(Into::into));
    }
}

/// The services are Python apps.
fn which_python() -> anyhow::Result<()> {
    let ok = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("python3 is needed: the services are Python apps (apt-get install python3)");
    }
    Ok(())
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> anyhow::Result<u64> {
    lks_e2e::proc_stat(pid as u32)
        .map(|s| s.cpu_ticks)
        .with_context(|| format!("no /proc/{pid}/stat: did lks exit?"))
}
