//! `lks-bench-up`: edit -> new HTTP response for a Node.js service under
//! `lks up` (local runtime), beside npm's `nodemon` restarting the same app
//! in the same run.
//!
//! Each edit rewrites `server.js` with a new greeting, then polls the service
//! every 2 ms until it answers with it. nodemon runs with its defaults (what
//! its users get) from a local `npm install` (`--nodemon PATH` to use another).
//!
//! ```text
//! cargo build --release --workspace --bins && ./target/release/lks-bench-up
//! cargo run -p lks-e2e --bin lks-bench-up -- --smoke      # a quick run, 5 edits
//! ```

use anyhow::{Context, bail};
use lks_e2e::bench::{ms, verdict};
use lks_e2e::{bin, free_port, http_get, lines, stop_child};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: lks-bench-up [--smoke] [--edits N] [--nodemon PATH]";

fn main() -> anyhow::Result<()> {
    let mut edits = 30;
    let mut nodemon: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--smoke" => edits = 5,
            "--edits" => edits = args.next().context(USAGE)?.parse().context(USAGE)?,
            "--nodemon" => nodemon = Some(args.next().context(USAGE)?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let tmp = tempfile::tempdir()?;
    let lks = measure_lks(tmp.path(), edits)?;
    println!("lks up (local runtime): {}", summary(&lks));
    // The baseline is best effort: without npm (or its registry) lks's own
    // figures are still printed, and the run says what is missing.
    let nodemon = nodemon
        .map(|p| std::path::absolute(&p).context("the --nodemon path"))
        .unwrap_or_else(|| install_nodemon(tmp.path()))
        .and_then(|path| measure_nodemon(tmp.path(), &path, edits));
    let nodemon = match nodemon {
        Ok(n) => {
            println!("nodemon (defaults):     {}", summary(&n));
            Some(n)
        }
        Err(e) => {
            println!("nodemon: not measured: {e:#}");
            None
        }
    };
    let p50 = percentile(&lks, 50.0);
    let p99 = percentile(&lks, 99.0);
    println!();
    println!("| edit -> new HTTP response ({edits} edits) | p50 | p99 | target |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| lks up, Node.js service | {p50:.0} ms | {p99:.0} ms | p50 <= 300 ms {}, p99 <= 1000 ms {} |",
        verdict(p50 <= 300.0),
        verdict(p99 <= 1000.0)
    );
    if let Some(n) = nodemon {
        let np50 = percentile(&n, 50.0);
        let ratio = p50 / np50;
        println!(
            "| nodemon, same app | {np50:.0} ms | {:.0} ms | |",
            percentile(&n, 99.0)
        );
        println!(
            "| ratio lks / nodemon (p50) | {ratio:.2}x | | <= 1.5x {} |",
            verdict(ratio <= 1.5)
        );
    }
    Ok(())
}

fn server(port: u16, greeting: &str) -> String {
    format!(
        "const http = require('http');\n\
         http.createServer((req, res) => res.end('{greeting}\\n'))\n\
           .listen({port}, '127.0.0.1');\n"
    )
}

fn get(port: u16) -> Option<String> {
    http_get(port, "/").map(|b| b.trim().to_string())
}

/// Edits `file` `edits` times and returns each edit's latency in ms.
fn edit_loop(file: &Path, port: u16, edits: usize, label: &str) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(edits);
    for i in 0..edits {
        let greeting = format!("{label} edit {i}");
        let t = Instant::now();
        std::fs::write(file, server(port, &greeting))?;
        loop {
            if get(port).as_deref() == Some(greeting.as_str()) {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!(
                    "{label}: edit {i} never showed up (last answer {:?})",
                    get(port)
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        out.push(ms(t.elapsed()));
        std::thread::sleep(Duration::from_millis(150));
    }
    Ok(out)
}

fn wait_for(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let t = Instant::now();
    while get(port).is_none() {
        if t.elapsed() > timeout {
            bail!("nothing answered on port {port} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Stopped (SIGTERM, SIGKILL after 10 s) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        stop_child(&mut self.0, Duration::from_secs(10));
    }
}

fn measure_lks(tmp: &Path, edits: usize) -> anyhow::Result<Vec<f64>> {
    let ws = tmp.join("lks-ws");
    let port = free_port();
    std::fs::create_dir_all(ws.join("web"))?;
    std::fs::write(ws.join("lks.yaml"), "services: [web/lks.service.yaml]\n")?;
    std::fs::write(
        ws.join("web/lks.service.yaml"),
        format!(
            "name: web\ncommand: node server.js\nreadiness:\n  http: http://127.0.0.1:{port}/\n"
        ),
    )?;
    let file = ws.join("web/server.js");
    std::fs::write(&file, server(port, "start"))?;
    let mut child = Command::new(bin("lks"))
        .args(["up", "-f"])
        .arg(ws.join("lks.yaml"))
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting lks up")?;
    let out = lines(child.stdout.take().unwrap());
    let _guard = Killed(child);
    let t = Instant::now();
    loop {
        match out.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if l.contains("[ready]") => break,
            Ok(l) if l.contains("error") => bail!("lks up: {l}"),
            Ok(_) => {}
            Err(_) => bail!("lks up was not ready within {:?}", t.elapsed()),
        }
    }
    edit_loop(&file, port, edits, "lks")
}

fn install_nodemon(tmp: &Path) -> anyhow::Result<PathBuf> {
    let cached = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-tools/node_modules/.bin/nodemon");
    if cached.exists() {
        return Ok(cached);
    }
    let dir = tmp.join("nodemon");
    std::fs::create_dir_all(&dir)?;
    let st = Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .arg("nodemon")
        .status()
        .context("running npm install nodemon")?;
    if !st.success() {
        bail!("npm install nodemon failed ({st})");
    }
    Ok(dir.join("node_modules/.bin/nodemon"))
}

fn measure_nodemon(tmp: &Path, nodemon: &Path, edits: usize) -> anyhow::Result<Vec<f64>> {
    let dir = tmp.join("nodemon-app");
    std::fs::create_dir_all(&dir)?;
    let port = free_port();
    let file = dir.join("server.js");
    std::fs::write(&file, server(port, "start"))?;
    let child = Command::new(nodemon)
        .arg("server.js")
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nodemon")?;
    let _guard = Killed(child);
    wait_for(port, Duration::from_secs(30))?;
    edit_loop(&file, port, edits, "nodemon")
}

/// The element at the rounded index `p`% of the way through the sorted `v`
/// (panics when empty). Not the nearest-rank `lks_e2e::bench::percentile` of
/// the other benchmarks: the two differ for some sizes (p50 of 30 edits), so
/// this one is kept for figures comparable with earlier runs of this program.
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (s.len() as f64 - 1.0)).round() as usize;
    s[i.min(s.len() - 1)]
}

fn summary(v: &[f64]) -> String {
    format!(
        "p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} edits",
        percentile(v, 50.0),
        percentile(v, 90.0),
        percentile(v, 99.0),
        percentile(v, 100.0),
        v.len()
    )
}
