//! The YAML `lks init` writes: a service file per guess, with a comment on
//! where each guess came from, and the workspace file naming them.

use super::detect::{Guess, Sourced, shown};
use super::manifests::Probe;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The per-service file's name.
pub(super) const SERVICE_FILE: &str = "lks.service.yaml";

/// Comments start at this column when the line leaves room.
const COMMENT_COLUMN: usize = 40;

/// The files to write for `services` found in `root`: `lks.yaml` first, then
/// each service's file, as (absolute path, contents).
pub(super) fn files(root: &Path, services: &[Guess]) -> Vec<(PathBuf, String)> {
    let mut out = vec![(
        root.join(crate::config::WORKSPACE_FILE),
        workspace(root, services),
    )];
    out.extend(
        services
            .iter()
            .map(|g| (g.dir.join(SERVICE_FILE), service(root, g))),
    );
    out
}

/// `lks.yaml`: `*/lks.service.yaml` when every service is a directory of the
/// root (a new one there is picked up), else each file.
fn workspace(root: &Path, services: &[Guess]) -> String {
    let mut s = String::from(
        "# The workspace `lks init` found: `lks up` runs every service it names.\nservices:\n",
    );
    let one_down = services
        .iter()
        .all(|g| g.dir.parent() == Some(root) && g.dir != root);
    if one_down {
        let _ = writeln!(s, "  - {}", scalar(&format!("*/{SERVICE_FILE}")));
    } else {
        for g in services {
            let file = match shown(root, &g.dir).as_str() {
                "." => SERVICE_FILE.to_string(),
                dir => format!("{dir}/{SERVICE_FILE}"),
            };
            let _ = writeln!(s, "  - {}", scalar(&file));
        }
    }
    s
}

/// A service's `lks.service.yaml`.
fn service(root: &Path, g: &Guess) -> String {
    let mut read: Vec<String> = g.language.iter().map(|(_, m)| m.to_string()).collect();
    if g.dockerfile {
        read.push("Dockerfile".into());
    }
    read.extend(g.k8s.iter().cloned());
    let mut s = format!(
        "# Guessed by `lks init` from {} in {}:\n\
         # edit it as you see fit (`lks config check` checks it).\n",
        list(&read),
        shown(root, &g.dir),
    );
    line(&mut s, &format!("name: {}", scalar(&g.name)), None);
    if let Some(c) = &g.command {
        let cmd = shell_words::join(&c.value);
        line(&mut s, &format!("command: {}", scalar(&cmd)), Some(&c.from));
    }
    if !g.env.is_empty() {
        s.push_str("env:\n");
        for (name, value) in &g.env {
            let text = format!("  {}: {}", scalar(name), quoted(&value.value));
            line(&mut s, &text, Some(&value.from));
        }
    }
    if !g.deps.is_empty() {
        line(
            &mut s,
            &format!("deps: {}", flow(&g.deps)),
            Some("its env names them"),
        );
    }
    if !g.ports.is_empty() {
        let ports: Vec<String> = g.ports.iter().map(|p| p.value.to_string()).collect();
        line(
            &mut s,
            &format!("ports: [{}]", ports.join(", ")),
            Some(&sources(&g.ports)),
        );
    }
    if let Some(r) = &g.readiness {
        s.push_str("readiness:\n");
        let check = match &r.value {
            Probe::Http(url) => format!("  http: {}", scalar(url)),
            Probe::Tcp(address) => format!("  tcp: {}", scalar(address)),
        };
        line(&mut s, &check, Some(&r.from));
    }
    if !g.build_local.is_empty() {
        s.push_str("build:\n  local:\n");
        for b in &g.build_local {
            line(&mut s, &format!("    - {}", scalar(b)), None);
        }
    }
    if !g.k8s.is_empty() {
        line(&mut s, &format!("k8s: {}", flow(&g.k8s)), None);
    }
    s.push_str("live_update:\n");
    if let Some(root) = &g.root {
        line(
            &mut s,
            &format!("  root: {}", scalar(root)),
            Some("Dockerfile WORKDIR"),
        );
    }
    if !g.ignore.is_empty() {
        line(&mut s, &format!("  ignore: {}", flow(&g.ignore)), None);
    }
    if !g.run.is_empty() {
        s.push_str("  run:\n");
        for step in &g.run {
            line(&mut s, &format!("    - cmd: {}", scalar(&step.cmd)), None);
            if !step.trigger.is_empty() {
                line(
                    &mut s,
                    &format!("      trigger: {}", flow(&step.trigger)),
                    None,
                );
            }
        }
    }
    line(&mut s, "  restart: on-change", None);
    if !g.fall_back_on.is_empty() {
        line(
            &mut s,
            &format!("  fall_back_on: {}", flow(&g.fall_back_on)),
            None,
        );
    }
    s
}

/// Appends `text` and, when given, `# comment` at [`COMMENT_COLUMN`].
fn line(s: &mut String, text: &str, comment: Option<&str>) {
    s.push_str(text);
    if let Some(c) = comment {
        let pad = COMMENT_COLUMN.saturating_sub(text.chars().count()).max(1);
        let _ = write!(s, "{:pad$}# {c}", "");
    }
    s.push('\n');
}

/// `[a, b]`.
fn flow(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|i| scalar(i)).collect();
    format!("[{}]", items.join(", "))
}

/// The sources of several guesses, each once: `Dockerfile EXPOSE, containerPort`.
fn sources<T>(guesses: &[Sourced<T>]) -> String {
    let mut out: Vec<&str> = vec![];
    for g in guesses {
        if !out.contains(&g.from.as_str()) {
            out.push(&g.from);
        }
    }
    out.join(", ")
}

/// `a`, `a and b`, `a, b and c`.
pub(super) fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// `s` as a YAML scalar: plain when it reads back as the same string in
/// block and flow context alike, else double-quoted.
pub(super) fn scalar(s: &str) -> String {
    let plain_char = |c: char| c.is_ascii_alphanumeric() || " ._/-+=@".contains(c);
    let reserved = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~",
    ]
    .contains(&s.to_ascii_lowercase().as_str());
    let numeric = s.parse::<f64>().is_ok() || s.starts_with(|c: char| c.is_ascii_digit());
    let plain = !s.is_empty()
        && s.chars().all(plain_char)
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || "./_".contains(c))
        && !s.ends_with(' ')
        && !reserved
        && !numeric;
    if plain { s.to_string() } else { quoted(s) }
}

/// `s` double-quoted (JSON's escapes are YAML's).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_quoted_only_when_yaml_would_read_them_otherwise() {
        assert_eq!(scalar("node server.js"), "node server.js");
        assert_eq!(scalar("./bin/worker"), "./bin/worker");
        assert_eq!(scalar(".deps/"), ".deps/");
        assert_eq!(scalar("**/*.go"), "\"**/*.go\"");
        assert_eq!(scalar("18080"), "\"18080\"");
        assert_eq!(scalar("yes"), "\"yes\"");
        assert_eq!(
            scalar("http://127.0.0.1:8080/"),
            "\"http://127.0.0.1:8080/\""
        );
        assert_eq!(scalar("a, b"), "\"a, b\"");
        assert_eq!(scalar("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(scalar(""), "\"\"");
    }

    #[test]
    fn comments_line_up_and_lists_read_as_sentences() {
        let mut s = String::new();
        line(&mut s, "name: web", Some("why"));
        assert_eq!(s, format!("name: web{}# why\n", " ".repeat(31)));
        assert_eq!(list(&["a".into(), "b".into(), "c".into()]), "a, b and c");
    }
}
