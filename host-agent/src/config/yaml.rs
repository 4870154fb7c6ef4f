//! Reading marked YAML nodes strictly: every accessor checks the type, and on a
//! mistake records an error pointing at the value and carries on, so one pass
//! reports every mistake of a file.

use super::error::{ConfigError, Location, closest};
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node, Span};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One configuration file being read, and the errors found so far.
pub(super) struct Doc<'e> {
    /// The file as shown to the user.
    pub shown: Arc<Path>,
    /// Where paths are shown relative to (the current directory).
    pub base: &'e Path,
    /// Errors found so far (in every file of the load).
    pub errors: &'e mut Vec<ConfigError>,
}

/// Parses `text` (the contents of `shown`) as YAML whose top level is a mapping.
pub(super) fn parse(shown: &Path, text: &str) -> Result<Node, ConfigError> {
    // The parser reads the first document and ignores the rest: refuse a
    // second one rather than silently dropping it.
    let mut content = false;
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker && content {
            return Err(ConfigError::Syntax {
                at: Location {
                    file: shown.into(),
                    line: i + 1,
                    column: 1,
                },
                message: "a second YAML document: lks reads one document a file".into(),
            });
        }
        let trimmed = line.trim_start();
        content |= !is_marker && !trimmed.is_empty() && !trimmed.starts_with('#');
    }
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    marked_yaml::parse_yaml_with_options(0, text, options).map_err(|e| {
        use marked_yaml::LoadError as L;
        let (mark, message) = match &e {
            L::TopLevelMustBeMapping(m) | L::TopLevelMustBeSequence(m) => (
                *m,
                "expected a mapping of keys at the top level".to_string(),
            ),
            L::UnexpectedAnchor(m) => (*m, "anchors and aliases are not supported".into()),
            L::MappingKeyMustBeScalar(m) => (*m, "keys must be plain strings".into()),
            L::UnexpectedTag(m) => (*m, "tags (!...) are not supported".into()),
            L::ScanError(m, se) if se.info().contains("mapping values are not allowed") => (
                *m,
                format!(
                    "{}: a value with \": \" in it must be quoted (e.g. command: 'sh -c \"echo a: b\"')",
                    se.info()
                ),
            ),
            L::ScanError(m, se) => (*m, se.info().to_string()),
            L::DuplicateKey(inner) => (
                inner
                    .key
                    .span()
                    .start()
                    .copied()
                    .unwrap_or(marked_yaml::Marker::new(0, 0, 1, 1)),
                format!("duplicate key \"{}\"", inner.key.as_str()),
            ),
        };
        ConfigError::Syntax {
            at: Location {
                file: shown.into(),
                line: mark.line(),
                column: mark.column(),
            },
            message,
        }
    })
}

/// Whether a scalar is YAML's null (`~`, `null` or nothing), unquoted.
pub(super) fn is_null(s: &MarkedScalarNode) -> bool {
    s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
}

/// How a value looks, for "expected X, found Y".
pub(super) fn found(node: &Node) -> String {
    match node {
        Node::Scalar(s) if is_null(s) => "nothing (null)".into(),
        Node::Scalar(s) => format!("\"{}\"", s.as_str()),
        Node::Sequence(_) => "a list".into(),
        Node::Mapping(_) => "a mapping".into(),
    }
}

impl Doc<'_> {
    /// The location of a span's start.
    pub fn at(&self, span: &Span) -> Location {
        let (line, column) = span.start().map_or((1, 1), |m| (m.line(), m.column()));
        Location {
            file: self.shown.clone(),
            line,
            column,
        }
    }

    /// The location of a mapping, for "has no key X": its first key (the
    /// parser's mark for a block mapping is not always at its start).
    pub fn map_at(&self, map: &MarkedMappingNode) -> Location {
        match map.keys().next() {
            Some(k) => self.at(k.span()),
            None => self.at(map.span()),
        }
    }

    /// The location of a node.
    pub fn at_node(&self, node: &Node) -> Location {
        self.at(node.span())
    }

    /// `path` as shown to the user.
    pub fn show(&self, path: &Path) -> PathBuf {
        path.strip_prefix(self.base)
            .map_or_else(|_| path.to_path_buf(), Path::to_path_buf)
    }

    /// Records an error.
    pub fn push(&mut self, e: ConfigError) {
        self.errors.push(e);
    }

    /// Records "`what`: `message`" at `node`.
    pub fn invalid(&mut self, node: &Node, what: &str, message: impl Into<String>) {
        let at = self.at_node(node);
        self.push(ConfigError::Invalid {
            at,
            what: what.into(),
            message: message.into(),
        });
    }

    /// Records "expected `expected`, found ..." at `node`.
    pub fn wrong_type(&mut self, node: &Node, what: &str, expected: &'static str) {
        let at = self.at_node(node);
        self.push(ConfigError::WrongType {
            at,
            what: what.into(),
            expected,
            found: found(node),
        });
    }

    /// `node` as a mapping whose keys are all in `allowed` (see
    /// [`Doc::check_keys`]).
    pub fn mapping<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        within: &str,
        allowed: &'static [&'static str],
    ) -> Option<&'n MarkedMappingNode> {
        let Node::Mapping(map) = node else {
            self.wrong_type(node, what, "a mapping");
            return None;
        };
        self.check_keys(map, within, allowed);
        Some(map)
    }

    /// Reports every key of `map` not in `allowed`, with a did-you-mean (or
    /// the list of known keys); callers then ignore those keys.
    pub fn check_keys(
        &mut self,
        map: &MarkedMappingNode,
        within: &str,
        allowed: &'static [&'static str],
    ) {
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                let at = self.at(key.span());
                self.push(ConfigError::UnknownKey {
                    at,
                    key: key.as_str().into(),
                    within: within.into(),
                    suggestion: closest(key.as_str(), allowed.iter().copied()),
                    expected: allowed,
                });
            }
        }
    }

    /// A string: a scalar other than null. Unquoted numbers and booleans are
    /// taken exactly as written (`8080` is "8080", `1.10` is "1.10").
    pub fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match node {
            Node::Scalar(s) if !is_null(s) => Some(s.as_str().to_string()),
            _ => {
                self.wrong_type(node, what, "a string");
                None
            }
        }
    }

    /// A non-empty string.
    pub fn nonempty(&mut self, node: &Node, what: &str) -> Option<String> {
        let s = self.string(node, what)?;
        if s.trim().is_empty() {
            self.invalid(node, what, "must not be empty");
            return None;
        }
        Some(s)
    }

    /// A list, each item of which `item` reads; None if `node` is not a list.
    /// Items that fail are left out (their errors recorded).
    pub fn list<T>(
        &mut self,
        node: &Node,
        what: &str,
        expected: &'static str,
        mut item: impl FnMut(&mut Self, &Node, &str) -> Option<T>,
    ) -> Option<Vec<T>> {
        let Node::Sequence(seq) = node else {
            self.wrong_type(node, what, expected);
            return None;
        };
        Some(
            seq.iter()
                .enumerate()
                .filter_map(|(i, n)| item(self, n, &index(what, i)))
                .collect(),
        )
    }

    /// A list of strings, each with where it is written.
    pub fn strings(&mut self, node: &Node, what: &str) -> Option<Vec<(String, Location)>> {
        self.list(node, what, "a list of strings", |d, n, w| {
            d.nonempty(n, w).map(|s| (s, d.at_node(n)))
        })
    }

    /// A mapping of strings to strings (env, build args). Values may be
    /// unquoted numbers or booleans, taken as written; null is an error.
    pub fn string_map(&mut self, node: &Node, what: &str) -> Option<BTreeMap<String, String>> {
        let Node::Mapping(map) = node else {
            self.wrong_type(node, what, "a mapping of names to strings");
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, v) in map.iter() {
            let w = sub(what, k.as_str());
            if k.as_str().is_empty() {
                let at = self.at(k.span());
                self.push(ConfigError::Invalid {
                    at,
                    what: what.into(),
                    message: "empty name".into(),
                });
                continue;
            }
            match v {
                Node::Scalar(s) if is_null(s) => {
                    // A missing value has no position of its own: point at its key.
                    let at = self.at(k.span());
                    let message = "no value (write \"\" for an empty string)".into();
                    self.push(ConfigError::Invalid {
                        at,
                        what: w,
                        message,
                    });
                }
                _ => {
                    if let Some(s) = self.string(v, &w) {
                        out.insert(k.as_str().to_string(), s);
                    }
                }
            }
        }
        Some(out)
    }

    /// A command: a string split into words the way a shell would (no shell
    /// runs it), a list of strings, or `{sh: SCRIPT}`, run by the image's
    /// `/bin/sh -c`. Returns (as written, argv).
    pub fn command(&mut self, node: &Node, what: &str) -> Option<(String, Vec<String>)> {
        let (written, argv) = match node {
            Node::Mapping(_) => {
                let map = self.mapping(node, what, what, &["sh"])?;
                let Some((_, script)) = get(map, "sh") else {
                    let at = self.map_at(map);
                    self.push(ConfigError::MissingKey {
                        at,
                        key: "sh",
                        within: what.into(),
                    });
                    return None;
                };
                let script = self.nonempty(script, &sub(what, "sh"))?;
                let argv = shell(&script);
                (script, argv)
            }
            Node::Scalar(s) if !is_null(s) => match shell_words::split(s.as_str()) {
                Ok(argv) => (s.as_str().to_string(), argv),
                Err(e) => {
                    self.invalid(node, what, format!("cannot split into words: {e}"));
                    return None;
                }
            },
            Node::Sequence(_) => {
                let words: Vec<String> =
                    self.list(node, what, "a list", |d, n, w| d.string(n, w))?;
                (shell_words::join(&words), words)
            }
            _ => {
                self.wrong_type(
                    node,
                    what,
                    "a command (a string, a list of strings, or {sh: SCRIPT})",
                );
                return None;
            }
        };
        if argv.is_empty() || argv[0].is_empty() {
            self.invalid(node, what, "empty command");
            return None;
        }
        Some((written, argv))
    }
}

/// The shell a `sh:` command or step runs in: the image's own, so an image
/// without one (FROM scratch, distroless) can only take argv commands.
pub const SHELL: &str = "/bin/sh";

/// The argv that runs `script` in [`SHELL`].
pub(super) fn shell(script: &str) -> Vec<String> {
    vec![SHELL.into(), "-c".into(), script.into()]
}

/// The value of `key` in `map`, with the key node (for its position).
pub(super) fn get<'n>(
    map: &'n MarkedMappingNode,
    key: &str,
) -> Option<(&'n MarkedScalarNode, &'n Node)> {
    map.iter().find(|(k, _)| k.as_str() == key)
}

/// `what` with `.key` added to its key path: `build of service "web"` ->
/// `build.context of service "web"`.
pub(super) fn sub(what: &str, key: &str) -> String {
    match what.split_once(" of ") {
        Some((path, owner)) => format!("{path}.{key} of {owner}"),
        None => format!("{what}.{key}"),
    }
}

/// `what` with `[i]` added to its key path: `ports of service "web"` ->
/// `ports[0] of service "web"`.
pub(super) fn index(what: &str, i: usize) -> String {
    match what.split_once(" of ") {
        Some((path, owner)) => format!("{path}[{i}] of {owner}"),
        None => format!("{what}[{i}]"),
    }
}
