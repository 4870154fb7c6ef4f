//! Names across the workspace: duplicate services, aliases, dependencies
//! (which may name aliases), cycles; and the launch order for `lks up`.

use super::Workspace;
use super::error::{ConfigError, Location, closest};
use super::service::Parsed;
use std::collections::{BTreeMap, BTreeSet};

/// An alias as read, with positions.
pub(super) struct AliasDef {
    /// Its name.
    pub name: String,
    /// Where the name is written.
    pub at: Location,
    /// Its members as written.
    pub members: Vec<(String, Location)>,
}

/// Moves the services and aliases into `ws` and checks every name they use:
/// duplicate services, aliases named like services, unknown names, alias and
/// dependency cycles. Dependencies naming aliases are expanded, so every
/// `Service::deps` names services only.
pub(super) fn check(
    ws: &mut Workspace,
    parsed: Vec<Parsed>,
    aliases: Vec<AliasDef>,
    errors: &mut Vec<ConfigError>,
) {
    let mut deps_at: BTreeMap<String, Vec<(String, Location)>> = BTreeMap::new();
    let mut hosts_at: Vec<(String, String, Location)> = Vec::new();
    let mut names_at: BTreeMap<String, Location> = BTreeMap::new();
    let mut ports_of: BTreeMap<u16, (String, Location)> = BTreeMap::new();
    for p in parsed {
        let name = p.service.name.clone();
        if let Some(first) = names_at.get(&name) {
            errors.push(ConfigError::DuplicateService {
                at: p.name_at,
                name,
                first: first.clone(),
            });
            continue;
        }
        names_at.insert(name.clone(), p.name_at);
        // Two services on one port: the second would crash-loop on
        // EADDRINUSE, or answer the other's readiness check.
        for (port, at) in p.ports_at {
            match ports_of.get(&port) {
                Some((other, first)) => errors.push(ConfigError::Invalid {
                    at,
                    what: format!("ports of service \"{name}\""),
                    message: format!(
                        "port {port} is declared by service \"{other}\" too (at {first}); give each service its own"
                    ),
                }),
                None => {
                    ports_of.insert(port, (name.clone(), at));
                }
            }
        }
        deps_at.insert(name.clone(), p.deps);
        hosts_at.extend(p.host_refs.into_iter().map(|(h, at)| (name.clone(), h, at)));
        ws.services.insert(name, p.service);
    }
    let mut members_at: BTreeMap<String, Vec<(String, Location)>> = BTreeMap::new();
    for a in aliases {
        if let Some(service) = names_at.get(&a.name) {
            errors.push(ConfigError::AliasShadowsService {
                at: a.at,
                name: a.name,
                service: service.clone(),
            });
            continue;
        }
        ws.aliases.insert(
            a.name.clone(),
            a.members.iter().map(|(m, _)| m.clone()).collect(),
        );
        members_at.insert(a.name, a.members);
    }

    let known: Vec<&str> = names_at
        .keys()
        .chain(members_at.keys())
        .map(String::as_str)
        .collect();
    let mut unknown = |what: String, name: &str, at: &Location| {
        if !known.contains(&name) {
            let suggestion = closest(name, known.iter().copied());
            errors.push(ConfigError::UnknownName {
                at: at.clone(),
                what,
                name: name.into(),
                suggestion,
            });
        }
    };
    for (alias, members) in &members_at {
        for (m, at) in members {
            unknown(format!("alias \"{alias}\""), m, at);
        }
    }
    for (service, deps) in &deps_at {
        for (d, at) in deps {
            unknown(format!("deps of service \"{service}\""), d, at);
        }
    }

    for (service, host, at) in &hosts_at {
        if !names_at.contains_key(host) {
            errors.push(ConfigError::UnknownName {
                at: at.clone(),
                what: format!("${{host:...}} in the env of service \"{service}\""),
                name: host.clone(),
                suggestion: closest(host, names_at.keys().map(String::as_str)),
            });
        }
    }

    ws.named_at = names_at.clone();
    cycles("alias", &members_at, errors);
    // Dependencies with aliases expanded, each edge keeping where it is written.
    let expanded: BTreeMap<String, Vec<(String, Location)>> = deps_at
        .iter()
        .map(|(s, deps)| {
            let mut out: Vec<(String, Location)> = vec![];
            for (d, at) in deps {
                for name in expand(&ws.aliases, d) {
                    if ws.services.contains_key(&name) && !out.iter().any(|(n, _)| *n == name) {
                        out.push((name, at.clone()));
                    }
                }
            }
            (s.clone(), out)
        })
        .collect();
    cycles("dependency", &expanded, errors);
    for (name, deps) in expanded {
        if let Some(s) = ws.services.get_mut(&name) {
            s.deps = deps.into_iter().map(|(d, _)| d).collect();
        }
    }
}

/// Reports every cycle of `edges` (found by a depth-first search from each
/// node in name order).
fn cycles(
    kind: &'static str,
    edges: &BTreeMap<String, Vec<(String, Location)>>,
    errors: &mut Vec<ConfigError>,
) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    /// A depth-first search from `start` with an explicit stack (a chain of
    /// any length costs no call depth); `path` holds the path walked, each
    /// node with the edge it left by.
    fn visit<'a>(
        start: &'a str,
        kind: &'static str,
        edges: &'a BTreeMap<String, Vec<(String, Location)>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<(&'a str, Option<&'a Location>)>,
        errors: &mut Vec<ConfigError>,
    ) {
        marks.insert(start, Mark::Active);
        let mut frames: Vec<(&'a str, usize)> = vec![(start, 0)];
        while let Some(&(node, i)) = frames.last() {
            let list = edges.get(node).map_or(&[][..], Vec::as_slice);
            let Some((next, at)) = list.get(i) else {
                marks.insert(node, Mark::Done);
                frames.pop();
                if !frames.is_empty() {
                    // The edge that led here.
                    path.pop();
                }
                continue;
            };
            frames.last_mut().expect("a frame").1 += 1;
            path.push((node, Some(at)));
            match marks.get(next.as_str()) {
                Some(Mark::Active) => {
                    let from = path
                        .iter()
                        .position(|(n, _)| *n == next.as_str())
                        .unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[from..].iter().map(|(n, _)| n.to_string()).collect();
                    cycle.push(next.clone());
                    let at = path[from].1.cloned().unwrap_or_else(|| at.clone());
                    errors.push(ConfigError::Cycle { at, kind, cycle });
                    path.pop();
                }
                None if edges.contains_key(next) => {
                    marks.insert(next, Mark::Active);
                    frames.push((next, 0));
                }
                Some(Mark::Done) | None => {
                    path.pop();
                }
            }
        }
    }
    let mut marks = BTreeMap::new();
    for node in edges.keys() {
        if !marks.contains_key(node.as_str()) {
            visit(node, kind, edges, &mut marks, &mut vec![], errors);
        }
    }
}

/// `name` with aliases expanded (recursively, members in order, each name
/// once); a service or unknown name expands to itself.
fn expand(aliases: &BTreeMap<String, Vec<String>>, name: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = vec![];
    // Pending names, next on top: members pushed in reverse keep their order.
    let mut pending = vec![name];
    while let Some(name) = pending.pop() {
        if !seen.insert(name) {
            continue;
        }
        match aliases.get(name) {
            Some(members) => pending.extend(members.iter().rev().map(String::as_str)),
            None => out.push(name.to_string()),
        }
    }
    out
}

impl Workspace {
    /// What `lks up TARGETS` launches: the targets (services, or aliases
    /// expanded) and everything they depend on, transitively, dependencies
    /// first. The order is deterministic: a depth-first walk of the targets
    /// in the order given, each service's dependencies in the order written.
    /// No targets means every service.
    pub fn resolve(&self, targets: &[String]) -> Result<Vec<String>, ConfigError> {
        let mut roots = vec![];
        if targets.is_empty() {
            roots.extend(self.services.keys().cloned());
        }
        for t in targets {
            if !self.services.contains_key(t) && !self.aliases.contains_key(t) {
                let names = self
                    .services
                    .keys()
                    .chain(self.aliases.keys())
                    .map(String::as_str);
                return Err(ConfigError::UnknownTarget {
                    name: t.clone(),
                    suggestion: closest(t, names),
                });
            }
            roots.extend(expand(&self.aliases, t));
        }
        let mut order = vec![];
        let mut seen = BTreeSet::new();
        for r in &roots {
            self.visit(r, &mut seen, &mut order);
        }
        Ok(order)
    }

    /// The services built from the working tree and live updated (in
    /// containers and pods; the others run the registry's `latest`): the
    /// `--local` ones, or without any, the targets named (aliases
    /// expanded), or with no target, every service. Host resources are
    /// never among them: no runtime builds or deploys them.
    pub fn live(&self, targets: &[String], local: &[String]) -> BTreeSet<String> {
        let named: BTreeSet<String> = if !local.is_empty() {
            local.iter().cloned().collect()
        } else if !targets.is_empty() {
            self.expand_targets(targets).into_iter().collect()
        } else {
            self.services.keys().cloned().collect()
        };
        named
            .into_iter()
            .filter(|n| self.services.get(n).is_none_or(|s| s.host.is_none()))
            .collect()
    }

    /// The targets with aliases expanded, without their dependencies
    /// (unknown names are left out; `resolve` reports them).
    pub fn expand_targets(&self, targets: &[String]) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        for t in targets {
            for s in expand(&self.aliases, t) {
                if self.services.contains_key(&s) && !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// Adds `root` and what it depends on to `order`, dependencies first
    /// (a post-order walk with an explicit stack: any depth, no recursion).
    /// A name is marked before its dependencies, so a cycle (impossible
    /// after validation) cannot loop forever.
    fn visit(&self, root: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(root.to_string()) {
            return;
        }
        let mut stack: Vec<(String, usize)> = vec![(root.to_string(), 0)];
        while let Some((name, i)) = stack.last().cloned() {
            let deps = self
                .services
                .get(&name)
                .map_or(&[][..], |s| s.deps.as_slice());
            match deps.get(i) {
                Some(d) => {
                    stack.last_mut().expect("a frame").1 += 1;
                    if seen.insert(d.clone()) {
                        stack.push((d.clone(), 0));
                    }
                }
                None => {
                    stack.pop();
                    if self.services.contains_key(&name) {
                        order.push(name);
                    }
                }
            }
        }
    }
}
