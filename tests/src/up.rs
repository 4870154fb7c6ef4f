//! `lks up` under test, and copies of the examples it runs.

use crate::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `lks up`, its output collected line by line.
pub struct Up {
    pub child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    seen: Vec<String>,
}

/// `lks up -f WS/lks.yaml ARGS...`, to run in `ws` with `NO_COLOR=1`, its
/// stdout and stderr piped.
pub fn up_command(ws: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("lks"));
    cmd.arg("up")
        .arg("-f")
        .arg(ws.join("lks.yaml"))
        .args(args)
        .current_dir(ws)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

impl Up {
    /// Starts `lks up -f WS/lks.yaml ARGS...` in `ws`.
    pub fn start(ws: &Path, args: &[&str]) -> Up {
        Up::spawn(up_command(ws, args))
    }

    /// Starts `cmd` (an [`up_command`], perhaps with more environment).
    pub fn spawn(mut cmd: Command) -> Up {
        let mut child = cmd.spawn().unwrap();
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        Up {
            child,
            out,
            err,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing all of `needles` (seen already or to
    /// come); returns it.
    pub fn wait(&mut self, needles: &[&str], timeout: Duration) -> String {
        self.wait_since(0, needles, timeout)
    }

    /// Where the output is now: [`Up::wait_since`] looks only at what comes
    /// after.
    pub fn mark(&mut self) -> usize {
        self.drain().len()
    }

    /// Waits for a line after `mark` containing all of `needles`; returns it.
    pub fn wait_since(&mut self, mark: usize, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        self.drain();
        let matches = |l: &String| needles.iter().all(|n| l.contains(n));
        if let Some(l) = self.seen.iter().skip(mark).find(|l| matches(l)) {
            return l.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(_) => {
                    let err: Vec<String> = self.err.try_iter().collect();
                    panic!(
                        "no line with {needles:?} within {timeout:?} after line {mark}\nstdout:\n{}\nstderr:\n{}",
                        self.seen.join("\n"),
                        err.join("\n")
                    );
                }
            }
        }
    }

    /// What `lks up` wrote to stderr so far (each line once).
    pub fn stderr_lines(&mut self) -> Vec<String> {
        self.err.try_iter().collect()
    }

    /// Lines seen so far, plus any pending.
    pub fn drain(&mut self) -> &[String] {
        while let Ok(l) = self.out.try_recv() {
            self.seen.push(l);
        }
        &self.seen
    }

    /// The lines `lks up` printed for `service` so far.
    pub fn service_lines(&mut self, service: &str) -> Vec<String> {
        let prefix = format!("{service} ");
        self.drain()
            .iter()
            .filter(|l| l.starts_with(&prefix))
            .cloned()
            .collect()
    }

    /// The container `lks up` last printed for `service` (`--runtime docker`).
    pub fn container_of(&mut self, service: &str) -> String {
        self.container_line_field(service, "(container ")
    }

    /// The image of the container `lks up` last printed for `service`.
    pub fn image_of(&mut self, service: &str) -> String {
        self.container_line_field(service, ", image ")
    }

    /// What follows `label` up to the next comma in the last
    /// `SERVICE ... (container NAME, image REF, ...)` line.
    fn container_line_field(&mut self, service: &str, label: &str) -> String {
        let line = self
            .service_lines(service)
            .into_iter()
            .rev()
            .find(|l| l.contains("(container "))
            .unwrap_or_else(|| panic!("no container line for {service}"));
        line.split(label)
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or_else(|| panic!("no {label:?} in {line:?}"))
            .to_string()
    }

    /// The pids `lks up` printed for `service`.
    pub fn pids(&mut self, service: &str) -> Vec<i32> {
        self.service_lines(service)
            .iter()
            .filter_map(|l| {
                let i = l.find(" pid ")?;
                l[i + 5..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// SIGTERM, then wait for the exit (SIGKILL after 20 s).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child, "lks up", Duration::from_secs(20))
    }
}

impl Drop for Up {
    /// Even when a test fails: SIGTERM first, so `lks up` stops the agents and
    /// apps it started (SIGKILL would leave them running), then SIGKILL.
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(15));
    }
}

/// Copies the repository's `examples/` into `dst`, leaving out the top-level
/// entries named in `skip` (and any `.lks` work dir).
pub fn copy_examples(dst: &Path, skip: &[&str]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for entry in walkdir::WalkDir::new(&src).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(&src).unwrap();
        if rel.starts_with(".lks") || skip.iter().any(|s| rel.starts_with(s)) {
            continue;
        }
        let to = dst.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// Replaces each `(from, to)` in every text file beneath `dir` (the
/// examples' fixed ports by free ones: service files, manifests, sources,
/// Dockerfiles).
pub fn replace_in_files(dir: &Path, pairs: &[(&str, String)]) {
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry.unwrap();
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let new = pairs
            .iter()
            .fold(text.clone(), |t, (from, to)| t.replace(from, to));
        if new != text {
            std::fs::write(entry.path(), new).unwrap();
        }
    }
}

/// [`copy_examples`] but for `worker` (it needs Go in an image), with a
/// workspace file listing web (Node) and api (Python) and the alias
/// `frontend: [web]`.
pub fn copy_web_and_api_examples(dst: &Path) {
    copy_examples(dst, &["worker"]);
    write(
        dst,
        "lks.yaml",
        "services: [\"web/lks.service.yaml\", \"api/lks.service.yaml\"]\naliases:\n  frontend: [web]\n",
    );
}
