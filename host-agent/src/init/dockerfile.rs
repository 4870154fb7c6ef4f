//! What `lks init` reads in a Dockerfile: the base images (a hint of the
//! language), and of the final stage its `WORKDIR` (where the app lives in
//! the container: the agent's root), `EXPOSE`d TCP ports and exec-form `CMD`.

use std::path::Path;

/// The parts of a Dockerfile `lks init` guesses from.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Dockerfile {
    /// The image of every `FROM`, in order (`${ARG}` left as written).
    pub bases: Vec<String>,
    /// The final stage's working directory, when it is an absolute path.
    pub workdir: Option<String>,
    /// The final stage's `EXPOSE`d TCP ports (`${VAR}` ports are skipped).
    pub expose: Vec<u16>,
    /// The final stage's `CMD` in exec form (`["node", "server.js"]`).
    pub cmd: Option<Vec<String>>,
}

impl Dockerfile {
    /// `dir/Dockerfile`, if there is one.
    pub fn read(dir: &Path) -> Option<Dockerfile> {
        std::fs::read_to_string(dir.join("Dockerfile"))
            .ok()
            .map(|t| parse(&t))
    }

    /// Whether a base image is the official image of `language` (`node`,
    /// `python`, `golang`), by the last component of its repository.
    pub fn based_on(&self, language: &str) -> bool {
        self.bases.iter().any(|b| {
            let repo = crate::docker::reference::Reference::parse(b).repository;
            repo.rsplit('/').next() == Some(language)
        })
    }
}

/// Reads the instructions of `text` (continuation lines joined, comments
/// left out); what it does not understand it skips.
pub(super) fn parse(text: &str) -> Dockerfile {
    let mut out = Dockerfile::default();
    for line in instructions(text) {
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let rest = rest.trim();
        match word.to_ascii_uppercase().as_str() {
            "FROM" => {
                // A new stage: what the earlier one said is not the final image's.
                let image = rest
                    .split_whitespace()
                    .find(|w| !w.starts_with("--"))
                    .unwrap_or_default();
                out.bases.push(image.to_string());
                out.workdir = None;
                out.expose.clear();
                out.cmd = None;
            }
            "WORKDIR" => out.workdir = workdir(out.workdir.as_deref(), rest),
            "EXPOSE" => {
                for port in rest.split_whitespace() {
                    let (number, protocol) = port.split_once('/').unwrap_or((port, "tcp"));
                    if protocol.eq_ignore_ascii_case("tcp")
                        && let Ok(p) = number.parse::<u16>()
                        && p != 0
                        && !out.expose.contains(&p)
                    {
                        out.expose.push(p);
                    }
                }
            }
            "CMD" => out.cmd = serde_json::from_str::<Vec<String>>(rest).ok(),
            _ => {}
        }
    }
    out
}

/// The working directory after `WORKDIR written` in one that was `current`:
/// None when it is not known (a variable in it, or relative to an unknown one).
fn workdir(current: Option<&str>, written: &str) -> Option<String> {
    if written.contains('$') {
        return None;
    }
    let written = written.trim_end_matches('/');
    let path = if written.starts_with('/') || written.is_empty() {
        written.to_string()
    } else {
        format!("{}/{written}", current?.trim_end_matches('/'))
    };
    Some(if path.is_empty() { "/".into() } else { path })
}

/// The instructions of a Dockerfile, one a line: `\`-continued lines joined,
/// comment and empty lines dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut out = vec![];
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_stage_says_where_the_app_lives_what_it_exposes_and_runs() {
        let d = parse(
            "# syntax=docker/dockerfile:1\n\
             FROM golang:1.22 AS build\n\
             WORKDIR /src\n\
             EXPOSE 9999\n\
             CMD [\"go\", \"run\", \".\"]\n\
             FROM --platform=linux/amd64 gcr.io/distroless/static\n\
             WORKDIR /srv\n\
             WORKDIR app\n\
             EXPOSE 8080/tcp 53/udp ${PORT} \\\n    9090\n\
             CMD [\"./server\", \"--port\", \"8080\"]\n",
        );
        assert_eq!(d.bases, ["golang:1.22", "gcr.io/distroless/static"]);
        assert!(d.based_on("golang") && !d.based_on("node"));
        assert_eq!(d.workdir.as_deref(), Some("/srv/app"));
        assert_eq!(d.expose, [8080, 9090]);
        assert_eq!(d.cmd.unwrap(), ["./server", "--port", "8080"]);
    }

    #[test]
    fn a_shell_form_cmd_and_a_variable_workdir_are_not_guessed_from() {
        let d = parse("FROM node:20\nWORKDIR $HOME/app\nCMD node server.js\n");
        assert!(d.based_on("node"));
        assert_eq!((d.workdir, d.cmd), (None, None));
    }
}
