//! `lks status` and `lks logs`: the shell's view of a running `lks up`,
//! through its API (found in the workspace's `.lks/api.json`).

use crate::api::{DISCOVERY, Discovery};
use anyhow::{Context, bail};
use std::path::Path;

/// The API of the `lks up` running for the workspace of `file`.
fn running(file: Option<&Path>) -> anyhow::Result<Discovery> {
    let ws_file = crate::config::find_file(file)?;
    let root = ws_file.parent().unwrap_or(Path::new("."));
    let path = root.join(crate::config::WORK_DIR).join(DISCOVERY);
    let not_running = || {
        format!(
            "no lks up is running for {} (start one with `lks up`)",
            ws_file.display()
        )
    };
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(not_running()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let found: Discovery = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not what lks up writes", path.display()))?;
    if !crate::procs::stat(found.pid).is_some_and(|s| s.alive()) {
        bail!(not_running());
    }
    Ok(found)
}

/// GETs `path` of the running `lks up`'s API, as JSON.
async fn get(api: &Discovery, path: &str) -> anyhow::Result<serde_json::Value> {
    call(api, hyper::Method::GET, path).await
}

/// Asks `path` of the running `lks up`'s API, as JSON.
async fn call(
    api: &Discovery,
    method: hyper::Method,
    path: &str,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}{path}", api.url);
    let auth = format!("Bearer {}", api.token);
    let (code, body) = crate::readiness::http_call(method, &url, Some(&auth))
        .await
        .map_err(|e| anyhow::anyhow!("asking the running lks up: {e}"))?;
    let value: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{url} answered {code}: {body}"))?;
    if code != 200 {
        bail!(
            "{}",
            value["error"]
                .as_str()
                .unwrap_or("the running lks up refused")
        );
    }
    Ok(value)
}

/// `lks status [-o json]`.
pub async fn status(file: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let api = running(file)?;
    let state = get(&api, "/api/state").await?;
    let services = state["services"].as_array().cloned().unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&services)?);
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let rows: Vec<[String; 6]> = services
        .iter()
        .map(|s| {
            let pid = s["app_pid"]
                .as_u64()
                .or(s["agent_pid"].as_u64())
                .map_or("-".into(), |p| p.to_string());
            let since = s["since_ms"].as_u64().unwrap_or(now);
            let sync = match s["last_sync"].as_object() {
                Some(l) => format!(
                    "{} files, {} ms",
                    l["files"].as_u64().unwrap_or(0),
                    l["ms"].as_u64().unwrap_or(0)
                ),
                None => "-".into(),
            };
            [
                s["name"].as_str().unwrap_or("?").to_string(),
                s["status"].as_str().unwrap_or("?").to_string(),
                s["restarts"].as_u64().unwrap_or(0).to_string(),
                pid,
                age(now.saturating_sub(since)),
                sync,
            ]
        })
        .collect();
    print_table(
        ["SERVICE", "STATUS", "RESTARTS", "PID", "FOR", "LAST SYNC"],
        &rows,
    );
    Ok(())
}

/// `lks trigger|restart|disable|enable|manual|auto SERVICE...`: each in
/// turn, a line each.
pub async fn act(
    file: Option<&Path>,
    action: crate::fleet::Action,
    services: &[String],
) -> anyhow::Result<()> {
    let api = running(file)?;
    let verb = action.name();
    let mut failed = 0;
    for service in services {
        match call(
            &api,
            hyper::Method::POST,
            &format!("/api/{verb}?service={service}"),
        )
        .await
        {
            Ok(done) => println!("{service}: {}", done["done"].as_str().unwrap_or("done")),
            Err(e) => {
                eprintln!("{service}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} not done", services.len());
    }
    Ok(())
}

/// What `lks logs` was asked.
pub struct LogsOptions {
    /// The services (none: all).
    pub services: Vec<String>,
    /// Keep printing new lines until the run ends.
    pub follow: bool,
    /// Only lines of the last this long.
    pub since: Option<std::time::Duration>,
    /// At most this many of the last lines (before following).
    pub tail: usize,
    /// One JSON object a line.
    pub json: bool,
}

/// `lks logs [SERVICE...] [-f] [--since D] [--tail N] [--json]`.
pub async fn logs(file: Option<&Path>, opts: LogsOptions) -> anyhow::Result<()> {
    let api = running(file)?;
    let since_ms = opts.since.map_or(0, |d| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |n| n.as_millis() as u64);
        now.saturating_sub(d.as_millis() as u64)
    });
    // The service's name before each line unless one service was asked.
    let prefixed = opts.services.len() != 1;
    let width = if opts.services.is_empty() {
        let state = get(&api, "/api/state").await?;
        state["services"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["name"].as_str().map(str::len))
            .max()
            .unwrap_or(0)
    } else {
        opts.services.iter().map(String::len).max().unwrap_or(0)
    };
    let query = |after: u64, tail: Option<usize>| {
        let mut q = format!(
            "/api/logs?service={}&after={after}&since_ms={since_ms}",
            opts.services.join(",")
        );
        if let Some(t) = tail {
            q.push_str(&format!("&tail={t}"));
        }
        q
    };
    let mut after = 0u64;
    let mut tail = Some(opts.tail);
    loop {
        let logs = match get(&api, &query(after, tail)).await {
            Ok(l) => l,
            // Following: the run ended.
            Err(_) if opts.follow && after > 0 => return Ok(()),
            Err(e) => return Err(e),
        };
        for line in logs["lines"].as_array().into_iter().flatten() {
            after = after.max(line["seq"].as_u64().unwrap_or(0));
            print_line(line, prefixed, width, opts.json)?;
        }
        if !opts.follow {
            return Ok(());
        }
        // Following from the first answer on: every new line.
        if after == 0 {
            after = 1;
        }
        tail = None;
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

fn print_line(
    line: &serde_json::Value,
    prefixed: bool,
    width: usize,
    json: bool,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = if json {
        writeln!(out, "{line}")
    } else {
        let service = line["service"].as_str().unwrap_or("");
        let prefix = if prefixed {
            format!("{service:<width$} | ", width = width.max(service.len()))
        } else {
            String::new()
        };
        writeln!(
            out,
            "{prefix}{:<4} {}",
            line["source"].as_str().unwrap_or(""),
            line["text"].as_str().unwrap_or("")
        )
    };
    match written {
        // `lks logs | head`: the reader is gone, and so is the point.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => Ok(other?),
    }
}

/// `12s`, `3m4s`, `2h5m`.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s / 60 % 60),
    }
}

fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut width = header.map(str::len);
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_read_like_durations() {
        assert_eq!(super::age(12_400), "12s");
        assert_eq!(super::age(184_000), "3m4s");
        assert_eq!(super::age(7_500_000), "2h5m");
    }
}
