//! What a repository holds, as services: one per directory with a
//! `package.json`, `requirements.txt` / `pyproject.toml` or `go.mod` (a
//! Dockerfile alone makes one for the container runtimes), each with the
//! rules of its language, what its Dockerfile and its Kubernetes manifests
//! say, and notes on what could not be guessed.

use super::dockerfile::Dockerfile;
use super::language::{self, Language};
use super::manifests::{self, Localized, Manifest, Probe};
use super::repo;
use std::path::{Path, PathBuf};

/// A guess and what it was guessed from (for the summary and the comments
/// of the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sourced<T> {
    /// The guess.
    pub value: T,
    /// Where it comes from (`package.json scripts.start`, `Dockerfile EXPOSE`).
    pub from: String,
}

impl<T> Sourced<T> {
    /// `value`, guessed from `from`.
    pub fn new(value: T, from: &str) -> Sourced<T> {
        Sourced {
            value,
            from: from.into(),
        }
    }
}

/// A live-update step: a command (argv as one string, no shell) and the
/// globs that run it (none: every change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Step {
    /// The command.
    pub cmd: String,
    /// Its triggers.
    pub trigger: Vec<String>,
}

/// A guessed service: what `lks init` writes in its `lks.service.yaml`.
#[derive(Debug, Clone, Default)]
pub(super) struct Guess {
    /// Its name (the directory's, made a valid one).
    pub name: String,
    /// Its directory (absolute).
    pub dir: PathBuf,
    /// Its language and the file that says so; None: a Dockerfile alone.
    pub language: Option<(Language, &'static str)>,
    /// How the app starts on the local runtime.
    pub command: Option<Sourced<Vec<String>>>,
    /// The local runtime's build (`build.local`), in order.
    pub build_local: Vec<String>,
    /// Environment variables, in order.
    pub env: Vec<(String, Sourced<String>)>,
    /// Services it reaches through `${host:NAME}`.
    pub deps: Vec<String>,
    /// Ports the app listens on.
    pub ports: Vec<Sourced<u16>>,
    /// How to tell it is ready.
    pub readiness: Option<Sourced<Probe>>,
    /// The agent's root in a container, when not `/app`.
    pub root: Option<String>,
    /// Its manifests, relative to its directory.
    pub k8s: Vec<String>,
    /// `live_update.ignore`.
    pub ignore: Vec<String>,
    /// `live_update.run`.
    pub run: Vec<Step>,
    /// `live_update.fall_back_on`.
    pub fall_back_on: Vec<String>,
    /// What could not be guessed, or was left out.
    pub notes: Vec<String>,
    /// Whether it has a Dockerfile.
    pub dockerfile: bool,
}

/// The services found in a repository, and notes on what was passed over.
#[derive(Debug, Default)]
pub(super) struct Found {
    /// The services, in the order of their directories.
    pub services: Vec<Guess>,
    /// Directories and files that made no service, and why.
    pub notes: Vec<String>,
}

/// Finds the services of the repository at `root` (absolute).
pub(super) fn detect(root: &Path) -> Found {
    let repo = repo::walk(root);
    let mut found = Found::default();
    let mut names: Vec<String> = vec![];
    for dir in &repo.dirs {
        let dockerfile = Dockerfile::read(dir);
        let blank = Guess {
            name: unique_name(root, dir, &names),
            dir: dir.clone(),
            dockerfile: dockerfile.is_some(),
            ..Guess::default()
        };
        // The first language whose rules take the directory; else the
        // Dockerfile alone makes a service for the containers.
        let mut why_not = vec![];
        let mut chosen = None;
        for (l, marker) in language::of(dir, dockerfile.as_ref()) {
            let mut g = Guess {
                language: Some((l, marker)),
                ..blank.clone()
            };
            match language::fill(&mut g, l) {
                Ok(()) => {
                    chosen = Some(g);
                    break;
                }
                Err(why) => why_not.push(format!("not a {} service: {why}", l.label())),
            }
        }
        let mut g = match chosen {
            Some(g) => g,
            None if dockerfile.is_none() => {
                let dir = shown(root, dir);
                found
                    .notes
                    .extend(why_not.into_iter().map(|w| format!("{dir}: {w}")));
                continue;
            }
            None => Guess {
                notes: why_not,
                ..blank
            },
        };
        if let Some(d) = &dockerfile {
            from_dockerfile(&mut g, d);
        }
        if g.command.is_none() {
            g.notes.push(match g.language {
                None => "no command for the local runtime (the container runtimes run the \
                         image's CMD): add `command:` to run it locally"
                    .into(),
                Some(_) => "no command guessed: add `command:` (the local runtime runs it)".into(),
            });
        }
        names.push(g.name.clone());
        found.services.push(g);
    }
    let manifests = manifests::read(&repo.yaml);
    from_manifests(root, &mut found, &manifests);
    localize_env(&mut found.services);
    one_service_a_port(&mut found.services);
    leave_nested_services_out(&mut found.services);
    found
}

/// `dir` as the summary shows it: relative to `root`, `.` for the root.
pub(super) fn shown(root: &Path, dir: &Path) -> String {
    match dir.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".into(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => dir.display().to_string(),
    }
}

/// `name` made a valid service name: lowercase letters, digits and `-`,
/// at most 63 characters, starting and ending with a letter or digit.
pub(super) fn sanitize(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out: String = out.trim_matches('-').chars().take(63).collect();
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() { "app".into() } else { out }
}

/// The name of the service in `dir`: its directory's, else with its parent's
/// in front (`services-api`), else numbered, unlike every name in `taken`.
fn unique_name(root: &Path, dir: &Path, taken: &[String]) -> String {
    let base = |d: &Path| {
        sanitize(
            &d.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
        )
    };
    let own = base(dir);
    let parent = dir
        .parent()
        .filter(|p| p.starts_with(root) && *p != root)
        .map(|p| sanitize(&format!("{}-{own}", base(p))));
    let candidates = std::iter::once(own.clone()).chain(parent).chain(
        (2..).map(|i| sanitize(&format!("{}-{i}", own.chars().take(60).collect::<String>()))),
    );
    candidates
        .into_iter()
        .find(|n| !taken.contains(n))
        .expect("numbered names never run out")
}

/// What the Dockerfile adds: a rebuild when it changes, the agent's root
/// (its `WORKDIR`), its `EXPOSE`d ports, its `CMD` when nothing else says
/// how the app starts and it runs here too.
fn from_dockerfile(g: &mut Guess, d: &Dockerfile) {
    g.fall_back_on.push("Dockerfile".into());
    if let Some(w) = &d.workdir
        && w != lks_k8s::inject::DEFAULT_ROOT
        && w != "/"
    {
        g.root = Some(w.clone());
    }
    for p in &d.expose {
        g.ports.push(Sourced::new(*p, "Dockerfile EXPOSE"));
    }
    if g.command.is_none()
        && let Some(cmd) = &d.cmd
        && runs_here(&g.dir, cmd)
    {
        g.command = Some(Sourced::new(cmd.clone(), "Dockerfile CMD"));
    }
}

/// Whether a container's argv runs the same on the host, in `dir`: an
/// interpreter on a file of the directory, or a program of the directory.
fn runs_here(dir: &Path, argv: &[String]) -> bool {
    match argv {
        [first, file, ..] if ["node", "python", "python3"].contains(&first.as_str()) => {
            !file.starts_with('/') && dir.join(file).is_file()
        }
        [program, ..] => program.starts_with("./") && dir.join(program).is_file(),
        [] => false,
    }
}

/// What the manifests add to each service: the files (its `k8s:`), and of
/// its container the ports, literal environment (localized later) and
/// readiness probe.
fn from_manifests(root: &Path, found: &mut Found, manifests: &[Manifest]) {
    let services: Vec<(String, PathBuf)> = found
        .services
        .iter()
        .map(|g| (g.name.clone(), g.dir.clone()))
        .collect();
    let (owned, notes) = manifests::assign(root, manifests, &services);
    found.notes.extend(notes);
    for g in &mut found.services {
        let Some(indices) = owned.get(&g.name) else {
            continue;
        };
        let mine: Vec<&Manifest> = indices.iter().map(|&i| &manifests[i]).collect();
        g.k8s = k8s_entries(&g.dir, &mine);
        let Some(container) = manifests::container_of(&mine, &g.name) else {
            continue;
        };
        let c = manifests::read_container(container);
        for p in c.ports {
            if !g.ports.iter().any(|q| q.value == p) {
                g.ports.push(Sourced::new(p, "containerPort"));
            }
        }
        for (name, value) in c.env {
            if !g.env.iter().any(|(n, _)| *n == name) {
                g.env.push((name, Sourced::new(value, "manifest env")));
            }
        }
        g.notes.extend(
            c.env_skipped
                .into_iter()
                .map(|v| format!("env {v} of the manifest left out")),
        );
        g.readiness = c
            .readiness
            .map(|r| Sourced::new(r, "the manifest's readinessProbe"));
    }
}

/// A service's `k8s:` entries: `k8s/*.yaml` when they are every such file
/// of its `k8s/` directory, else each file relative to its directory.
fn k8s_entries(dir: &Path, mine: &[&Manifest]) -> Vec<String> {
    let rel: Vec<String> = mine.iter().map(|m| relative(dir, &m.path)).collect();
    let mut own_dir: Vec<String> = std::fs::read_dir(dir.join("k8s"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .filter_map(|e| e.file_name().to_str().map(|n| format!("k8s/{n}")))
                .filter(|n| n.ends_with(".yaml"))
                .collect()
        })
        .unwrap_or_default();
    own_dir.sort();
    let mut sorted = rel.clone();
    sorted.sort();
    if !own_dir.is_empty() && sorted == own_dir {
        vec!["k8s/*.yaml".into()]
    } else {
        rel
    }
}

/// `path` relative to `dir` (`../deploy/web.yaml` when beside it).
fn relative(dir: &Path, path: &Path) -> String {
    let common = dir
        .ancestors()
        .find(|a| path.starts_with(a))
        .unwrap_or(Path::new("/"));
    let ups = dir
        .strip_prefix(common)
        .map(|r| r.components().count())
        .unwrap_or(0);
    let down = path.strip_prefix(common).unwrap_or(path);
    let mut out = PathBuf::new();
    for _ in 0..ups {
        out.push("..");
    }
    out.push(down);
    out.display().to_string()
}

/// Environment values made to work on every runtime: a service's in-cluster
/// host becomes `${host:NAME}` (and NAME a dependency, unless that would
/// make a cycle); a value naming a cluster host that is no service here is
/// left out.
fn localize_env(services: &mut [Guess]) {
    let names: Vec<String> = services.iter().map(|g| g.name.clone()).collect();
    for i in 0..services.len() {
        let env = std::mem::take(&mut services[i].env);
        for (var, value) in env {
            match manifests::localize(&var, &value.value, &names) {
                Localized::Value(v, hosts) => {
                    for h in hosts {
                        if h == services[i].name {
                            continue;
                        }
                        if depends_on(services, &h, &services[i].name) {
                            let note = format!("not a dependency of {h}: {h} depends on it");
                            services[i].notes.push(note);
                        } else if !services[i].deps.contains(&h) {
                            services[i].deps.push(h);
                        }
                    }
                    services[i].env.push((var, Sourced { value: v, ..value }));
                }
                Localized::Foreign(host) => services[i].notes.push(format!(
                    "env {var} of the manifest left out: it names {host}, which is no service here"
                )),
            }
        }
    }
}

/// Whether service `from` depends on `to`, directly or not.
fn depends_on(services: &[Guess], from: &str, to: &str) -> bool {
    let mut stack = vec![from.to_string()];
    let mut seen: Vec<String> = vec![];
    while let Some(n) = stack.pop() {
        if n == to {
            return true;
        }
        if seen.contains(&n) {
            continue;
        }
        if let Some(g) = services.iter().find(|g| g.name == n) {
            stack.extend(g.deps.iter().cloned());
        }
        seen.push(n);
    }
    false
}

/// Two services may not declare one port: the first (in directory order)
/// keeps it.
fn one_service_a_port(services: &mut [Guess]) {
    let mut owners: Vec<(u16, String)> = vec![];
    for g in services {
        let name = g.name.clone();
        g.ports
            .retain(|p| match owners.iter().find(|(q, _)| *q == p.value) {
                Some((_, other)) => {
                    g.notes.push(format!(
                        "port {} left out: {other} declares it too",
                        p.value
                    ));
                    false
                }
                None => {
                    owners.push((p.value, name.clone()));
                    true
                }
            });
    }
}

/// A service whose directory holds another's leaves the other's files out
/// (`ignore: [/sub/]`): an edit there is the other's change.
fn leave_nested_services_out(services: &mut [Guess]) {
    let dirs: Vec<PathBuf> = services.iter().map(|g| g.dir.clone()).collect();
    for g in services {
        for d in &dirs {
            if let Ok(rel) = d.strip_prefix(&g.dir)
                && !rel.as_os_str().is_empty()
            {
                g.ignore.push(format!("/{}/", rel.display()));
            }
        }
    }
}
