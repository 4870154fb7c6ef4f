//! What can be wrong with a configuration, each error pointing at the file,
//! line and column of the offending value.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A position in a configuration file (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, as shown to the user (relative to the current directory when
    /// beneath it).
    pub file: Arc<Path>,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One mistake in the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No `-f FILE` was given and no `lks.yaml` exists in the current
    /// directory or any parent.
    #[error(
        "no lks.yaml in {} or any parent directory (pass -f FILE, or write one with `lks init`, \
         which guesses the services of a repository)",
        dir.display()
    )]
    NoWorkspace {
        /// Where the search started.
        dir: PathBuf,
    },
    /// A configuration file cannot be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file, as shown to the user.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not YAML lks accepts (syntax error, duplicate key, or an
    /// anchor, alias or tag, which lks does not accept).
    #[error("{at}: {message}")]
    Syntax {
        /// Where.
        at: Location,
        /// The parser's complaint.
        message: String,
    },
    /// A key that lks does not know.
    #[error(
        "{at}: unknown key \"{key}\" in {within}{}",
        key_hint(suggestion, expected)
    )]
    UnknownKey {
        /// Where the key is.
        at: Location,
        /// The key as written.
        key: String,
        /// What holds it, e.g. `service "web"`.
        within: String,
        /// The closest known key, when one is close.
        suggestion: Option<String>,
        /// Every key accepted there.
        expected: &'static [&'static str],
    },
    /// A required key is missing.
    #[error("{at}: {within} has no \"{key}\" (required)")]
    MissingKey {
        /// The mapping that lacks it.
        at: Location,
        /// The missing key.
        key: &'static str,
        /// What lacks it, e.g. `the service`.
        within: String,
    },
    /// A value of the wrong type (a string where a list is expected, ...).
    #[error("{at}: {what}: expected {expected}, found {found}")]
    WrongType {
        /// Where the value is.
        at: Location,
        /// What the value is, e.g. `ports of service "web"`.
        what: String,
        /// What was expected, e.g. `a list`.
        expected: &'static str,
        /// What was found, e.g. `"8080"`.
        found: String,
    },
    /// A value of the right type that is not allowed (a bad name, a port out
    /// of range, an unknown restart policy, ...).
    #[error("{at}: {what}: {message}")]
    Invalid {
        /// Where the value is.
        at: Location,
        /// What the value is.
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// A glob that does not compile.
    #[error("{at}: {what}: bad glob \"{glob}\": {message}")]
    BadGlob {
        /// Where the glob is.
        at: Location,
        /// What it is, e.g. `live_update.fall_back_on of service "web"`.
        what: String,
        /// The glob as written.
        glob: String,
        /// What is wrong with it.
        message: String,
    },
    /// A path that must exist does not, or is not of the right kind.
    #[error(
        "{at}: {what}: \"{written}\" {problem}{}",
        looked_for(written, resolved)
    )]
    BadPath {
        /// Where the path is written.
        at: Location,
        /// What it is, e.g. `dir of service "web"`.
        what: String,
        /// The path as written.
        written: String,
        /// The path lks looked for, as shown to the user.
        resolved: PathBuf,
        /// `does not exist`, `is not a directory` or `is not a file`.
        problem: &'static str,
    },
    /// A `services` glob of the workspace file that matches no file.
    #[error("{at}: \"{pattern}\" matches no file")]
    NoMatch {
        /// Where the glob is.
        at: Location,
        /// The glob as written.
        pattern: String,
    },
    /// Two services with the same name.
    #[error("{at}: service \"{name}\" is defined twice (first at {first})")]
    DuplicateService {
        /// The second definition's name.
        at: Location,
        /// The name.
        name: String,
        /// The first definition's name.
        first: Location,
    },
    /// A dependency or alias member that names no service or alias.
    #[error(
        "{at}: {what}: \"{name}\" is not a service or alias{}",
        suggest(suggestion)
    )]
    UnknownName {
        /// Where the name is written.
        at: Location,
        /// What names it, e.g. `deps of service "web"` or `alias "backend"`.
        what: String,
        /// The name.
        name: String,
        /// The closest service or alias name, when one is close.
        suggestion: Option<String>,
    },
    /// Services that depend on each other in a circle, or aliases that
    /// contain each other.
    #[error("{at}: {kind} cycle: {}", cycle.join(" -> "))]
    Cycle {
        /// Where the first name of the cycle names the second.
        at: Location,
        /// `dependency` or `alias`.
        kind: &'static str,
        /// The names around the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// An alias with the name of a service.
    #[error("{at}: alias \"{name}\" has the name of a service (defined at {service})")]
    AliasShadowsService {
        /// Where the alias is named.
        at: Location,
        /// The name.
        name: String,
        /// Where the service is named.
        service: Location,
    },
    /// A `live_update.sync` remote outside the live-update root.
    #[error("{at}: {what}: \"{remote}\" is outside the root \"{root}\"")]
    RemoteOutsideRoot {
        /// Where the remote is written.
        at: Location,
        /// What it is, e.g. `live_update.sync[0].remote of service "web"`.
        what: String,
        /// The remote as written.
        remote: String,
        /// The live-update root.
        root: String,
    },
    /// A service the chosen runtime cannot start as defined.
    #[error("{at}: service \"{service}\" cannot run on the {runtime} runtime: {need}")]
    Unrunnable {
        /// Where the service is named.
        at: Location,
        /// The service.
        service: String,
        /// The runtime's name.
        runtime: &'static str,
        /// What it lacks, and what to do.
        need: String,
    },
    /// A target of `lks up` that names no service or alias.
    #[error("unknown service or alias \"{name}\"{}", suggest(suggestion))]
    UnknownTarget {
        /// The target.
        name: String,
        /// The closest service or alias name, when one is close.
        suggestion: Option<String>,
    },
}

impl ConfigError {
    /// Where the mistake is, when it is in a file.
    pub fn at(&self) -> Option<&Location> {
        use ConfigError::*;
        match self {
            NoWorkspace { .. } | Read { .. } | UnknownTarget { .. } => None,
            Syntax { at, .. }
            | UnknownKey { at, .. }
            | MissingKey { at, .. }
            | WrongType { at, .. }
            | Invalid { at, .. }
            | BadGlob { at, .. }
            | BadPath { at, .. }
            | NoMatch { at, .. }
            | DuplicateService { at, .. }
            | UnknownName { at, .. }
            | Cycle { at, .. }
            | AliasShadowsService { at, .. }
            | RemoteOutsideRoot { at, .. }
            | Unrunnable { at, .. } => Some(at),
        }
    }
}

fn looked_for(written: &str, resolved: &std::path::Path) -> String {
    if resolved == std::path::Path::new(written) {
        String::new()
    } else {
        format!(" (looked for {})", resolved.display())
    }
}

fn suggest(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!("; did you mean \"{s}\"?"),
        None => String::new(),
    }
}

fn key_hint(suggestion: &Option<String>, expected: &[&str]) -> String {
    match suggestion {
        Some(_) => suggest(suggestion),
        None => format!("; expected one of: {}", expected.join(", ")),
    }
}

/// Every mistake found in a configuration, in the order found.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    /// One error a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// The candidate closest to `name`, if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(name, c);
        if score >= 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}
