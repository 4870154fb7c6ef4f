//! `lks-bench`: measures lks against plain baselines on a generated tree, with the
//! real `lks` and `lks-agent` binaries found next to this executable.
//!
//! 1. cold initial sync (`lks sync --once` into an empty agent root) vs
//!    `tar -cf - | tar -xf -` into an empty directory;
//! 2. warm resync (`lks sync --once` again, nothing changed) vs the same tar:
//!    the first (which compares both trees), then the next ones (which find
//!    both unchanged since the last and compare nothing);
//! 3. watch start (`lks sync` in watch mode, from its start until its
//!    initial sync against the synced agent is done), then edit -> applied
//!    latency in watch mode, detected with inotify on the agent's root and
//!    confirmed by blake3, and the resident memory of `lks` and the agent
//!    (their peaks, VmHWM); then the first watch of a service: `lks sync`
//!    into an empty agent, whose initial sync sends everything (its peak);
//! 4. the bytes a 1-byte change in a large file puts on the wire.
//!
//! Every lks run is checked for correctness (the trees must be equal); a wrong
//! sync or a failing tool ends the run with exit code 1. A slow figure is only
//! reported (MISS): benchmarks report, they do not fail on a slow machine.
//!
//! ```text
//! cargo build --release --workspace --bins && ./target/release/lks-bench
//! cargo run -p lks-e2e --bin lks-bench -- --smoke
//! ```
//!
//! Everything happens under `std::env::temp_dir()` (`TMPDIR`). Nothing is
//! deleted until the end: on ext4 without a journal, creating files soon after
//! many deletions is several times slower, for tar and lks alike. For steadier
//! figures on such a host, run with `TMPDIR=/dev/shm`.

use anyhow::{Context, bail};
use lks_e2e::bench::{
    Args, Row, cpus, default_dirs, fmt_bytes, fmt_ms, fs_kind, generate_source, lks_sync_once_peak,
    median, ms, percentile, profile, scratch_dir, settle, spread, timed_sh,
};
use lks_e2e::{Agent, Rng, Watch, diff, snapshot};
use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode, Watcher};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TOKEN: &str = "lks-bench-token";
const USAGE: &str = "\
usage: lks-bench [--smoke] [--files N] [--dirs N] [--mb N] [--edits N] [--big-mib N]

  --smoke      a small, quick run (300 files / 3 MB, 20 edits, a 4 MiB big file)
  --files N    files in the generated tree (default 5000; 100000 for a node_modules-sized tree)
  --dirs N     directories they are spread over (default: one per 10 files)
  --mb N       total size of the generated tree in MB (default 50)
  --edits N    single-file edits for the latency measurement (default 200)
  --big-mib N  size of the file for the delta measurement in MiB (default 64)

Build the binaries first; the real numbers come from a release build:
  cargo build --release --workspace --bins && TMPDIR=/dev/shm ./target/release/lks-bench
  TMPDIR=/dev/shm ./target/release/lks-bench --files 100000";

/// What to measure, and how much.
#[derive(Clone, Debug)]
struct Config {
    smoke: bool,
    files: usize,
    dirs: usize,
    mb: u64,
    edits: usize,
    big_mib: u64,
    cold_runs: usize,
    warm_runs: usize,
}

impl Config {
    fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Config> {
        let args = Args::parse(
            args,
            &["--files", "--dirs", "--mb", "--edits", "--big-mib"],
            USAGE,
        )?;
        let c = if args.smoke {
            Config {
                smoke: true,
                files: 300,
                dirs: 0,
                mb: 3,
                edits: 20,
                big_mib: 4,
                cold_runs: 3,
                warm_runs: 5,
            }
        } else {
            Config {
                smoke: false,
                files: 5000,
                dirs: 0,
                mb: 50,
                edits: 200,
                big_mib: 64,
                cold_runs: 3,
                warm_runs: 5,
            }
        };
        let files = args.number("--files", c.files as u64) as usize;
        Ok(Config {
            files,
            dirs: args.number("--dirs", default_dirs(files) as u64) as usize,
            mb: args.number("--mb", c.mb),
            edits: args.number("--edits", c.edits as u64) as usize,
            big_mib: args.number("--big-mib", c.big_mib),
            ..c
        })
    }
}

/// The fields of a `synced: ...`, `initial sync: ...` or `batch N: ...` line.
#[derive(Clone, Debug, Default)]
struct Summary {
    files: u64,
    deleted: u64,
    other: u64,
    bytes: u64,
    ms: f64,
}

/// Parses `... : 5 files, 0 deleted, 1 other, 1234 bytes sent, 4.2 ms`.
fn parse_summary(line: &str) -> Option<Summary> {
    let (_, fields) = line.split_once(": ")?;
    let mut s = Summary::default();
    let mut seen = 0;
    for field in fields.split(", ") {
        let (num, label) = field.trim().split_once(' ')?;
        match label {
            "files" => s.files = num.parse().ok()?,
            "deleted" => s.deleted = num.parse().ok()?,
            "other" => s.other = num.parse().ok()?,
            "bytes sent" => s.bytes = num.parse().ok()?,
            "ms" => s.ms = num.parse().ok()?,
            _ => return None,
        }
        seen += 1;
    }
    (seen == 5).then_some(s)
}

/// Runs `lks sync SRC --to URL --once`; returns its wall time and summary, or
/// fails with its stderr.
fn lks_once(src: &Path, url: &str) -> anyhow::Result<(Duration, Summary)> {
    lks_once_peak(src, url).map(|(wall, s, _)| (wall, s))
}

/// [`lks_once`], and the most `lks` was resident meanwhile (bytes).
fn lks_once_peak(src: &Path, url: &str) -> anyhow::Result<(Duration, Summary, u64)> {
    let (wall, line, peak) = lks_sync_once_peak(src, url, TOKEN)?;
    let s = parse_summary(&line).with_context(|| format!("cannot parse {line:?}"))?;
    Ok((wall, s, peak))
}

/// `tar -C src -cf - . | tar -C dst -xf -`; returns its wall time.
fn tar_copy(src: &Path, dst: &Path) -> anyhow::Result<Duration> {
    timed_sh(
        "tar | tar",
        r#"tar -C "$1" -cf - . | tar -C "$2" -xf -"#,
        &[src.as_os_str(), dst.as_os_str()],
    )
}

/// Fails unless the trees under `a` and `b` are equal.
fn verify_equal(a: &Path, b: &Path, what: &str) -> anyhow::Result<()> {
    let d = diff(&snapshot(a), &snapshot(b));
    if !d.is_empty() {
        let sample: Vec<&String> = d.iter().take(10).collect();
        bail!(
            "{what}: the trees differ in {} paths, e.g.:\n  {}",
            d.len(),
            sample
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
    Ok(())
}

const NOTES: [&str; 4] = [
    "- baseline: `tar -C src -cf - . | tar -C dst -xf -` into an empty directory (median of the cold runs); lks times are the wall time of the whole `lks sync --once` command.",
    "- edit -> applied: from just before writing a random file of the tree until the inotify event of it being renamed into place on the agent's root (content confirmed by blake3), one edit every ~20 ms.",
    "- \"as lks reports it\": the `batch N: ... X ms` lines of `lks sync` (first local file event -> the agent's ack).",
    "- delta: bytes `lks sync --once` wrote to its socket after a 1-byte change in the middle of a random file.",
];

/// Events on the agent's root: (when it was received, the paths it names).
type AgentEvent = (Instant, Vec<PathBuf>);

/// Watches the agent's root for files created or renamed into place.
fn watch_agent_root(
    root: &Path,
) -> anyhow::Result<(notify::RecommendedWatcher, mpsc::Receiver<AgentEvent>)> {
    let (tx, rx) = mpsc::channel();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let at = Instant::now();
        if let Ok(ev) = res
            && matches!(
                ev.kind,
                EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
            )
        {
            let _ = tx.send((at, ev.paths));
        }
    })
    .context("start an inotify watcher on the agent's root")?;
    w.watch(root, RecursiveMode::Recursive)
        .context("watch the agent's root")?;
    Ok((w, rx))
}

fn hash_file(p: &Path) -> Option<blake3::Hash> {
    std::fs::read(p).ok().map(|d| blake3::hash(&d))
}

/// How the arrival of an edit on the agent was noticed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Detected {
    /// An inotify create/rename event for the path, content confirmed.
    Event,
    /// No event within 50 ms; found by polling the content every 1 ms.
    Poll,
}

/// Results of the watch-mode latency measurement.
struct Latency {
    /// From the start of `lks sync` until its initial sync was done.
    start: Duration,
    ours: Vec<f64>,
    by_poll: usize,
    batches: Vec<Summary>,
    /// `lks sync`'s memory after the edits.
    memory: lks_e2e::Memory,
}

/// Takes the `batch N: ...` lines `lks sync` printed so far.
fn collect(watch: &mut Watch, batches: &mut Vec<Summary>) -> anyhow::Result<()> {
    for line in watch.stdout.try_iter() {
        if line.starts_with("batch ") {
            let s = parse_summary(&line).with_context(|| format!("cannot parse {line:?}"))?;
            batches.push(s);
        }
    }
    Ok(())
}

/// Edits random files of the tree one at a time while `lks sync` watches it,
/// measuring from just before each write until the agent's copy has the new
/// content.
fn measure_latency(
    cfg: &Config,
    src: &Path,
    dst: &Path,
    url: &str,
    files: &[PathBuf],
) -> anyhow::Result<Latency> {
    let dst = dst
        .canonicalize()
        .context("canonicalize the agent's root")?;
    let (_watcher, events) = watch_agent_root(&dst)?;
    settle();
    let t0 = Instant::now();
    let mut watch = Watch::start(src, url, TOKEN, &[]);
    let start = t0.elapsed();
    let avg = (cfg.mb * 1_000_000 / cfg.files as u64).max(1);
    let mut rng = Rng::new(7);
    let mut ours = Vec::with_capacity(cfg.edits);
    let mut by_poll = 0;
    let mut batches = Vec::new();
    for i in 0..cfg.edits {
        let path = &files[rng.below(files.len() as u64) as usize];
        let rel = path.strip_prefix(src).expect("generated under src");
        let target = dst.join(rel);
        let old = hash_file(path);
        let (data, want) = loop {
            let size = 1 + rng.below(avg * 2) as usize;
            let data = rng.bytes(size);
            let h = blake3::hash(&data);
            if Some(h) != old {
                break (data, h);
            }
        };
        while events.try_recv().is_ok() {}
        let t0 = Instant::now();
        std::fs::write(path, &data).with_context(|| format!("write {}", path.display()))?;
        let deadline = t0 + Duration::from_secs(10);
        let mut polling = false;
        let (took, how) = loop {
            let wait = if polling {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(50)
            };
            match events.recv_timeout(wait) {
                Ok((at, paths)) => {
                    if paths.contains(&target) && hash_file(&target) == Some(want) {
                        // Conservative: a later event for the same path that is
                        // already queued is the one that brought this content.
                        let mut at = at;
                        while let Ok((later, p)) = events.try_recv() {
                            if p.contains(&target) {
                                at = later;
                            }
                        }
                        break (at.duration_since(t0), Detected::Event);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if hash_file(&target) == Some(want) {
                        break (t0.elapsed(), Detected::Poll);
                    }
                    polling = true;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("the inotify watcher on the agent's root stopped")
                }
            }
            if Instant::now() > deadline {
                let err: Vec<String> = watch.stderr.try_iter().collect();
                bail!(
                    "edit {}: {} did not reach the agent within 10 s; lks stderr: {err:#?}",
                    i + 1,
                    rel.display()
                );
            }
        };
        if how == Detected::Poll {
            by_poll += 1;
        }
        ours.push(ms(took));
        std::thread::sleep(Duration::from_millis(20));
        collect(&mut watch, &mut batches)?;
    }
    // The last batch lines, then the whole tree must be equal.
    let settle_by = Instant::now() + Duration::from_secs(2);
    while batches.iter().map(|b| b.files).sum::<u64>() < cfg.edits as u64
        && Instant::now() < settle_by
    {
        std::thread::sleep(Duration::from_millis(10));
        collect(&mut watch, &mut batches)?;
    }
    verify_equal(src, &dst, "after the watch-mode edits")?;
    let memory = lks_e2e::proc_memory(watch.pid()).context("lks sync is gone")?;
    let status = watch.terminate();
    if !status.success() {
        bail!("lks sync (watch mode) exited with {status} on SIGTERM");
    }
    let warnings: Vec<String> = watch.stderr.try_iter().collect();
    if !warnings.is_empty() {
        println!("  lks sync (watch) said on stderr:");
        for w in warnings.iter().take(10) {
            println!("    {w}");
        }
    }
    Ok(Latency {
        start,
        ours,
        by_poll,
        batches,
        memory,
    })
}

fn run(cfg: &Config) -> anyhow::Result<Vec<Row>> {
    let tmp = scratch_dir("lks-bench.")?;
    let base = tmp.path();
    println!(
        "lks-bench{}: {} files in {} directories / {} MB tree, {} edits, {} MiB delta file; {} build, {} CPUs, in {} ({})",
        if cfg.smoke { " --smoke" } else { "" },
        cfg.files,
        cfg.dirs,
        cfg.mb,
        cfg.edits,
        cfg.big_mib,
        profile(),
        cpus(),
        base.display(),
        fs_kind(base)
    );
    println!("  binaries: {}", lks_e2e::bin("lks").display());

    let src = base.join("src");
    let files = generate_source(&src, cfg.files, cfg.dirs, cfg.mb);
    let mut rows = Vec::new();

    // 1. Cold initial sync vs tar | tar, alternating, fresh destinations. No
    // tree is deleted before the end of the run: on ext4 without a journal
    // every file creation scans past the inodes deleted in the last seconds
    // (`recently_deleted`), which made whichever side came after a deletion
    // up to several times slower.
    println!("1. cold initial sync ({} runs each)", cfg.cold_runs);
    let mut tar_ms = Vec::new();
    let mut cold_ms = Vec::new();
    let mut cold_peak = 0;
    let mut kept: Option<(Agent, PathBuf)> = None;
    for i in 0..cfg.cold_runs {
        let tdst = base.join(format!("tar-{i}"));
        std::fs::create_dir(&tdst)?;
        settle();
        let d = tar_copy(&src, &tdst)?;
        verify_equal(&src, &tdst, "tar | tar")?;
        tar_ms.push(ms(d));

        let adst = base.join(format!("agent-{i}"));
        std::fs::create_dir(&adst)?;
        let agent = Agent::start(&adst, TOKEN);
        settle();
        let (d, s, peak) = lks_once_peak(&src, &agent.url)?;
        verify_equal(&src, &adst, "cold lks sync --once")?;
        cold_ms.push(ms(d));
        cold_peak = cold_peak.max(peak);
        println!(
            "   run {}: tar {}, lks {} (lks says {}; {} files, {} other, {} sent; lks resident at most {})",
            i + 1,
            fmt_ms(tar_ms[i]),
            fmt_ms(ms(d)),
            fmt_ms(s.ms),
            s.files,
            s.other,
            fmt_bytes(s.bytes),
            fmt_bytes(peak)
        );
        if let Some((mut old, _)) = kept.replace((agent, adst)) {
            old.kill();
        }
    }
    let tar_med = median(&tar_ms);
    let variation = percentile(&tar_ms, 100.0) / percentile(&tar_ms, 0.0);
    if variation > 1.5 {
        println!("   note: the tar times vary {variation:.1}x between runs: this machine is noisy");
    }
    if fs_kind(base) == "ext4" {
        println!(
            "   note: on ext4 without a journal, creating files soon after many deletions (say, \
             an earlier run's clean-up) is several times slower for tar and lks alike; \
             TMPDIR=/dev/shm gives steadier figures"
        );
    }
    let cold_med = median(&cold_ms);
    let cold_ratio = cold_med / tar_med;
    rows.push(Row {
        measure: format!("cold initial sync, median of {}", cfg.cold_runs),
        ours: fmt_ms(cold_med),
        baseline: format!("tar {}", fmt_ms(tar_med)),
        ratio: format!("{cold_ratio:.2}x"),
        target: "<= 1.0x".into(),
        pass: Some(cold_ratio <= 1.0),
    });
    let (agent, adst) = kept.expect("at least one cold run");

    // 2. Warm resync: nothing changed, same agent.
    println!("2. warm resync ({} runs)", cfg.warm_runs);
    let mut warm_ms = Vec::new();
    for i in 0..cfg.warm_runs {
        settle();
        let (d, s) = lks_once(&src, &agent.url)?;
        warm_ms.push(ms(d));
        println!(
            "   run {}: lks {} (lks says {}; {} files, {} other, {} sent)",
            i + 1,
            fmt_ms(ms(d)),
            fmt_ms(s.ms),
            s.files,
            s.other,
            fmt_bytes(s.bytes)
        );
    }
    verify_equal(&src, &adst, "warm lks sync --once")?;
    // The first resync after the cold one compares both trees whole (the
    // agent's changed since the last look); it then keeps what it found
    // equal, and the next ones, neither side changed, compare nothing.
    let first_ratio = warm_ms[0] / tar_med;
    rows.push(Row {
        measure: "warm resync (no change), the first: both trees compared".into(),
        ours: fmt_ms(warm_ms[0]),
        baseline: format!("tar {}", fmt_ms(tar_med)),
        ratio: format!("{first_ratio:.3}x"),
        target: "<= 0.1x".into(),
        pass: Some(first_ratio <= 0.1),
    });
    if warm_ms.len() > 1 {
        let warm_med = median(&warm_ms[1..]);
        let warm_ratio = warm_med / tar_med;
        rows.push(Row {
            measure: format!(
                "warm resync (no change), the next: both unchanged since, median of {}",
                warm_ms.len() - 1
            ),
            ours: fmt_ms(warm_med),
            baseline: format!("tar {}", fmt_ms(tar_med)),
            ratio: format!("{warm_ratio:.3}x"),
            target: "<= 0.1x".into(),
            pass: Some(warm_ratio <= 0.1),
        });
    }

    // 3. Edit -> applied latency in watch mode.
    println!(
        "3. edit -> applied latency, {} single-file edits in watch mode (detected by inotify on the agent's root, confirmed by blake3)",
        cfg.edits
    );
    let lat = measure_latency(cfg, &src, &adst, &agent.url, &files)?;
    let agent_memory = lks_e2e::proc_memory(agent.pid()).context("the agent is gone")?;
    println!(
        "   watch start (lks sync until its initial sync is done): {}",
        fmt_ms(ms(lat.start))
    );
    let batch_ms: Vec<f64> = lat.batches.iter().map(|b| b.ms).collect();
    let batch_files: u64 = lat.batches.iter().map(|b| b.files).sum();
    println!(
        "   {} edits: {} detected by inotify event, {} by 1 ms polling after 50 ms without an event; lks printed {} batch lines ({} files)",
        lat.ours.len(),
        lat.ours.len() - lat.by_poll,
        lat.by_poll,
        lat.batches.len(),
        batch_files
    );
    let (p50, p90, p99, max) = (
        percentile(&lat.ours, 50.0),
        percentile(&lat.ours, 90.0),
        percentile(&lat.ours, 99.0),
        percentile(&lat.ours, 100.0),
    );
    println!(
        "   ours: {}; lks's own batch figure (first event -> ack): p50 {}, p99 {}",
        spread(&lat.ours),
        fmt_ms(percentile(&batch_ms, 50.0)),
        fmt_ms(percentile(&batch_ms, 99.0)),
    );
    let lat_row = |name: &str, v: f64, target: Option<f64>| Row {
        measure: format!("edit -> applied {name} ({} edits)", lat.ours.len()),
        ours: fmt_ms(v),
        baseline: "-".into(),
        ratio: "-".into(),
        target: target.map_or("-".into(), |t| format!("<= {t:.0} ms")),
        pass: target.map(|t| v <= t),
    };
    rows.push(lat_row("p50", p50, Some(10.0)));
    rows.push(lat_row("p90", p90, None));
    rows.push(lat_row("p99", p99, Some(50.0)));
    rows.push(lat_row("max", max, None));
    rows.push(Row::info(
        format!(
            "edit -> applied p50 as lks reports it ({} batches)",
            lat.batches.len()
        ),
        fmt_ms(percentile(&batch_ms, 50.0)),
        "-".into(),
    ));
    rows.push(Row {
        measure: "watch start: `lks sync` until its initial sync is done".into(),
        ours: fmt_ms(ms(lat.start)),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "<= 2 s".into(),
        pass: Some(lat.start <= Duration::from_secs(2)),
    });
    // The first `lks sync` (or `lks up`) of a service: watch mode into an
    // empty root, its initial sync sending everything.
    let cold_watch = {
        let wdst = base.join("agent-watch");
        std::fs::create_dir(&wdst)?;
        let mut empty = Agent::start(&wdst, TOKEN);
        settle();
        let t0 = Instant::now();
        let mut watch = Watch::start(&src, &empty.url, TOKEN, &[]);
        let took = t0.elapsed();
        let memory = lks_e2e::proc_memory(watch.pid()).context("lks sync is gone")?;
        watch.terminate();
        verify_equal(&src, &wdst, "lks sync (watch) into an empty agent")?;
        empty.kill();
        println!(
            "   watch start into an empty agent (its initial sync sends everything): {}, lks resident at most {}",
            fmt_ms(ms(took)),
            fmt_bytes(memory.peak)
        );
        memory
    };
    let budget = 50 * 1024 * 1024;
    for (who, m) in [
        // Sampled: gone once it ends.
        (
            "lks sync --once (cold)",
            lks_e2e::Memory {
                rss: 0,
                peak: cold_peak,
            },
        ),
        ("lks sync (watch)", lat.memory),
        ("lks sync (watch, into an empty agent)", cold_watch),
        ("lks-agent (cold, then watch)", agent_memory),
    ] {
        rows.push(Row {
            measure: format!("{who}: resident memory, peak (now)"),
            ours: if m.rss == 0 {
                fmt_bytes(m.peak)
            } else {
                format!("{} ({})", fmt_bytes(m.peak), fmt_bytes(m.rss))
            },
            baseline: "-".into(),
            ratio: "-".into(),
            target: "<= 50 MiB".into(),
            pass: Some(m.peak <= budget),
        });
    }
    drop(agent);

    // 4. Delta: one byte changed in the middle of a large random file.
    let big_size = cfg.big_mib * 1024 * 1024;
    println!(
        "4. delta: 1 byte changed in the middle of a {} MiB random file",
        cfg.big_mib
    );
    let bsrc = base.join("big-src");
    let bdst = base.join("big-dst");
    std::fs::create_dir(&bsrc)?;
    std::fs::create_dir(&bdst)?;
    let big = bsrc.join("big.bin");
    std::fs::write(&big, Rng::new(99).bytes(big_size as usize))?;
    let agent = Agent::start(&bdst, TOKEN);
    settle();
    let (d, s) = lks_once(&bsrc, &agent.url)?;
    verify_equal(&bsrc, &bdst, "first sync of the big file")?;
    println!(
        "   first sync: {} ({} sent)",
        fmt_ms(ms(d)),
        fmt_bytes(s.bytes)
    );
    {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&big)?;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, big_size / 2)?;
        b[0] ^= 0xff;
        f.write_all_at(&b, big_size / 2)?;
    }
    settle();
    let (d, s) = lks_once(&bsrc, &agent.url)?;
    if hash_file(&big) != hash_file(&bdst.join("big.bin")) {
        bail!("after the delta sync the agent's big.bin differs from the local one");
    }
    verify_equal(&bsrc, &bdst, "delta sync of the big file")?;
    let pct = s.bytes as f64 / big_size as f64 * 100.0;
    println!(
        "   after the 1-byte change: {} ({} files, {} sent = {pct:.3}% of the file)",
        fmt_ms(ms(d)),
        s.files,
        fmt_bytes(s.bytes)
    );
    rows.push(Row {
        measure: format!("delta: 1 byte changed in {} MiB", cfg.big_mib),
        ours: format!("{} sent", fmt_bytes(s.bytes)),
        baseline: format!("whole file {}", fmt_bytes(big_size)),
        ratio: format!("{pct:.3}%"),
        target: "<= 1%".into(),
        pass: Some(pct <= 1.0),
    });
    drop(agent);

    tmp.close().context("remove the temporary directory")?;
    Ok(rows)
}

fn main() -> std::process::ExitCode {
    let details = |cfg: &Config, _| {
        format!(
            "{} files in {} directories / {} MB, {} edits, {} MiB delta file, {} build",
            cfg.files,
            cfg.dirs,
            cfg.mb,
            cfg.edits,
            cfg.big_mib,
            profile()
        )
    };
    lks_e2e::bench::main("lks-bench", Config::parse, run, details, &NOTES)
}
