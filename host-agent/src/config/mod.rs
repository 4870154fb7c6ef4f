//! Configuration: the workspace file `lks.yaml` and the services it names.
//!
//! This module exposes the *validated* model the rest of lks consumes: every
//! path is absolute, every glob compiled, every dependency known and acyclic.
//! Parsing (strict: unknown keys rejected with a did-you-mean, errors that name
//! file, line and column) lives in the submodules.

mod error;
mod graph;
mod host;
mod live_update;
mod service;
#[cfg(test)]
mod tests;
mod values;
mod workspace;
mod yaml;

pub use error::{ConfigError, ConfigErrors, Location};
pub use workspace::FILE_NAME as WORKSPACE_FILE;

use globset::GlobSet;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The workspace's work dir, beside its `lks.yaml`: the local runtime's
/// roots and agent logs, the run's lock. Never synced nor watched.
pub const WORK_DIR: &str = ".lks";

/// Loads the workspace: `file` (`-f FILE`), else `lks.yaml` in the current
/// directory or its nearest parent, and every service file it names. Every
/// mistake found is returned, each naming FILE:LINE:COL (paths relative to the
/// current directory when beneath it).
pub fn load(file: Option<&Path>) -> Result<Workspace, ConfigErrors> {
    let cwd = std::env::current_dir().map_err(|source| ConfigError::Read {
        path: ".".into(),
        source,
    })?;
    let file = match file {
        Some(f) => cwd.join(f),
        None => workspace::find(&cwd)?,
    };
    workspace::load(&file, &cwd)
}

/// A duration as lks.yaml writes one (`250ms`, `90s`, `1m30s`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    values::duration(s)
}

/// The workspace file: `file` (relative to the current directory), else
/// `lks.yaml` here or in the nearest parent.
pub fn find_file(file: Option<&Path>) -> Result<PathBuf, ConfigErrors> {
    let cwd = std::env::current_dir().map_err(|source| ConfigError::Read {
        path: ".".into(),
        source,
    })?;
    match file {
        Some(f) => Ok(cwd.join(f)),
        None => Ok(workspace::find(&cwd)?),
    }
}

/// `lks config check [-f FILE] [--runtime R]`: loads the workspace, checks
/// that `runtime` (default: the one `lks up` would choose) can run every
/// service, and prints a one-line summary to stdout, or every error to stderr
/// (one a line) and fails.
pub fn check_command(
    file: Option<&Path>,
    runtime: Option<crate::runtime::Kind>,
) -> anyhow::Result<()> {
    let loaded = load(file).and_then(|ws| {
        let kind = runtime.unwrap_or_else(|| crate::up::default_runtime(&ws, &Default::default()));
        let unmet = crate::runtime::needs::unmet(&ws, kind);
        if unmet.is_empty() {
            Ok((ws, kind))
        } else {
            Err(ConfigErrors(unmet))
        }
    });
    match loaded {
        Ok((ws, kind)) => {
            println!("{}, for the {} runtime", summary(&ws), kind.name());
            Ok(())
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            let n = errors.0.len();
            anyhow::bail!(
                "{n} error{} in the configuration",
                if n == 1 { "" } else { "s" }
            )
        }
    }
}

/// `ok: N services (a, b, c), M aliases`.
fn summary(ws: &Workspace) -> String {
    let names: Vec<&str> = ws.services.keys().map(String::as_str).collect();
    let count =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let listed = if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    };
    format!(
        "ok: {}{listed}, {}",
        count(names.len(), "service", "services"),
        count(ws.aliases.len(), "alias", "aliases"),
    )
}

/// The whole workspace: every service and alias, from `lks.yaml` and the
/// per-service files it names.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The workspace file.
    pub file: PathBuf,
    /// Its directory; relative paths in it are relative to this.
    pub root: PathBuf,
    /// Services by name.
    pub services: BTreeMap<String, Service>,
    /// Aliases: a name for a group of services (or other aliases).
    pub aliases: BTreeMap<String, Vec<String>>,
    /// Image registry (`host:port`), for the container runtimes.
    pub registry: Option<String>,
    /// Local cluster settings, for the kube runtime.
    pub cluster: Option<Cluster>,
    /// Which Kubernetes context and namespace the kube runtime uses, and
    /// which non-local contexts it may apply to.
    pub kube: Kube,
    /// Where each service's name is written (for errors about a service as
    /// a whole).
    pub named_at: BTreeMap<String, Location>,
}

/// The `kube:` settings of `lks.yaml`; every field may be overridden on the
/// command line.
#[derive(Debug, Clone, Default)]
pub struct Kube {
    /// The kubeconfig context (default: the current one).
    pub context: Option<String>,
    /// The namespace for objects that name none (default: the context's).
    pub namespace: Option<String>,
    /// Contexts lks may apply to although they do not look local.
    pub allow_contexts: Vec<String>,
}

/// The local cluster lks creates.
#[derive(Debug, Clone)]
#[allow(dead_code)] // read by the kube runtime, still to come
pub struct Cluster {
    /// kind cluster name.
    pub name: String,
    /// Pinned Kubernetes version, e.g. `1.31.0`.
    pub kubernetes_version: Option<String>,
}

/// One service.
#[derive(Debug, Clone)]
pub struct Service {
    /// Unique name (`[a-z0-9-]+`).
    pub name: String,
    /// The file that defines it.
    pub file: PathBuf,
    /// The service's directory (absolute): where its file is, unless overridden.
    pub dir: PathBuf,
    /// How to build it.
    pub build: Build,
    /// How the app starts (argv) on the local runtime; containers run it only
    /// when neither `entrypoint` nor their image says what to run.
    pub command: Vec<String>,
    /// What the service's containers run instead of their image's ENTRYPOINT
    /// and CMD (Tilt's `docker_build(entrypoint=...)`), on the docker and
    /// kube runtimes; empty: the image's.
    pub entrypoint: Vec<String>,
    /// `debug:`: how `lks up --debug` runs it (instead of the guess).
    pub debug: Option<crate::debug::DebugConfig>,
    /// Set by `lks up --debug`: the app runs under its debugger.
    pub debugging: Option<crate::debug::Debugging>,
    /// Environment for the app and its steps.
    pub env: BTreeMap<String, String>,
    /// Services that must be ready before this one starts.
    pub deps: Vec<String>,
    /// Ports the app listens on.
    pub ports: Vec<u16>,
    /// How to tell it is ready; none means "ready once started".
    pub readiness: Option<Readiness>,
    /// How changes reach the running service.
    pub live_update: LiveUpdate,
    /// Kubernetes manifests (`k8s:`: paths or globs), in order.
    pub k8s: Vec<PathBuf>,
    /// The workspace's `lks.yaml` and its work dir ([`WORK_DIR`]).
    pub workspace_files: Vec<PathBuf>,
    /// A host-side resource (`host:`): commands lks runs on the host
    /// itself, whatever the runtime; it has no build, manifests nor app
    /// command then.
    pub host: Option<Host>,
}

impl Service {
    /// The files lks reads and writes itself: the service's file, its
    /// manifests, the workspace's file and work dir. They are neither built
    /// into its image nor synced nor watched: a change to one re-applies
    /// (kube) instead of rebuilding, and lks's own writes (agent logs, roots)
    /// never wake it.
    pub fn own_files(&self) -> Vec<PathBuf> {
        std::iter::once(self.file.clone())
            .chain(self.k8s.iter().cloned())
            .chain(self.workspace_files.iter().cloned())
            .collect()
    }

    /// The workspace's work dir ([`WORK_DIR`]), once the workspace is loaded.
    pub fn work_dir(&self) -> Option<&Path> {
        self.workspace_files
            .iter()
            .find(|f| f.file_name().is_some_and(|n| n == WORK_DIR))
            .map(PathBuf::as_path)
    }
}

/// A host-side resource: what Tilt's `local_resource` is for (a compile on
/// the host, code generation, a one-shot job, a host-side server). It runs
/// in the service's directory with its `env`, on the host, whatever the
/// runtime.
#[derive(Debug, Clone)]
pub struct Host {
    /// Commands (argv each, no shell) run in order: at start, on a change
    /// of a watched file, on `lks trigger`. The first failure stops the rest.
    pub run: Vec<Vec<String>>,
    /// Globs (relative to the service dir) whose changes run it again.
    pub watch: Vec<String>,
    /// `watch`, compiled.
    pub watch_matcher: GlobSet,
    /// Changes of watched files wait for `lks trigger`.
    pub manual: bool,
    /// A long-running process (argv) started once `run` succeeded, and
    /// restarted after each successful run again; empty: none.
    pub serve: Vec<String>,
}

/// How a service is built.
#[derive(Debug, Clone)]
pub struct Build {
    /// Docker build context (absolute).
    pub context: PathBuf,
    /// Dockerfile (absolute).
    pub dockerfile: PathBuf,
    /// Docker build args.
    pub args: BTreeMap<String, String>,
    /// Docker build target stage.
    pub target: Option<String>,
    /// The local runtime's build: commands (argv each) run in the service's
    /// work root, in order, before the app starts and on every rebuild
    /// (e.g. `npm install`).
    pub local: Vec<Vec<String>>,
    /// Files of the context that never go into the image (what lks reads
    /// itself: the service's manifests and its file; see `Service::own_files`).
    pub exclude: Vec<PathBuf>,
}

/// A readiness check, run until it passes.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// What to check.
    pub check: Check,
    /// Time between attempts.
    pub period: Duration,
    /// Give up (and report the service as failed) after this long.
    pub timeout: Duration,
}

/// The kinds of readiness check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// An HTTP GET that answers 2xx or 3xx, e.g. `http://127.0.0.1:8080/health`.
    Http {
        /// The URL.
        url: String,
    },
    /// A TCP connect to `host:port`.
    Tcp {
        /// The address.
        address: String,
    },
    /// A command (argv) that exits 0, run in the service's root.
    Exec {
        /// The command.
        argv: Vec<String>,
    },
}

/// Live-update rules of a service.
#[derive(Debug, Clone)]
pub struct LiveUpdate {
    /// The agent's root in the container (default `/app`); `remote` paths of
    /// sync mappings are relative to it.
    pub root: String,
    /// `local_root`: the agent's root on the local runtime (absolute); None:
    /// `.lks/SERVICE/root`. Named, it can match the container's (`/app`)
    /// for apps that use absolute paths.
    pub local_root: Option<PathBuf>,
    /// Local directory -> remote directory mappings.
    pub sync: Vec<SyncMapping>,
    /// Extra gitignore-style patterns never synced (relative to the service dir).
    pub ignore: Vec<String>,
    /// Steps run after files are synced, in order, when their triggers match.
    pub run: Vec<RunStep>,
    /// What happens to the app after a synced change.
    pub restart: Restart,
    /// With `restart: {on-change: [globs]}`: only changes to paths matching
    /// these (relative to the service dir) restart the app; empty: any change.
    pub restart_on: Vec<String>,
    /// `restart_on`, compiled.
    pub restart_matcher: GlobSet,
    /// Changes matching these globs (relative to the service dir) cannot be
    /// synced: they rebuild the service.
    pub fall_back_on: Vec<String>,
    /// `fall_back_on`, compiled.
    pub fall_back_matcher: GlobSet,
}

/// One local -> remote mapping.
#[derive(Debug, Clone)]
pub struct SyncMapping {
    /// Local directory (absolute).
    pub local: PathBuf,
    /// Directory beneath the agent's root, `/`-separated; empty for the root.
    pub remote: String,
    /// The allow-list (`only:`): paths or globs relative to `local`; when not
    /// empty, only what they name (and what is beneath it) is synced.
    pub only: Vec<String>,
}

/// A step of a live update.
#[derive(Debug, Clone)]
pub struct RunStep {
    /// The command as written (the script of an `sh:` step).
    pub cmd: String,
    /// The command split into argv (shell words; no shell is involved), or
    /// `/bin/sh -c SCRIPT` for an `sh:` step.
    pub argv: Vec<String>,
    /// Where it runs, relative to the agent's root (`""`: the root).
    pub workdir: String,
    /// Globs (relative to the service dir); empty means "every batch".
    pub triggers: Vec<String>,
    /// `triggers`, compiled.
    pub trigger_matcher: GlobSet,
}

/// Restart policy after a live update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Restart the app after every synced change (nodemon-style).
    OnChange,
    /// Never: the app reloads itself.
    Never,
}

/// `value` with every `${host:NAME}` replaced by `host(NAME)`: the address
/// under which service NAME is reached (it differs per runtime).
pub fn substitute_hosts(value: &str, mut host: impl FnMut(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find("${host:") {
        let after = &rest[i + 7..];
        let Some(j) = after.find('}') else { break };
        out.push_str(&rest[..i]);
        out.push_str(&host(&after[..j]));
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    out
}

/// The service names that the `${host:NAME}` in `value` reference.
pub fn host_refs(value: &str) -> Vec<String> {
    let mut out = vec![];
    substitute_hosts(value, |n| {
        out.push(n.to_string());
        String::new()
    });
    out
}
