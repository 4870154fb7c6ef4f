//! The workspace file `lks.yaml`: finding it, reading it and the per-service
//! files it names, then the workspace-wide checks.

use super::error::{ConfigError, ConfigErrors, Location};
use super::graph::{self, AliasDef};
use super::service::{self, Parsed};
use super::values::{self, name_problem};
use super::yaml::{self, Doc, get};
use super::{Cluster, Kube, Workspace};
use marked_yaml::Node;
use std::path::{Path, PathBuf};

/// The workspace file's name.
pub const FILE_NAME: &str = "lks.yaml";

const KEYS: &[&str] = &["services", "aliases", "registry", "cluster", "kube"];
const CLUSTER_KEYS: &[&str] = &["name", "kubernetes_version"];
const KUBE_KEYS: &[&str] = &["context", "namespace", "allow_contexts"];

/// `lks.yaml` in `dir` or its nearest parent that has one.
pub(super) fn find(dir: &Path) -> Result<PathBuf, ConfigError> {
    dir.ancestors()
        .map(|d| d.join(FILE_NAME))
        .find(|f| f.is_file())
        .ok_or_else(|| ConfigError::NoWorkspace {
            dir: dir.to_path_buf(),
        })
}

/// Reads the workspace file `file` and every service file it names; paths in
/// errors are shown relative to `base` when beneath it.
pub(super) fn load(file: &Path, base: &Path) -> Result<Workspace, ConfigErrors> {
    let file = base.join(file);
    let file = file.canonicalize().map_err(|source| ConfigError::Read {
        path: file.strip_prefix(base).unwrap_or(&file).to_path_buf(),
        source,
    })?;
    let root = file.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut errors = vec![];
    let Some(node) = read(&file, base, &mut errors) else {
        return Err(ConfigErrors(errors));
    };
    let mut doc = Doc {
        shown: show(&file, base).into(),
        base,
        errors: &mut errors,
    };
    let map = doc
        .mapping(&node, "the workspace", "the workspace", KEYS)
        .expect("top level is a mapping");
    let mut ws = Workspace {
        file: file.clone(),
        root: root.clone(),
        services: Default::default(),
        aliases: Default::default(),
        registry: None,
        cluster: None,
        kube: Kube::default(),
        named_at: Default::default(),
    };
    if let Some((_, v)) = get(map, "registry") {
        ws.registry = registry(&mut doc, v);
    }
    if let Some((_, v)) = get(map, "cluster") {
        ws.cluster = cluster(&mut doc, v);
    }
    if let Some((_, v)) = get(map, "kube") {
        ws.kube = kube(&mut doc, v);
    }
    let aliases = match get(map, "aliases") {
        Some((_, v)) => aliases(&mut doc, v),
        None => vec![],
    };
    let mut parsed = vec![];
    let mut loaded: Vec<PathBuf> = vec![];
    match get(map, "services") {
        None => {
            let at = doc.map_at(map);
            doc.push(ConfigError::MissingKey {
                at,
                key: "services",
                within: "the workspace".into(),
            });
        }
        Some((_, v)) => {
            if let Node::Sequence(seq) = v {
                for (i, item) in seq.iter().enumerate() {
                    let what = format!("services[{i}]");
                    match item {
                        Node::Mapping(m) => parsed.extend(service::service(&mut doc, m, &file)),
                        Node::Scalar(s) if !yaml::is_null(s) => {
                            for f in expand(&mut doc, item, s.as_str(), &root, &what) {
                                if !loaded.contains(&f) {
                                    loaded.push(f.clone());
                                    parsed.extend(service_file(&f, base, doc.errors));
                                }
                            }
                        }
                        _ => doc.wrong_type(item, &what, "a path, a glob or a service mapping"),
                    }
                }
            } else {
                doc.wrong_type(v, "services", "a list of service files, globs or services");
            }
        }
    }
    drop(doc);
    graph::check(&mut ws, parsed, aliases, &mut errors);
    if errors.is_empty() {
        let lks_own = vec![ws.file.clone(), ws.root.join(super::WORK_DIR)];
        for service in ws.services.values_mut() {
            service.workspace_files = lks_own.clone();
        }
        return Ok(ws);
    }
    // File by file (the workspace file first, then in the order loaded), top
    // to bottom.
    let mut files = vec![show(&file, base)];
    files.extend(loaded.iter().map(|f| show(f, base)));
    errors.sort_by_key(|e| match e.at() {
        Some(at) => (
            files
                .iter()
                .position(|f| **f == *at.file)
                .unwrap_or(usize::MAX),
            at.line,
            at.column,
        ),
        None => (usize::MAX, 0, 0),
    });
    Err(ConfigErrors(errors))
}

fn show(path: &Path, base: &Path) -> PathBuf {
    path.strip_prefix(base)
        .map_or_else(|_| path.to_path_buf(), Path::to_path_buf)
}

/// Reads and parses `file`; None (with the error recorded) when it cannot.
fn read(file: &Path, base: &Path, errors: &mut Vec<ConfigError>) -> Option<Node> {
    let shown = show(file, base);
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(source) => {
            errors.push(ConfigError::Read {
                path: shown,
                source,
            });
            return None;
        }
    };
    match yaml::parse(&shown, &text) {
        Ok(node) => Some(node),
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

/// A per-service file.
fn service_file(file: &Path, base: &Path, errors: &mut Vec<ConfigError>) -> Option<Parsed> {
    let node = read(file, base, errors)?;
    let mut doc = Doc {
        shown: show(file, base).into(),
        base,
        errors,
    };
    let Node::Mapping(map) = &node else {
        unreachable!("the parser insists on a mapping")
    };
    service::service(&mut doc, map, file)
}

/// The files a `services` entry names: a path, or a glob relative to the
/// workspace directory, sorted. Names no file (with the error recorded) when
/// the path does not exist or the glob matches nothing.
fn expand(doc: &mut Doc, node: &Node, pattern: &str, root: &Path, what: &str) -> Vec<PathBuf> {
    if !values::is_glob(pattern) {
        return service::existing(doc, node, what, pattern, root, false)
            .into_iter()
            .collect();
    }
    let glob = match values::glob(pattern) {
        Ok(g) => g.compile_matcher(),
        Err(message) => {
            let at = doc.at_node(node);
            doc.push(ConfigError::BadGlob {
                at,
                what: what.into(),
                glob: pattern.into(),
                message,
            });
            return vec![];
        }
    };
    // Walk only beneath the glob's literal prefix, and only as deep as it can
    // match unless it has `**`.
    let parts: Vec<&str> = pattern.split('/').collect();
    let literal = parts.iter().take_while(|p| !values::is_glob(p)).count();
    let start = root.join(parts[..literal].join("/"));
    let depth = if pattern.contains("**") {
        usize::MAX
    } else {
        parts.len() - literal
    };
    let mut found = vec![];
    walk(&start, root, depth, &glob, &mut found);
    found.sort();
    if found.is_empty() {
        let at = doc.at_node(node);
        doc.push(ConfigError::NoMatch {
            at,
            pattern: pattern.into(),
        });
    }
    found
}

fn walk(
    dir: &Path,
    root: &Path,
    depth: usize,
    glob: &globset::GlobMatcher,
    found: &mut Vec<PathBuf>,
) {
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let rel = path.strip_prefix(root).unwrap_or(&path);
        if kind.is_dir() {
            if entry.file_name() != ".git" {
                walk(&path, root, depth - 1, glob, found);
            }
        } else if glob.is_match(rel) && path.is_file() {
            found.push(path.canonicalize().unwrap_or(path));
        }
    }
}

fn registry(doc: &mut Doc, node: &Node) -> Option<String> {
    let r = doc.nonempty(node, "registry")?;
    let good = !r.contains("://")
        && !r.contains(char::is_whitespace)
        && r.rsplit_once(':')
            .is_none_or(|(host, port)| !host.is_empty() && values::port(port).is_ok());
    if !good {
        doc.invalid(
            node,
            "registry",
            format!("\"{r}\" is not host:port (e.g. \"localhost:5000\")"),
        );
        return None;
    }
    Some(r)
}

fn cluster(doc: &mut Doc, node: &Node) -> Option<Cluster> {
    let map = doc.mapping(node, "cluster", "cluster", CLUSTER_KEYS)?;
    let name = match get(map, "name") {
        Some((_, v)) => doc
            .nonempty(v, "cluster.name")
            .and_then(|n| match name_problem(&n) {
                Some(p) => {
                    doc.invalid(v, "cluster.name", p);
                    None
                }
                None => Some(n),
            }),
        None => {
            let at = doc.map_at(map);
            doc.push(ConfigError::MissingKey {
                at,
                key: "name",
                within: "cluster".into(),
            });
            None
        }
    };
    let version = get(map, "kubernetes_version").and_then(|(_, v)| {
        let ver = doc.nonempty(v, "cluster.kubernetes_version")?;
        let digits = ver.strip_prefix('v').unwrap_or(&ver);
        let parts: Vec<&str> = digits.split('.').collect();
        let good = (2..=3).contains(&parts.len())
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if !good {
            let message = format!("\"{ver}\" is not a version like \"1.31.0\"");
            doc.invalid(v, "cluster.kubernetes_version", message);
            return None;
        }
        Some(ver)
    });
    Some(Cluster {
        name: name?,
        kubernetes_version: version,
    })
}

fn kube(doc: &mut Doc, node: &Node) -> Kube {
    let mut kube = Kube::default();
    let Some(map) = doc.mapping(node, "kube", "kube", KUBE_KEYS) else {
        return kube;
    };
    kube.context = get(map, "context").and_then(|(_, v)| doc.nonempty(v, "kube.context"));
    kube.namespace = get(map, "namespace").and_then(|(_, v)| {
        let ns = doc.nonempty(v, "kube.namespace")?;
        match name_problem(&ns) {
            Some(p) => {
                doc.invalid(v, "kube.namespace", p);
                None
            }
            None => Some(ns),
        }
    });
    if let Some((_, v)) = get(map, "allow_contexts")
        && let Some(list) = doc.strings(v, "kube.allow_contexts")
    {
        kube.allow_contexts = list.into_iter().map(|(s, _)| s).collect();
    }
    kube
}

fn aliases(doc: &mut Doc, node: &Node) -> Vec<AliasDef> {
    let Node::Mapping(map) = node else {
        doc.wrong_type(node, "aliases", "a mapping of names to lists of names");
        return vec![];
    };
    let mut out = vec![];
    for (k, v) in map.iter() {
        let at: Location = doc.at(k.span());
        let name = k.as_str().to_string();
        if let Some(p) = name_problem(&name) {
            doc.push(ConfigError::Invalid {
                at: at.clone(),
                what: "aliases".into(),
                message: p,
            });
        }
        let what = format!("alias \"{name}\"");
        let Some(members) = doc.strings(v, &what) else {
            continue;
        };
        if members.is_empty() {
            doc.invalid(v, &what, "is empty");
        }
        out.push(AliasDef { name, at, members });
    }
    out
}
