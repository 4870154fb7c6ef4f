//! `lks-bench-ui`: the web page of an `lks up` with N services (local
//! runtime), in a real headless Chromium, while every service's app writes
//! log lines. Measured in the browser:
//! - load: from the navigation to the first frame painted after the table of
//!   all N services was built from the stream's snapshot (median of loads);
//! - responsiveness while the logs stream: how late a 50 ms timer fires in
//!   the page (p99 and max over the window), against the same probe in a
//!   blank page in the same browser (the baseline), and how long a click on
//!   a service takes to show its logs (to the next paint);
//! - what arrived: log lines and deltas per second.
//!
//! ```text
//! cargo build --release --workspace --bins && ./target/release/lks-bench-ui
//! cargo run -p lks-e2e --bin lks-bench-ui -- --smoke   # 20 services, 3 s
//! ```

use anyhow::{Context, bail};
use lks_e2e::bench::{Args, Row, fmt_ms, median};
use lks_e2e::{Browser, Up, kill_group, ui_url, write};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: lks-bench-ui [--smoke] [--services N] [--seconds S] [--rate R] [--loads N]

  --services N   services in the workspace (default 300; --smoke: 20)
  --seconds S    the window responsiveness is measured over (default 10; --smoke: 3)
  --rate R       log lines each app writes per second (default 5)
  --loads N      page loads measured (default 5; --smoke: 2)";

struct Config {
    services: usize,
    window: Duration,
    rate: u64,
    loads: usize,
}

fn main() -> ExitCode {
    lks_e2e::bench::main(
        "lks-bench-ui",
        parse,
        |c| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(run(c))
        },
        |c, took| {
            format!(
                "{} services writing {} lines/s each, {} s window, {} loads, {} build, {} CPUs, {:.0} s",
                c.services,
                c.rate,
                c.window.as_secs(),
                c.loads,
                lks_e2e::bench::profile(),
                lks_e2e::bench::cpus(),
                took.as_secs_f64()
            )
        },
        &[
            "measured in headless Chromium (Debian's chromium + chromedriver) on this machine, \
             which also runs lks, its agents and the apps.",
            "timer lateness: a 50 ms setInterval in the page, how much later than due each tick \
             ran; baseline: the same probe in about:blank in the same browser, same run.",
            "click -> logs: a click on a service's row to the next frame painted with its logs.",
        ],
    )
}

fn parse(args: std::iter::Skip<std::env::Args>) -> anyhow::Result<Config> {
    let a = Args::parse(
        args,
        &["--services", "--seconds", "--rate", "--loads"],
        USAGE,
    )?;
    let (services, seconds, loads) = if a.smoke { (20, 3, 2) } else { (300, 10, 5) };
    Ok(Config {
        services: a.number("--services", services) as usize,
        window: Duration::from_secs(a.number("--seconds", seconds)),
        rate: a.number("--rate", 5),
        loads: a.number("--loads", loads) as usize,
    })
}

/// Each service's app: writes `RATE` lines a second (one Python process,
/// sleeping in between: the load is the logs, not the forks of a shell
/// loop's `sleep`).
const APP: &str = r#"import os, sys, time
name, pause = os.environ["NAME"], 1.0 / float(os.environ["RATE"])
i = 0
while True:
    print(f"{name} line {i} status=ok", flush=True)
    i += 1
    time.sleep(pause)
"#;

/// A workspace of `n` services, each an app that writes `rate` lines a
/// second, in aliases of 25.
fn generate(dir: &std::path::Path, n: usize, rate: u64) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("svc-{i:03}")).collect();
    let mut yaml = String::from("services:\n");
    for name in &names {
        yaml.push_str(&format!(
            "  - name: {name}\n    dir: {name}\n    command: python3 -u app.py\n    env: {{NAME: {name}, RATE: \"{rate}\"}}\n"
        ));
        write(dir, &format!("{name}/app.py"), APP);
    }
    yaml.push_str("aliases:\n");
    for (g, chunk) in names.chunks(25).enumerate() {
        yaml.push_str(&format!("  group-{g:02}: [{}]\n", chunk.join(", ")));
    }
    write(dir, "lks.yaml", &yaml);
    names
}

/// The page's timer lateness over `window`: p50, p99, max in ms.
async fn lateness(b: &Browser, window: Duration) -> anyhow::Result<(f64, f64, f64)> {
    let v = b
        .client
        .execute_async(
            "const [ms, done] = arguments; const late = []; let due = performance.now() + 50; \
             const t = setInterval(() => { const now = performance.now(); late.push(now - due); due = now + 50; }, 50); \
             setTimeout(() => { clearInterval(t); late.sort((a, b) => a - b); \
               const q = (p) => late[Math.min(late.length - 1, Math.floor(p * late.length))]; \
               done([q(0.5), q(0.99), late[late.length - 1]]); }, ms);",
            vec![json!(window.as_millis() as u64)],
        )
        .await
        .context("the lateness probe")?;
    let f = |i: usize| v[i].as_f64().unwrap_or(f64::NAN);
    Ok((f(0), f(1), f(2)))
}

async fn run(c: &Config) -> anyhow::Result<Vec<Row>> {
    let tmp = lks_e2e::bench::scratch_dir("lks-bench-ui")?;
    let names = generate(tmp.path(), c.services, c.rate);
    println!(
        "lks-bench-ui: {} services in {}",
        names.len(),
        tmp.path().display()
    );
    let mut up = Up::start(tmp.path(), &["--runtime", "local", "--ui-port", "0"]);
    let lks = up.child.id();
    let browser_group = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let group = browser_group.clone();
    lks_e2e::bench::on_signals("lks-bench-ui", move || {
        let g = group.load(std::sync::atomic::Ordering::SeqCst);
        if g != 0 {
            kill_group(g);
        }
        if let Some(pid) = rustix::process::Pid::from_raw(lks as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        lks_e2e::wait_until(Duration::from_secs(120), || !lks_e2e::process_alive(lks));
    })?;
    let url = ui_url(&mut up);
    let started = Instant::now();
    let limit = Duration::from_secs(60 + c.services as u64);
    loop {
        let ready = up.drain().iter().filter(|l| l.ends_with("[ready]")).count();
        if ready >= names.len() {
            break;
        }
        if started.elapsed() > limit {
            bail!(
                "only {ready} of {} services ready after {limit:?}",
                names.len()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "all ready after {:.1} s; {url}",
        started.elapsed().as_secs_f64()
    );

    let b = Browser::start().await;
    browser_group.store(b.group(), std::sync::atomic::Ordering::SeqCst);
    b.client.goto("about:blank").await?;
    let (_, base_p99, base_max) = lateness(&b, c.window).await?;

    let mut loads = Vec::new();
    for _ in 0..c.loads {
        b.client.goto(&url).await?;
        let painted = b
            .wait_js(
                "the table painted",
                &format!(
                    "return window.lksPage && lksPage.stats.painted && document.querySelectorAll('tr.service').length === {} && lksPage.stats.painted",
                    names.len()
                ),
                Duration::from_secs(30),
            )
            .await;
        loads.push(painted.as_f64().unwrap_or(f64::NAN));
    }
    b.screenshot("bench-ui-loaded").await;

    // Logs streaming: lateness, then clicks.
    let before: Value = b
        .js(
            "lksPage.stats.longest = {}; return [lksPage.stats.lines, lksPage.stats.deltas]",
            vec![],
        )
        .await;
    let t0 = Instant::now();
    b.js(
        "window.frames_ = []; new PerformanceObserver((l) => { for (const e of l.getEntries()) frames_.push(e); }) \
           .observe({type: 'long-animation-frame'});",
        vec![],
    )
    .await;
    let (_, p99, max) = lateness(&b, c.window).await?;
    // The longest frame: its script, and its style and layout (Chromium's
    // long-animation-frame entries).
    let worst: Value = b
        .js(
            "const f = frames_.sort((a, b) => b.duration - a.duration)[0]; if (!f) return null; \
             const end = f.startTime + f.duration; \
             return [f.duration, f.scripts.reduce((s, x) => s + x.duration, 0), \
                     f.styleAndLayoutStart ? end - f.styleAndLayoutStart : 0, frames_.length];",
            vec![],
        )
        .await;
    let after: Value = b
        .js("return [lksPage.stats.lines, lksPage.stats.deltas]", vec![])
        .await;
    let longest: Value = b.js("return lksPage.stats.longest", vec![]).await;
    let secs = t0.elapsed().as_secs_f64();
    let rate =
        |i: usize| (after[i].as_f64().unwrap_or(0.0) - before[i].as_f64().unwrap_or(0.0)) / secs;
    let mut clicks = Vec::new();
    for name in names.iter().step_by((names.len() / 10).max(1)).take(10) {
        let v = b
            .client
            .execute_async(
                "const [name, done] = arguments; const t = performance.now(); \
                 document.querySelector(`tr[data-service=\"${name}\"] td.name`).click(); \
                 requestAnimationFrame(() => setTimeout(() => done(document.getElementById('log-title').textContent === name ? performance.now() - t : -1)));",
                vec![json!(name)],
            )
            .await?;
        let ms = v.as_f64().unwrap_or(-1.0);
        if ms < 0.0 {
            bail!("a click on {name} did not show its logs");
        }
        clicks.push(ms);
    }
    b.screenshot("bench-ui-streaming").await;
    b.close().await;
    if !up.terminate().success() {
        bail!("lks up did not stop cleanly");
    }

    let load = median(&loads);
    let click = median(&clicks);
    let click_max = clicks.iter().cloned().fold(0.0, f64::max);
    Ok(vec![
        Row {
            measure: format!("page load, {} services (median)", names.len()),
            ours: fmt_ms(load),
            baseline: "-".into(),
            ratio: "-".into(),
            target: "<= 1000 ms".into(),
            pass: Some(load <= 1000.0),
        },
        Row {
            measure: "timer lateness while logs stream, p99".into(),
            ours: fmt_ms(p99),
            baseline: fmt_ms(base_p99),
            ratio: "-".into(),
            target: "<= 100 ms".into(),
            pass: Some(p99 <= 100.0),
        },
        Row::info(
            "timer lateness while logs stream, max".into(),
            fmt_ms(max),
            fmt_ms(base_max),
        ),
        Row {
            measure: "click -> its logs shown (median)".into(),
            ours: fmt_ms(click),
            baseline: "-".into(),
            ratio: "-".into(),
            target: "<= 100 ms".into(),
            pass: Some(click <= 100.0),
        },
        Row::info(
            "click -> its logs shown, max".into(),
            fmt_ms(click_max),
            "-".into(),
        ),
        Row::info(
            "longest frame: all / its scripts / style+layout (long frames)".into(),
            match worst.as_array() {
                Some(w) => format!(
                    "{} / {} / {} ({})",
                    fmt_ms(w[0].as_f64().unwrap_or(0.0)),
                    fmt_ms(w[1].as_f64().unwrap_or(0.0)),
                    fmt_ms(w[2].as_f64().unwrap_or(0.0)),
                    w[3]
                ),
                None => "none over 50 ms".into(),
            },
            "-".into(),
        ),
        Row::info(
            "the page's longest work: delta / new lines / ages".into(),
            ["delta", "lines", "ages"]
                .iter()
                .map(|k| fmt_ms(longest[k].as_f64().unwrap_or(f64::NAN)))
                .collect::<Vec<_>>()
                .join(" / "),
            "-".into(),
        ),
        Row::info(
            "log lines / deltas reaching the page".into(),
            format!("{:.0}/s, {:.1} deltas/s", rate(0), rate(1)),
            format!("{} lines/s written", c.services as u64 * c.rate),
        ),
    ])
}
