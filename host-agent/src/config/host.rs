//! The `host` section of a service: a host-side resource's commands, the
//! globs that run it again, its trigger mode and its long-running process.

use super::Host;
use super::live_update::globs;
use super::yaml::{Doc, get, sub};
use globset::GlobSet;
use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;

const KEYS: &[&str] = &["run", "watch", "manual", "serve"];

/// The keys of a service that a host resource has no use for: it is not
/// built, deployed nor started by a runtime.
pub(super) const NOT_WITH_HOST: &[&str] = &["build", "k8s", "command", "live_update"];

/// Reads `host` (`node`). None when it has mistakes (all recorded).
pub(super) fn host(doc: &mut Doc, node: &Node, what: &str) -> Option<Host> {
    let map = doc.mapping(node, what, what, KEYS)?;
    let errors_before = doc.errors.len();
    let mut host = Host {
        run: vec![],
        watch: vec![],
        watch_matcher: GlobSet::empty(),
        manual: false,
        serve: vec![],
    };
    if let Some((_, v)) = get(map, "run") {
        host.run = commands(doc, v, &sub(what, "run"));
    }
    if let Some((_, v)) = get(map, "watch")
        && let Some((globs, set)) = globs(doc, v, &sub(what, "watch"))
    {
        host.watch = globs;
        host.watch_matcher = set;
    }
    if let Some((_, v)) = get(map, "manual") {
        match v {
            Node::Scalar(s) if s.as_str() == "true" => host.manual = true,
            Node::Scalar(s) if s.as_str() == "false" => host.manual = false,
            _ => doc.wrong_type(v, &sub(what, "manual"), "true or false"),
        }
    }
    if let Some((_, v)) = get(map, "serve")
        && let Some((_, argv)) = doc.command(v, &sub(what, "serve"))
    {
        host.serve = argv;
    }
    if get(map, "run").is_none() && get(map, "serve").is_none() {
        let at = doc.map_at(map);
        doc.push(super::ConfigError::Invalid {
            at,
            what: what.into(),
            message: "needs `run` (commands run on the host), `serve` (a long-running \
                      process), or both"
                .into(),
        });
    }
    (doc.errors.len() == errors_before).then_some(host)
}

/// `run`: one command (a string split into words, no shell), or a list of
/// commands each a string or a list of words, as `build.local`.
fn commands(doc: &mut Doc, node: &Node, what: &str) -> Vec<Vec<String>> {
    if let Node::Scalar(_) = node {
        return doc
            .command(node, what)
            .map(|(_, argv)| argv)
            .into_iter()
            .collect();
    }
    let list = doc
        .list(node, what, "a command or a list of commands", |d, n, w| {
            d.command(n, w).map(|(_, argv)| argv)
        })
        .unwrap_or_default();
    if matches!(node, Node::Sequence(s) if s.is_empty()) {
        doc.invalid(node, what, "is empty: list the commands to run");
    }
    list
}

/// Each key of the service `map` that does not go with `host:`, reported
/// where it is written.
pub(super) fn conflicts(doc: &mut Doc, map: &MarkedMappingNode, owner: &str) {
    for (key, _) in map.iter() {
        if NOT_WITH_HOST.contains(&key.as_str()) {
            let at = doc.at(key.span());
            doc.push(super::ConfigError::Invalid {
                at,
                what: format!("{} of {owner}", key.as_str()),
                message: "does not go with `host:` (a host resource runs its commands on \
                          the host; no runtime builds, deploys or starts it)"
                    .into(),
            });
        }
    }
}
