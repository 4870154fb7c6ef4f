//! One service: from its YAML mapping (a per-service file, or inline in the
//! workspace file) to a [`Service`], every mistake recorded with its position.

use super::error::{ConfigError, Location};
use super::live_update::live_update;
use super::values::{self, name_problem};
use super::yaml::{Doc, get, sub};
use super::{Build, Check, Readiness, Service};
use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A service as read, with the positions the workspace-wide checks need.
pub(super) struct Parsed {
    /// The service (fields that had mistakes are left at their defaults).
    pub service: Service,
    /// Where its name is written.
    pub name_at: Location,
    /// Its dependencies as written, with positions.
    pub deps: Vec<(String, Location)>,
    /// The services its `env` reaches through `${host:NAME}`, with positions.
    pub host_refs: Vec<(String, Location)>,
    /// Its ports, with positions.
    pub ports_at: Vec<(u16, Location)>,
}

const KEYS: &[&str] = &[
    "name",
    "dir",
    "command",
    "entrypoint",
    "debug",
    "env",
    "deps",
    "ports",
    "readiness",
    "build",
    "k8s",
    "live_update",
    "host",
];
const READINESS_KEYS: &[&str] = &["http", "tcp", "exec", "period", "timeout"];
const BUILD_KEYS: &[&str] = &["context", "dockerfile", "args", "target", "local"];

/// Default time between readiness attempts.
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(250);
/// Default time after which a service that is not ready has failed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads the service mapping `map`, defined in `file` (absolute); relative
/// paths in it are relative to the file's directory. None when it has no
/// valid name (its other mistakes are still recorded).
pub(super) fn service(doc: &mut Doc, map: &MarkedMappingNode, file: &Path) -> Option<Parsed> {
    let base = file.parent().unwrap_or(Path::new("/"));
    let name = match get(map, "name") {
        None => {
            let at = doc.map_at(map);
            doc.push(ConfigError::MissingKey {
                at,
                key: "name",
                within: "the service".into(),
            });
            None
        }
        Some((_, v)) => doc
            .string(v, "name of the service")
            .and_then(|n| match name_problem(&n) {
                Some(p) => {
                    doc.invalid(v, "name of the service", p);
                    None
                }
                None => Some((n, doc.at_node(v))),
            }),
    };
    let owner = match &name {
        Some((n, _)) => format!("service \"{n}\""),
        None => "the service".to_string(),
    };
    doc.check_keys(map, &owner, KEYS);
    let what = |key: &str| format!("{key} of {owner}");

    let dir = match get(map, "dir") {
        Some((_, v)) => doc
            .nonempty(v, &what("dir"))
            .and_then(|d| existing(doc, v, &what("dir"), &d, base, true))
            .unwrap_or_else(|| base.to_path_buf()),
        None => base.to_path_buf(),
    };

    let mut service = Service {
        name: name.as_ref().map(|(n, _)| n.clone()).unwrap_or_default(),
        file: file.to_path_buf(),
        dir: dir.clone(),
        build: default_build(&dir),
        command: vec![],
        entrypoint: vec![],
        debug: None,
        debugging: None,
        env: Default::default(),
        deps: vec![],
        ports: vec![],
        readiness: None,
        live_update: super::live_update::default_live_update(&dir),
        k8s: vec![],
        workspace_files: vec![],
        host: None,
    };
    let mut deps = vec![];
    let mut host_refs = vec![];
    let mut ports_at = vec![];
    for (key, v) in map.iter() {
        let w = what(key.as_str());
        match key.as_str() {
            "command" => {
                if let Some((_, argv)) = doc.command(v, &w) {
                    service.command = argv;
                }
            }
            "entrypoint" => {
                if let Some((_, argv)) = doc.command(v, &w) {
                    service.entrypoint = argv;
                }
            }
            "debug" => service.debug = debug(doc, v, &w),
            "env" => {
                service.env = doc.string_map(v, &w).unwrap_or_default();
                if let Node::Mapping(m) = v {
                    for (_, value) in m.iter() {
                        if let Node::Scalar(s) = value {
                            for name in super::host_refs(s.as_str()) {
                                host_refs.push((name, doc.at_node(value)));
                            }
                        }
                    }
                }
            }
            "deps" => {
                deps = doc.strings(v, &w).unwrap_or_default();
                for (i, (d, at)) in deps.iter().enumerate() {
                    if deps[..i].iter().any(|(e, _)| e == d) {
                        let (at, message) = (at.clone(), format!("\"{d}\" is listed twice"));
                        doc.push(ConfigError::Invalid {
                            at,
                            what: w.clone(),
                            message,
                        });
                    }
                }
            }
            "ports" => {
                ports_at = ports(doc, v, &w).unwrap_or_default();
                service.ports = ports_at.iter().map(|(p, _)| *p).collect();
            }
            "readiness" => service.readiness = readiness(doc, v, &w),
            "build" => {
                let at = doc.at(key.span());
                if let Some(b) = build(doc, v, &w, &dir, at) {
                    service.build = b;
                }
            }
            "live_update" => {
                if let Some(lu) = live_update(doc, v, &w, &dir) {
                    service.live_update = lu;
                }
            }
            "k8s" => service.k8s = manifests(doc, v, &w, &dir),
            "host" => {
                service.host = super::host::host(doc, v, &w);
                super::host::conflicts(doc, map, &owner);
            }
            _ => {}
        }
    }
    let (_, name_at) = name?;
    Some(Parsed {
        service,
        name_at,
        deps,
        host_refs,
        ports_at,
    })
}

/// `debug:`: `{command, port}`, both optional.
fn debug(doc: &mut Doc, node: &Node, what: &str) -> Option<crate::debug::DebugConfig> {
    let map = doc.mapping(node, what, what, &["command", "port"])?;
    let mut config = crate::debug::DebugConfig::default();
    if let Some((_, v)) = get(map, "command") {
        config.command = doc.command(v, &sub(what, "command"))?.1;
    }
    if let Some((_, v)) = get(map, "port") {
        let w = sub(what, "port");
        match doc.string(v, &w).map(|p| p.parse::<u16>()) {
            Some(Ok(p)) if p != 0 => config.port = Some(p),
            Some(_) => {
                doc.invalid(v, &w, "a port from 1 to 65535");
                return None;
            }
            None => return None,
        }
    }
    Some(config)
}

/// `k8s:`: manifest files, each a path or a glob relative to the service
/// directory; a path must exist and a glob must match at least one file.
fn manifests(doc: &mut Doc, node: &Node, what: &str, dir: &Path) -> Vec<PathBuf> {
    let Some(entries) = doc.list(
        node,
        what,
        "a list of manifest files or globs",
        |d, n, w| d.nonempty(n, w).map(|s| (s, n.clone())),
    ) else {
        return vec![];
    };
    let mut out: Vec<PathBuf> = vec![];
    for (written, n) in entries {
        if !written.contains(['*', '?', '[', '{']) {
            out.extend(existing(doc, &n, what, &written, dir, false));
            continue;
        }
        let matcher = match values::glob(&written) {
            Ok(g) => g.compile_matcher(),
            Err(e) => {
                doc.invalid(&n, what, format!("bad glob {written:?}: {e}"));
                continue;
            }
        };
        let mut found: Vec<PathBuf> = ignore::WalkBuilder::new(dir)
            .standard_filters(false)
            .filter_entry(|e| e.file_name() != ".git")
            .build()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_some_and(|t| t.is_file()))
            .filter(|e| {
                e.path()
                    .strip_prefix(dir)
                    .is_ok_and(|rel| matcher.is_match(rel))
            })
            .map(|e| e.into_path())
            .collect();
        if found.is_empty() {
            doc.invalid(&n, what, format!("{written:?} matches no file"));
        }
        found.sort();
        out.extend(found);
    }
    out.dedup();
    for f in &out {
        if let Some(e) = manifest_error(f, what) {
            doc.push(e);
        }
    }
    out
}

/// A manifest that is not the YAML `lks up --runtime kube` applies, at the
/// position the parser stopped (what only failed at run time before).
fn manifest_error(file: &Path, what: &str) -> Option<ConfigError> {
    let text = std::fs::read_to_string(file).ok()?;
    let e = crate::yaml::documents(&text).err()?;
    let shown: std::sync::Arc<Path> = std::env::current_dir()
        .ok()
        .and_then(|cwd| file.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| file.to_path_buf())
        .into();
    let (line, column, message) = match &e {
        crate::yaml::YamlError::Syntax(s) => (
            s.marker().line(),
            s.marker().col() + 1,
            format!("not YAML: {}", s.info()),
        ),
        other => (1, 1, other.to_string()),
    };
    Some(ConfigError::Invalid {
        at: Location {
            file: shown,
            line: line.max(1),
            column,
        },
        what: format!("manifest of {what}"),
        message,
    })
}

/// The build of a service without a `build` key.
fn default_build(dir: &Path) -> Build {
    Build {
        context: dir.to_path_buf(),
        dockerfile: dir.join("Dockerfile"),
        args: Default::default(),
        target: None,
        local: vec![],
        exclude: vec![],
    }
}

/// `written`, relative to `base`, which must exist (as a directory when `dir`,
/// else as a file); canonicalized.
pub(super) fn existing(
    doc: &mut Doc,
    node: &Node,
    what: &str,
    written: &str,
    base: &Path,
    dir: bool,
) -> Option<PathBuf> {
    let path = values::clean(&base.join(written));
    let problem = match std::fs::metadata(&path) {
        Err(_) => "does not exist",
        Ok(m) if dir && !m.is_dir() => "is not a directory",
        Ok(m) if !dir && m.is_dir() => "is not a file",
        Ok(_) => return Some(path.canonicalize().unwrap_or(path)),
    };
    let (at, resolved) = (doc.at_node(node), doc.show(&path));
    doc.push(ConfigError::BadPath {
        at,
        what: what.into(),
        written: written.into(),
        resolved,
        problem,
    });
    None
}

fn ports(doc: &mut Doc, node: &Node, what: &str) -> Option<Vec<(u16, Location)>> {
    let ports = doc.list(node, what, "a list of ports", |d, n, w| {
        let s = match n {
            Node::Scalar(_) => d.string(n, w)?,
            _ => {
                d.wrong_type(n, w, "a port number");
                return None;
            }
        };
        match values::port(&s) {
            Ok(p) => Some((p, n.clone())),
            Err(e) => {
                d.invalid(n, w, e);
                None
            }
        }
    })?;
    let mut out: Vec<(u16, Location)> = vec![];
    for (p, n) in ports {
        if out.iter().any(|(q, _)| *q == p) {
            doc.invalid(&n, what, format!("port {p} is listed twice"));
        } else {
            out.push((p, doc.at_node(&n)));
        }
    }
    Some(out)
}

fn readiness(doc: &mut Doc, node: &Node, what: &str) -> Option<Readiness> {
    let map = doc.mapping(node, what, what, READINESS_KEYS)?;
    let mut checks = vec![];
    let (mut period, mut timeout) = (Some(DEFAULT_PERIOD), Some(DEFAULT_TIMEOUT));
    for (key, v) in map.iter() {
        let w = sub(what, key.as_str());
        let check = match key.as_str() {
            "http" => doc.nonempty(v, &w).and_then(|url| {
                let rest = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"));
                if rest.is_none_or(str::is_empty) {
                    doc.invalid(
                        v,
                        &w,
                        format!("\"{url}\" is not an http:// or https:// URL"),
                    );
                    return None;
                }
                Some(Check::Http { url })
            }),
            "tcp" => doc.nonempty(v, &w).and_then(|address| {
                let good = address
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && values::port(port).is_ok());
                if !good {
                    doc.invalid(v, &w, format!("\"{address}\" is not host:port"));
                    return None;
                }
                Some(Check::Tcp { address })
            }),
            "exec" => doc.command(v, &w).map(|(_, argv)| Check::Exec { argv }),
            "period" | "timeout" => {
                let d = doc.string(v, &w).and_then(|s| match values::duration(&s) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        doc.invalid(v, &w, e);
                        None
                    }
                });
                *(if key.as_str() == "period" {
                    &mut period
                } else {
                    &mut timeout
                }) = d;
                continue;
            }
            _ => continue,
        };
        if !checks.is_empty() {
            let at = doc.at(key.span());
            let message = "only one of http, tcp and exec may be given".into();
            doc.push(ConfigError::Invalid {
                at,
                what: what.into(),
                message,
            });
        }
        checks.push(check);
    }
    if checks.is_empty() {
        doc.invalid(node, what, "needs one of http, tcp or exec");
    }
    match (checks.as_slice(), period, timeout) {
        ([Some(check)], Some(period), Some(timeout)) => Some(Readiness {
            check: check.clone(),
            period,
            timeout,
        }),
        _ => None,
    }
}

fn build(doc: &mut Doc, node: &Node, what: &str, dir: &Path, key_at: Location) -> Option<Build> {
    let map = doc.mapping(node, what, what, BUILD_KEYS)?;
    let sub = |key: &str| sub(what, key);
    let mut b = default_build(dir);
    // Only a docker build needs a Dockerfile: `build: {local: [...]}` alone is
    // for the local runtime.
    let docker = ["context", "dockerfile", "args", "target"]
        .iter()
        .any(|k| get(map, k).is_some());
    let mut ok = true;
    if let Some((_, v)) = get(map, "context") {
        match doc
            .nonempty(v, &sub("context"))
            .and_then(|c| existing(doc, v, &sub("context"), &c, dir, true))
        {
            Some(c) => b.context = c,
            None => ok = false,
        }
    }
    match get(map, "dockerfile") {
        Some((_, v)) => {
            match doc
                .nonempty(v, &sub("dockerfile"))
                .and_then(|f| existing(doc, v, &sub("dockerfile"), &f, &b.context, false))
            {
                Some(f) => b.dockerfile = f,
                None => ok = false,
            }
        }
        None => {
            b.dockerfile = b.context.join("Dockerfile");
            if docker && ok && !b.dockerfile.is_file() {
                let resolved = doc.show(&b.dockerfile);
                doc.push(ConfigError::BadPath {
                    at: key_at,
                    what: sub("dockerfile"),
                    written: "Dockerfile".into(),
                    resolved,
                    problem: "does not exist",
                });
                ok = false;
            }
        }
    }
    if let Some((_, v)) = get(map, "args") {
        b.args = doc.string_map(v, &sub("args")).unwrap_or_default();
    }
    if let Some((_, v)) = get(map, "target") {
        b.target = doc.nonempty(v, &sub("target"));
    }
    if let Some((_, v)) = get(map, "local") {
        let w = sub("local");
        b.local = doc
            .list(v, &w, "a list of commands", |d, n, w| {
                d.command(n, w).map(|(_, argv)| argv)
            })
            .unwrap_or_default();
    }
    ok.then_some(b)
}
