//! What the benchmarks (`lks-bench`, `lks-bench-docker`, `lks-bench-kube`, `lks-bench-up`)
//! share: their statistics (median, nearest-rank percentiles), the way they
//! print figures, the result table (plain and Markdown) with its summary, and
//! the steps every run takes (a generated source tree, a scratch directory,
//! `lks sync --once`, a timed shell pipeline).
//!
//! Everything here returns `anyhow` errors or prints: a benchmark reports a
//! failing tool and exits, it does not panic.

use anyhow::{Context, bail};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Arguments and the machine
// ---------------------------------------------------------------------------

/// A benchmark's command line: `--smoke` (a small, quick run), `-h`/`--help`
/// (prints the usage and exits), and options that each take a positive
/// number.
pub struct Args {
    /// Whether `--smoke` was given.
    pub smoke: bool,
    numbers: Vec<(String, u64)>,
}

impl Args {
    /// Reads `args` (without the program name); `numbers` names the options
    /// that take a number. The errors end with `usage`.
    pub fn parse(
        args: impl Iterator<Item = String>,
        numbers: &[&str],
        usage: &str,
    ) -> anyhow::Result<Args> {
        let args: Vec<String> = args.collect();
        let mut out = Args {
            smoke: false,
            numbers: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--smoke" => out.smoke = true,
                "-h" | "--help" => {
                    println!("{usage}");
                    std::process::exit(0);
                }
                name if numbers.contains(&name) => {
                    let v = it
                        .next()
                        .with_context(|| format!("{name} needs a number\n\n{usage}"))?;
                    let n = v.parse::<u64>().ok().filter(|&n| n > 0).with_context(|| {
                        format!("{name}: {v:?} is not a positive number\n\n{usage}")
                    })?;
                    out.numbers.push((name.to_string(), n));
                }
                other => bail!("unknown argument {other:?}\n\n{usage}"),
            }
        }
        Ok(out)
    }

    /// The number given (last) with the option `name`, else `default`.
    pub fn number(&self, name: &str, default: u64) -> u64 {
        self.numbers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map_or(default, |&(_, v)| v)
    }
}

/// `debug` or `release`: the profile these binaries were built in.
pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// The CPUs this process may use (0 when unknown).
pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

/// The kind of filesystem `p` is on, when it is a common one.
pub fn fs_kind(p: &Path) -> &'static str {
    match rustix::fs::statfs(p).map(|s| s.f_type as u64) {
        Ok(0x0102_1994) => "tmpfs",
        Ok(0xEF53) => "ext4",
        Ok(0x5846_5342) => "xfs",
        Ok(0x9123_683E) => "btrfs",
        Ok(0x794C_7630) => "overlayfs",
        Ok(_) => "other filesystem",
        Err(_) => "unknown filesystem",
    }
}

/// Flushes dirty pages so writeback from an earlier step does not land in the
/// next measurement (outside every timed region).
pub fn settle() {
    rustix::fs::sync();
}

// ---------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------

/// A temporary directory `PREFIX*` under `std::env::temp_dir()` (`TMPDIR`).
pub fn scratch_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(std::env::temp_dir())
        .context("create a temporary directory")
}

/// Generates the source tree (`files` files in `dirs` directories, about
/// `mb` MB in all) under `src` with [`crate::generate_tree_in`] and prints
/// what it made; returns the files' paths.
pub fn generate_source(src: &Path, files: usize, dirs: usize, mb: u64) -> Vec<PathBuf> {
    let t = Instant::now();
    let files = crate::generate_tree_in(src, files, dirs, mb * 1_000_000, 1);
    let total: u64 = files
        .iter()
        .map(|p| p.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "  generated {} files in {} directories, {} in {}",
        files.len(),
        dirs,
        fmt_bytes(total),
        fmt_ms(ms(t.elapsed()))
    );
    files
}

/// The directories of a generated tree of `files` files when none are
/// given: one for every ten files, as in a `node_modules` tree.
pub fn default_dirs(files: usize) -> usize {
    (files / 10).max(1)
}

/// Runs `lks sync SRC --to URL --once` with `LKS_TOKEN=token`; returns its
/// wall time and its `synced: ...` line, or fails with its output.
pub fn lks_sync_once(src: &Path, url: &str, token: &str) -> anyhow::Result<(Duration, String)> {
    lks_sync_once_peak(src, url, token).map(|(wall, line, _)| (wall, line))
}

/// [`lks_sync_once`], and the most `lks` was resident meanwhile (bytes;
/// its VmHWM as last read, every 5 ms, before it ended).
pub fn lks_sync_once_peak(
    src: &Path,
    url: &str,
    token: &str,
) -> anyhow::Result<(Duration, String, u64)> {
    let t0 = Instant::now();
    let child = crate::lks_sync()
        .arg(src)
        .args(["--to", url, "--once"])
        .env("LKS_TOKEN", token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("run lks sync --once")?;
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(m) = crate::proc_memory(pid) {
                    peak = peak.max(m.peak);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let out = child.wait_with_output();
    let wall = t0.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0);
    let out = out.context("wait for lks sync --once")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "lks sync --once failed ({}):\n{}{stdout}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("synced: "))
        .with_context(|| format!("no `synced:` line from lks sync --once: {stdout:?}"))?;
    Ok((wall, line.to_string(), peak))
}

/// Runs `sh -c SCRIPT sh ARGS...` (the pipeline named `what` in errors);
/// returns its wall time. Fails when it fails or writes to stderr.
pub fn timed_sh(what: &str, script: &str, args: &[&OsStr]) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(args)
        .output()
        .with_context(|| format!("run sh -c '{what}'"))?;
    let wall = t0.elapsed();
    if !out.status.success() || !out.stderr.is_empty() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(wall)
}

// ---------------------------------------------------------------------------
// Statistics and formatting
// ---------------------------------------------------------------------------

/// The median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile of `v` (p in 0..=100; NaN when empty).
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `12.3 ms`, `123 ms`, `1.23 s`; `-` for NaN (no figure).
pub fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// `123 B`, `12.3 KiB`, `1.2 MiB`.
pub fn fmt_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// `p50 X, p90 Y, p99 Z, max W` of `v` (milliseconds).
pub fn spread(v: &[f64]) -> String {
    format!(
        "p50 {}, p90 {}, p99 {}, max {}",
        fmt_ms(percentile(v, 50.0)),
        fmt_ms(percentile(v, 90.0)),
        fmt_ms(percentile(v, 99.0)),
        fmt_ms(percentile(v, 100.0))
    )
}

/// `PASS` when a target was met, else `MISS`.
pub fn verdict(met: bool) -> &'static str {
    if met { "PASS" } else { "MISS" }
}

// ---------------------------------------------------------------------------
// The result table
// ---------------------------------------------------------------------------

/// One line of the result table.
pub struct Row {
    /// What was measured.
    pub measure: String,
    /// The lks figure.
    pub ours: String,
    /// The baseline's figure (`-` when there is none).
    pub baseline: String,
    /// lks against the baseline (`-` when there is none).
    pub ratio: String,
    /// The target (`-` when there is none).
    pub target: String,
    /// `Some(pass)` for figures with a target, `None` for information only.
    pub pass: Option<bool>,
}

impl Row {
    /// A row for information only: no ratio, no target.
    pub fn info(measure: String, ours: String, baseline: String) -> Row {
        Row {
            measure,
            ours,
            baseline,
            ratio: "-".into(),
            target: "-".into(),
            pass: None,
        }
    }

    /// `PASS`, `MISS` or `info`.
    fn result(&self) -> &'static str {
        self.pass.map_or("info", verdict)
    }

    fn cells(&self) -> [&str; 6] {
        [
            &self.measure,
            &self.ours,
            &self.baseline,
            &self.ratio,
            &self.target,
            self.result(),
        ]
    }
}

const HEADER: [&str; 6] = ["measure", "lks", "baseline", "ratio", "target", "result"];

/// Prints `rows` as an aligned table, or as a Markdown table.
pub fn print_table(rows: &[Row], markdown: bool) {
    let mut width = HEADER.map(|h| h.chars().count());
    for r in rows {
        for (w, c) in width.iter_mut().zip(r.cells()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        if markdown {
            println!("| {} |", padded.join(" | "));
        } else {
            println!("  {}", padded.join("  ").trim_end());
        }
    };
    line(HEADER);
    if markdown {
        let dashes: Vec<String> = width.iter().map(|&w| "-".repeat(w)).collect();
        println!("|-{}-|", dashes.join("-|-"));
    } else {
        let total: usize = width.iter().sum::<usize>() + 2 * (width.len() - 1);
        println!("  {}", "-".repeat(total));
    }
    for r in rows {
        line(r.cells());
    }
}

/// `M/N targets met`, followed by ` (MISS: measure; measure)` when some were
/// missed.
pub fn targets_met(rows: &[Row]) -> String {
    let with_target: Vec<&Row> = rows.iter().filter(|r| r.pass.is_some()).collect();
    let met = with_target.iter().filter(|r| r.pass == Some(true)).count();
    let missed: Vec<&str> = with_target
        .iter()
        .filter(|r| r.pass == Some(false))
        .map(|r| r.measure.as_str())
        .collect();
    let missed = if missed.is_empty() {
        String::new()
    } else {
        format!(" (MISS: {})", missed.join("; "))
    };
    format!("{met}/{} targets met{missed}", with_target.len())
}

/// A benchmark's `main`: `parse` reads the command line (on an error it prints
/// `NAME: ERROR` and exits with 2), `run` measures (on an error: `NAME: error:
/// ERROR`, exit code 1), then [`print_report`] prints the figures, with the
/// `details` of the configuration and how long `run` took.
pub fn main<C>(
    name: &str,
    parse: impl FnOnce(std::iter::Skip<std::env::Args>) -> anyhow::Result<C>,
    run: impl FnOnce(&C) -> anyhow::Result<Vec<Row>>,
    details: impl FnOnce(&C, Duration) -> String,
    notes: &[&str],
) -> ExitCode {
    let cfg = match parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let rows = match run(&cfg) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    print_report(&rows, &details(&cfg, started.elapsed()), notes);
    ExitCode::SUCCESS
}

/// The end of a run: the table, `summary: M/N targets met...; DETAILS`, the
/// same table in Markdown, and the notes that explain the figures.
pub fn print_report(rows: &[Row], details: &str, notes: &[&str]) {
    println!();
    print_table(rows, false);
    println!();
    println!("summary: {}; {details}", targets_met(rows));
    println!();
    print_table(rows, true);
    println!();
    for n in notes {
        println!("{n}");
    }
}

/// From now on, on SIGINT, SIGTERM or SIGHUP: says `NAME: interrupted`,
/// runs `clean_up` (Drop guards do not run on a signal), and exits with 130.
pub fn on_signals(
    name: &'static str,
    clean_up: impl FnOnce() + Send + 'static,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a runtime for the signal handler")?;
    let mut signals = Vec::new();
    for kind in [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ] {
        let _enter = rt.enter();
        signals.push(signal(kind).context("install a signal handler")?);
    }
    std::thread::spawn(move || {
        rt.block_on(futures::future::select_all(
            signals.iter_mut().map(|s| Box::pin(s.recv())),
        ));
        eprintln!("{name}: interrupted; removing what it started");
        clean_up();
        std::process::exit(130);
    });
    Ok(())
}

/// Runs `cmd` with `input` on its stdin (an exec'd `tar -x`, say), from the
/// spawn to its exit; fails, with its stderr, unless it succeeds.
pub fn timed_with_input(cmd: &mut Command, input: &[u8], what: &str) -> anyhow::Result<Duration> {
    use std::io::Write;
    use std::process::Stdio;
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {what}"))?;
    child
        .stdin
        .take()
        .with_context(|| format!("{what}'s stdin"))?
        .write_all(input)?;
    let out = child.wait_with_output()?;
    let took = t0.elapsed();
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}
