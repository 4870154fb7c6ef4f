//! The `live_update` section of a service: sync mappings, ignores, run steps,
//! restart policy and the globs that force a rebuild.

use super::error::ConfigError;
use super::service::existing;
use super::values;
use super::yaml::{Doc, get, index, sub};
use super::{LiveUpdate, Restart, RunStep, SyncMapping};
use globset::GlobSet;
use marked_yaml::Node;
use std::path::{Path, PathBuf};

const KEYS: &[&str] = &[
    "root",
    "local_root",
    "sync",
    "ignore",
    "run",
    "restart",
    "fall_back_on",
];
const SYNC_KEYS: &[&str] = &["local", "remote", "only"];
const RUN_KEYS: &[&str] = &["cmd", "sh", "workdir", "trigger"];
const RESTART_KEYS: &[&str] = &["on-change"];

/// The agent's root in the container when `live_update.root` is not given.
pub const DEFAULT_ROOT: &str = "/app";

/// The live update of a service without a `live_update` key: its whole
/// directory synced to `/app`, restart on change.
pub(super) fn default_live_update(dir: &Path) -> LiveUpdate {
    LiveUpdate {
        root: DEFAULT_ROOT.into(),
        local_root: None,
        sync: vec![SyncMapping {
            local: dir.to_path_buf(),
            remote: String::new(),
            only: vec![],
        }],
        ignore: vec![],
        run: vec![],
        restart: Restart::OnChange,
        restart_on: vec![],
        restart_matcher: GlobSet::empty(),
        fall_back_on: vec![],
        fall_back_matcher: GlobSet::empty(),
    }
}

/// Reads `live_update` (`node`) of the service whose directory is `dir`.
/// None when it has mistakes (all recorded).
pub(super) fn live_update(
    doc: &mut Doc,
    node: &Node,
    what: &str,
    dir: &Path,
) -> Option<LiveUpdate> {
    let map = doc.mapping(node, what, what, KEYS)?;
    let errors_before = doc.errors.len();
    let mut lu = default_live_update(dir);
    if let Some((_, v)) = get(map, "root") {
        let w = sub(what, "root");
        if let Some(root) = doc.nonempty(v, &w) {
            match values::remote_root(&root) {
                Ok(r) => lu.root = r,
                Err(e) => doc.invalid(v, &w, e),
            }
        }
    }
    if let Some((_, v)) = get(map, "sync") {
        let w = sub(what, "sync");
        let root = lu.root.clone();
        lu.sync = doc
            .list(v, &w, "a list of {local, remote} mappings", |d, n, w| {
                sync(d, n, w, dir, &root)
            })
            .unwrap_or_default();
        if let Node::Sequence(seq) = v
            && seq.len() == lu.sync.len()
        {
            overlaps(doc, seq, &lu.sync, &w);
        }
    }
    if let Some((_, v)) = get(map, "ignore") {
        let w = sub(what, "ignore");
        let patterns = doc.strings(v, &w).unwrap_or_default();
        for (p, at) in &patterns {
            let mut b = ignore::gitignore::GitignoreBuilder::new(dir);
            if let Err(e) = b.add_line(None, p) {
                let message = match e {
                    ignore::Error::Glob { err, .. } => err,
                    other => other.to_string(),
                };
                doc.push(ConfigError::BadGlob {
                    at: at.clone(),
                    what: w.clone(),
                    glob: p.clone(),
                    message,
                });
            }
        }
        lu.ignore = patterns.into_iter().map(|(p, _)| p).collect();
    }
    if let Some((_, v)) = get(map, "run") {
        let w = sub(what, "run");
        let root = lu.root.clone();
        lu.run = doc
            .list(
                v,
                &w,
                "a list of {cmd or sh, workdir, trigger} steps",
                |d, n, w| run_step(d, n, w, &root),
            )
            .unwrap_or_default();
    }
    if let Some((_, v)) = get(map, "restart") {
        let w = sub(what, "restart");
        match v {
            Node::Scalar(s) if s.as_str() == "on-change" => lu.restart = Restart::OnChange,
            Node::Scalar(s) if s.as_str() == "never" => lu.restart = Restart::Never,
            Node::Mapping(_) => {
                if let Some(m) = doc.mapping(v, &w, &w, RESTART_KEYS)
                    && let Some((_, globs_node)) = get(m, "on-change")
                    && let Some((globs, set)) = globs(doc, globs_node, &sub(&w, "on-change"))
                {
                    lu.restart = Restart::OnChange;
                    lu.restart_on = globs;
                    lu.restart_matcher = set;
                }
            }
            _ => doc.wrong_type(v, &w, "\"on-change\", \"never\" or {on-change: [globs]}"),
        }
    }
    if let Some((_, v)) = get(map, "fall_back_on")
        && let Some((globs, set)) = globs(doc, v, &sub(what, "fall_back_on"))
    {
        lu.fall_back_on = globs;
        lu.fall_back_matcher = set;
    }
    if let Some((_, v)) = get(map, "local_root") {
        let w = sub(what, "local_root");
        if let Some(written) = doc.nonempty(v, &w) {
            let root = values::clean(&dir.join(&written));
            match local_root_problem(&root, dir, &lu.sync) {
                Some(problem) => doc.invalid(v, &w, problem),
                None => lu.local_root = Some(root),
            }
        }
    }
    (doc.errors.len() == errors_before).then_some(lu)
}

/// Why `root` cannot be the local runtime's root of the service in `dir`
/// that syncs `sync`: lks replaces what is in the root, so it must hold
/// none of the developer's sources.
fn local_root_problem(root: &Path, dir: &Path, sync: &[SyncMapping]) -> Option<String> {
    if dir.starts_with(root) {
        return Some(format!(
            "{} holds the service's own directory; the local runtime replaces what is in its \
             root: name a directory of its own (e.g. /srv/NAME)",
            root.display()
        ));
    }
    let source = sync
        .iter()
        .find(|m| root.starts_with(&m.local) || m.local.starts_with(root))?;
    Some(format!(
        "{} overlaps the synced directory {}: the root would be synced into itself; name a \
         directory outside the sources",
        root.display(),
        source.local.display()
    ))
}

/// Sync mappings whose remote directories nest: one mirror would delete
/// the other's files. Reported at the later of the two.
fn overlaps(doc: &mut Doc, nodes: &[Node], sync: &[SyncMapping], what: &str) {
    let parts = |r: &str| -> Vec<String> {
        r.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_string)
            .collect()
    };
    for (j, b) in sync.iter().enumerate() {
        let pb = parts(&b.remote);
        if let Some((i, a)) = sync[..j].iter().enumerate().find(|(_, a)| {
            let pa = parts(&a.remote);
            pa.starts_with(&pb) || pb.starts_with(&pa)
        }) {
            let shown = |r: &str| {
                if r.is_empty() {
                    ".".to_string()
                } else {
                    r.to_string()
                }
            };
            doc.invalid(
                &nodes[j],
                &index(what, j),
                format!(
                    "its remote {:?} and the remote {:?} of mapping {i} overlap on the agent; give \
                     each mapping its own remote directory (one mirror would delete the other's files)",
                    shown(&b.remote),
                    shown(&a.remote)
                ),
            );
        }
    }
}

fn sync(doc: &mut Doc, node: &Node, what: &str, dir: &Path, root: &str) -> Option<SyncMapping> {
    let map = doc.mapping(node, what, what, SYNC_KEYS)?;
    let mut field = |key: &'static str| match get(map, key) {
        Some((_, v)) => doc.nonempty(v, &sub(what, key)).map(|s| (s, v)),
        None => {
            let at = doc.map_at(map);
            doc.push(ConfigError::MissingKey {
                at,
                key,
                within: what.into(),
            });
            None
        }
    };
    let (local, remote) = (field("local"), field("remote"));
    // A source a host-side build makes later may be missing yet: it is
    // synced when it appears.
    let local = local.and_then(|(l, v)| maybe_dir(doc, v, &sub(what, "local"), &l, dir));
    let only = match get(map, "only") {
        Some((_, v)) => only(doc, v, &sub(what, "only"))?,
        None => vec![],
    };
    let remote = remote.and_then(|(r, v)| match values::remote_beneath(&r, root) {
        Some(rel) => Some(rel),
        None => {
            let at = doc.at_node(v);
            doc.push(ConfigError::RemoteOutsideRoot {
                at,
                what: sub(what, "remote"),
                remote: r,
                root: root.into(),
            });
            None
        }
    });
    Some(SyncMapping {
        local: local?,
        remote: remote?,
        only,
    })
}

/// A directory that may not exist yet; when it does, it must be a directory.
fn maybe_dir(
    doc: &mut Doc,
    node: &Node,
    what: &str,
    written: &str,
    base: &Path,
) -> Option<PathBuf> {
    let path = values::clean(&base.join(written));
    if path.symlink_metadata().is_err() {
        return Some(path);
    }
    existing(doc, node, what, written, base, true)
}

/// `only:` of a sync mapping: relative paths or globs (one glob per path
/// component, `**` for any number of directories).
fn only(doc: &mut Doc, node: &Node, what: &str) -> Option<Vec<String>> {
    let patterns = doc.strings(node, what)?;
    let mut ok = true;
    for (p, at) in &patterns {
        if let Err(message) = crate::filter::Only::check(p) {
            ok = false;
            doc.push(ConfigError::BadGlob {
                at: at.clone(),
                what: what.into(),
                glob: p.clone(),
                message,
            });
        }
    }
    ok.then(|| patterns.into_iter().map(|(p, _)| p).collect())
}

fn run_step(doc: &mut Doc, node: &Node, what: &str, root: &str) -> Option<RunStep> {
    let map = doc.mapping(node, what, what, RUN_KEYS)?;
    let cmd = match (get(map, "cmd"), get(map, "sh")) {
        (Some((_, v)), None) => doc.command(v, &sub(what, "cmd")),
        (None, Some((_, v))) => doc
            .nonempty(v, &sub(what, "sh"))
            .map(|script| (script.clone(), super::yaml::shell(&script))),
        (Some(_), Some((_, v))) => {
            doc.invalid(
                v,
                &sub(what, "sh"),
                "a step has `cmd` (argv, no shell) or `sh` (a script for the image's /bin/sh), \
                 not both",
            );
            None
        }
        (None, None) => {
            let at = doc.map_at(map);
            doc.push(ConfigError::Invalid {
                at,
                what: what.into(),
                message: "a step needs `cmd` (argv, no shell) or `sh` (a script for the image's \
                          /bin/sh)"
                    .into(),
            });
            None
        }
    };
    let workdir = match get(map, "workdir") {
        None => Some(String::new()),
        Some((_, v)) => {
            let w = sub(what, "workdir");
            doc.nonempty(v, &w)
                .and_then(|d| match values::remote_beneath(&d, root) {
                    Some(rel) => Some(rel),
                    None => {
                        let at = doc.at_node(v);
                        doc.push(ConfigError::RemoteOutsideRoot {
                            at,
                            what: w,
                            remote: d,
                            root: root.into(),
                        });
                        None
                    }
                })
        }
    };
    let triggers = match get(map, "trigger") {
        Some((_, v)) => globs(doc, v, &sub(what, "trigger")),
        None => Some((vec![], GlobSet::empty())),
    };
    let ((cmd, argv), (triggers, trigger_matcher), workdir) = (cmd?, triggers?, workdir?);
    Some(RunStep {
        cmd,
        argv,
        workdir,
        triggers,
        trigger_matcher,
    })
}

/// A list of globs relative to the service directory, compiled. None when
/// any is bad (each recorded).
pub(super) fn globs(doc: &mut Doc, node: &Node, what: &str) -> Option<(Vec<String>, GlobSet)> {
    let patterns = doc.strings(node, what)?;
    let mut compiled = vec![];
    for (p, at) in &patterns {
        match values::glob(p) {
            Ok(g) => compiled.push(g),
            Err(message) => doc.push(ConfigError::BadGlob {
                at: at.clone(),
                what: what.into(),
                glob: p.clone(),
                message,
            }),
        }
    }
    if compiled.len() != patterns.len() {
        return None;
    }
    let set = values::glob_set(&compiled);
    Some((patterns.into_iter().map(|(p, _)| p).collect(), set))
}
