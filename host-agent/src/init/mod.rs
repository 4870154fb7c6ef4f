//! `lks init [DIR] [--dry-run] [--force]`: writes a working `lks.yaml` and a
//! `lks.service.yaml` per service for a repository that has none, from what
//! it holds (`package.json`, `requirements.txt`, `go.mod`, Dockerfiles,
//! Kubernetes manifests), and says what it guessed.
//!
//! `detect` finds the services (`repo` walks the repository, `language`
//! holds each language's rules, `dockerfile` and `manifests` read what they
//! add), `write` makes the YAML. What is written is loaded back with lks's
//! own loader before `lks init` says it is done: a guess the loader refuses
//! is a bug of `lks init`, and nothing stays written then.

mod detect;
mod dockerfile;
mod language;
mod manifests;
mod repo;
#[cfg(test)]
mod tests;
mod write;

use anyhow::Context as _;
use detect::{Guess, shown};
use manifests::Probe;
use std::path::{Path, PathBuf};

/// What `lks init` was asked.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The repository (default: the current directory).
    pub dir: Option<PathBuf>,
    /// Print what would be written; write nothing.
    pub dry_run: bool,
    /// Replace files that exist.
    pub force: bool,
}

/// Runs `lks init`: prints what it guessed (and, with `--dry-run`, the files
/// it would write) to stdout.
pub fn command(opts: &InitOptions) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("the current directory")?;
    let dir = cwd.join(opts.dir.as_deref().unwrap_or(Path::new(".")));
    let root = dir
        .canonicalize()
        .with_context(|| format!("{}", dir.display()))?;
    anyhow::ensure!(root.is_dir(), "{} is not a directory", root.display());
    let found = detect::detect(&root);
    if found.services.is_empty() {
        for n in &found.notes {
            println!("  {n}");
        }
        anyhow::bail!(
            "found no service in {}: lks init makes one of each directory with a package.json, \
             requirements.txt, pyproject.toml, go.mod or Dockerfile",
            root.display()
        );
    }
    let files = write::files(&root, &found.services);
    let shown_files: Vec<String> = files.iter().map(|(p, _)| shown(&root, p)).collect();
    if opts.dry_run {
        for ((_, text), name) in files.iter().zip(&shown_files) {
            println!("--- {name}\n{text}");
        }
        summary(&root, &found);
        println!(
            "dry run: nothing written (`lks init` writes {})",
            write::list(&shown_files)
        );
        return Ok(());
    }
    let existing: Vec<String> = files
        .iter()
        .zip(&shown_files)
        .filter(|((p, _), _)| p.symlink_metadata().is_ok())
        .map(|(_, s)| s.clone())
        .collect();
    if !existing.is_empty() && !opts.force {
        anyhow::bail!(
            "{} already exist{} in {}: lks init replaces nothing (--force replaces {}, --dry-run \
             shows what it would write)",
            write::list(&existing),
            if existing.len() == 1 { "s" } else { "" },
            root.display(),
            if existing.len() == 1 { "it" } else { "them" },
        );
    }
    let written = Written::write(&files)?;
    if let Err(errors) = crate::config::load(Some(&root.join(crate::config::WORKSPACE_FILE))) {
        written.undo();
        for e in &errors.0 {
            eprintln!("{e}");
        }
        anyhow::bail!(
            "lks init guessed wrong: lks cannot load what it would have written (each line above \
             names the guess; this is a bug of lks init, please report it). Nothing was written; \
             `lks init --dry-run` shows the files"
        );
    }
    summary(&root, &found);
    println!("wrote {}", write::list(&shown_files));
    println!(
        "next: `lks config check` checks the files, `lks up` runs every service (edit a file to \
         change a guess; `lks up` picks it up)"
    );
    Ok(())
}

/// The files written so far and what they held, to put back if the whole
/// does not load.
struct Written(Vec<(PathBuf, Option<Vec<u8>>)>);

impl Written {
    /// Writes `files`, or none of them (what was written undone on an error).
    fn write(files: &[(PathBuf, String)]) -> anyhow::Result<Written> {
        let mut done = Written(vec![]);
        for (path, text) in files {
            let before = std::fs::read(path).ok();
            if let Err(e) = std::fs::write(path, text) {
                done.undo();
                return Err(e).with_context(|| format!("cannot write {}", path.display()));
            }
            done.0.push((path.clone(), before));
        }
        Ok(done)
    }

    /// Puts back what the files held (removes the new ones).
    fn undo(self) {
        for (path, before) in self.0.into_iter().rev() {
            let _ = match before {
                Some(bytes) => std::fs::write(&path, bytes),
                None => std::fs::remove_file(&path),
            };
        }
    }
}

/// Prints what was guessed: a line per service, its notes below it, then
/// what made no service.
fn summary(root: &Path, found: &detect::Found) {
    let n = found.services.len();
    println!(
        "lks init: {n} service{} in {}",
        if n == 1 { "" } else { "s" },
        root.display()
    );
    for g in &found.services {
        println!("  {}", describe(root, g));
        for note in &g.notes {
            println!("    note: {note}");
        }
    }
    for note in &found.notes {
        println!("  note: {note}");
    }
}

/// One service's guesses as a sentence: `web: Node.js (package.json):
/// command `node server.js` (package.json scripts.start), restart on change,
/// fall back on package.json, Dockerfile; ...`.
fn describe(root: &Path, g: &Guess) -> String {
    let what = match g.language {
        Some((l, marker)) => format!("{} ({marker})", l.label()),
        None => "a container (Dockerfile)".into(),
    };
    let mut rules = vec![];
    if let Some(c) = &g.command {
        rules.push(format!(
            "command `{}` ({})",
            shell_words::join(&c.value),
            c.from
        ));
    }
    // A step that is also a build step is said once: `build `X`, again on ...`.
    let again = |step: &detect::Step| match step.trigger.as_slice() {
        [] => "after every change".to_string(),
        t => format!("on a change of {}", t.join(" or ")),
    };
    for b in &g.build_local {
        rules.push(match g.run.iter().find(|s| s.cmd == *b) {
            Some(step) => format!("build `{b}`, again {}", again(step)),
            None => format!("build `{b}`"),
        });
    }
    for step in g.run.iter().filter(|s| !g.build_local.contains(&s.cmd)) {
        rules.push(format!("`{}` {}", step.cmd, again(step)));
    }
    rules.push("restart on change".into());
    if !g.ignore.is_empty() {
        rules.push(format!("never sync {}", write::list(&g.ignore)));
    }
    if !g.fall_back_on.is_empty() {
        rules.push(format!("fall back on {}", g.fall_back_on.join(", ")));
    }
    let mut found = vec![];
    if let Some(r) = &g.root {
        found.push(format!("root {r} in containers"));
    }
    if !g.ports.is_empty() {
        let ports: Vec<String> = g.ports.iter().map(|p| p.value.to_string()).collect();
        found.push(format!(
            "port{} {}",
            if ports.len() == 1 { "" } else { "s" },
            ports.join(", ")
        ));
    }
    if !g.env.is_empty() {
        let names: Vec<String> = g.env.iter().map(|(n, _)| n.clone()).collect();
        found.push(format!("env {}", names.join(", ")));
    }
    if !g.deps.is_empty() {
        found.push(format!("deps {}", g.deps.join(", ")));
    }
    if let Some(r) = &g.readiness {
        found.push(match &r.value {
            Probe::Http(url) => format!("ready when {url} answers"),
            Probe::Tcp(address) => format!("ready when {address} accepts"),
        });
    }
    if !g.k8s.is_empty() {
        found.push(format!("manifests {}", g.k8s.join(", ")));
    }
    let mut out = format!("{}: {what}: {}", g.name, rules.join(", "));
    if !found.is_empty() {
        out.push_str("; ");
        out.push_str(&found.join(", "));
    }
    let dir = shown(root, &g.dir);
    if dir != g.name {
        out.push_str(&format!(" (in {dir})"));
    }
    out
}
