//! Which paths of the local tree are never synced (and never touched on the agent).
//!
//! - `.git/` always;
//! - editors' and tools' short-lived files, always (see [`TEMPORARY`]): vim's
//!   swap files and `4913`, `~` backups, Emacs' `.#*` and `#*#`, JetBrains'
//!   `___jb_tmp___`/`___jb_old___`, GNU `sed -i`'s `sedXXXXXX`, GNOME's
//!   `.goutputstream-XXXXXX`; they live for milliseconds, and syncing them
//!   would restart (or rebuild) a service for nothing;
//! - `.dockerignore` at the root, with Docker's semantics: patterns are relative
//!   to the root, the last pattern that matches a path or one of its parents
//!   wins, and `!` re-includes even beneath an excluded directory, so the agent
//!   gets what `docker build` would copy;
//! - `.lksignore` files at any level, with gitignore semantics;
//! - the folder's [`Filter`]: `--exclude` patterns (gitignore-style, relative
//!   to the root) or a service's `ignore` (relative to the service
//!   directory), and a sync mapping's allow-list (`only:`).

use crate::filter::{Excludes, Filter, Only};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use lks_proto::RelPath;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Name of the per-directory ignore file.
pub const LKSIGNORE: &str = ".lksignore";
/// Name of Docker's ignore file, honoured at the root.
pub const DOCKERIGNORE: &str = ".dockerignore";

/// File names of editors' and tools' temporary files, never synced.
pub const TEMPORARY: &[&str] = &[
    ".*.sw[a-p]",
    "*.swx",
    "4913",
    "*~",
    ".#*",
    "#*#",
    "*___jb_tmp___",
    "*___jb_old___",
    "sed[a-zA-Z0-9][a-zA-Z0-9][a-zA-Z0-9][a-zA-Z0-9][a-zA-Z0-9][a-zA-Z0-9]",
    ".goutputstream-??????",
];

/// The matcher of [`TEMPORARY`] names.
fn temporary() -> &'static GlobSet {
    static SET: std::sync::OnceLock<GlobSet> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        let mut b = GlobSetBuilder::new();
        for p in TEMPORARY {
            b.add(globset::Glob::new(p).expect("a valid built-in pattern"));
        }
        b.build().expect("built-in patterns")
    })
}

/// Whether a file named `name` is an editor's or a tool's temporary file.
pub fn is_temporary(name: &str) -> bool {
    // Every pattern of TEMPORARY starts or ends so: most names are told
    // apart without the glob set (a walk asks for every file).
    let maybe = name.starts_with(['.', '#'])
        || name.starts_with("sed")
        || name.ends_with(['~', '_', 'x'])
        || name == "4913";
    maybe && temporary().is_match(name)
}

/// A problem in an ignore file or pattern; reported, never fatal.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    /// A pattern could not be parsed.
    #[error("{file}: bad pattern {pattern:?}: {reason}")]
    BadPattern {
        /// The file (or `--exclude`).
        file: String,
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
}

/// Docker's `.dockerignore` matcher.
struct DockerIgnore {
    set: GlobSet,
    /// Per pattern (in file order): true for `!` exceptions.
    exception: Vec<bool>,
}

impl DockerIgnore {
    fn parse(text: &str, warnings: &mut Vec<IgnoreError>) -> Option<DockerIgnore> {
        let mut builder = GlobSetBuilder::new();
        let mut exception = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (neg, pat) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let pat = clean(pat);
            if pat.is_empty() {
                continue;
            }
            match GlobBuilder::new(&pat)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
            {
                Ok(g) => {
                    builder.add(g);
                    exception.push(neg);
                }
                Err(e) => warnings.push(IgnoreError::BadPattern {
                    file: DOCKERIGNORE.into(),
                    pattern: line.into(),
                    reason: e.kind().to_string(),
                }),
            }
        }
        if exception.is_empty() {
            return None;
        }
        let set = builder.build().ok()?;
        Some(DockerIgnore { set, exception })
    }

    fn has_exceptions(&self) -> bool {
        self.exception.iter().any(|e| *e)
    }

    /// Docker's rule: the last pattern matching the path or a parent decides.
    fn excludes(&self, path: &RelPath) -> bool {
        let mut last: Option<usize> = None;
        let s = path.as_str();
        let mut prefixes: Vec<&str> = s.match_indices('/').map(|(i, _)| &s[..i]).collect();
        prefixes.push(s);
        for p in prefixes {
            if let Some(&m) = self.set.matches(p).iter().max() {
                last = Some(last.map_or(m, |l: usize| l.max(m)));
            }
        }
        matches!(last, Some(i) if !self.exception[i])
    }
}

/// Lexical clean of a dockerignore pattern, as Go's filepath.Clean does.
fn clean(pat: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in pat.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

/// What `docker build` leaves out of a build context: the context's
/// `.dockerignore` and nothing else (`.git` and `.lksignore` are not Docker's).
pub struct ContextRules {
    docker: Option<DockerIgnore>,
}

impl ContextRules {
    /// Reads `dir/.dockerignore`; bad patterns come back as warnings.
    pub fn load(dir: &Path) -> (ContextRules, Vec<IgnoreError>) {
        let mut warnings = Vec::new();
        let docker = std::fs::read_to_string(dir.join(DOCKERIGNORE))
            .ok()
            .and_then(|t| DockerIgnore::parse(&t, &mut warnings));
        (ContextRules { docker }, warnings)
    }

    /// Whether the build leaves `path` out.
    pub fn excludes(&self, path: &RelPath) -> bool {
        self.docker.as_ref().is_some_and(|d| d.excludes(path))
    }

    /// Whether an excluded directory may still hold included paths.
    pub fn may_reinclude_beneath(&self) -> bool {
        self.docker.as_ref().is_some_and(|d| d.has_exceptions())
    }
}

/// The `.lksignore` files that apply in a directory: (the length of the
/// directory that holds one, its rules), outermost first.
type Chain = Arc<Vec<(usize, Arc<Gitignore>)>>;

/// See [`Ignores::tree_filter`].
pub struct TreeFilter<'a> {
    entries: Entries<'a>,
    ignored_dirs: std::collections::HashSet<RelPath>,
}

impl TreeFilter<'_> {
    /// Whether to keep `path` (the next of the tree, in order).
    pub fn keeps(&mut self, path: &RelPath, is_dir: bool) -> bool {
        let ig = self.entries.ignores;
        if ig.docker.as_ref().is_some_and(|d| d.has_exceptions()) {
            // A `!` exception may take back what is beneath an ignored
            // directory: every path on its own.
            return !ig.ignores_path(path, is_dir);
        }
        let under_ignored = !self.ignored_dirs.is_empty()
            && path
                .as_str()
                .rsplit_once('/')
                .is_some_and(|(parent, _)| self.ignored_dirs.contains(parent));
        let ignored = under_ignored || self.entries.ignores(path, is_dir);
        if ignored && is_dir {
            self.ignored_dirs.insert(path.clone());
        }
        !ignored
    }
}

/// Whether paths are ignored, given that none of their parents is (a walk
/// that prunes ignored directories only needs this), for many paths in a
/// row: the `.lksignore` files of the last directory asked about are kept at
/// hand.
pub struct Entries<'a> {
    ignores: &'a Ignores,
    last: Option<(String, Chain)>,
}

impl Entries<'_> {
    /// Whether `path` is ignored, given that none of its parents is.
    pub fn ignores(&mut self, path: &RelPath, is_dir: bool) -> bool {
        let ig = self.ignores;
        if ig.docker.as_ref().is_some_and(|d| d.excludes(path)) {
            return true;
        }
        let dir = path.as_str().rsplit_once('/').map_or("", |(d, _)| d);
        let chain = match &self.last {
            Some((d, chain)) if d == dir => chain,
            _ => {
                let chain = ig.chain(dir);
                &self.last.insert((dir.to_string(), chain)).1
            }
        };
        ig.ignored_with(chain, path, is_dir)
    }
}

/// The ignore rules of one local tree.
pub struct Ignores {
    root: PathBuf,
    docker: Option<DockerIgnore>,
    excludes: Excludes,
    only: Option<Only>,
    /// `.lksignore` per directory (`""` is the root), loaded on first use.
    lksignore: Mutex<HashMap<String, Option<Arc<Gitignore>>>>,
    /// Per directory, the `.lksignore` files of it and its parents (with
    /// their directory's length), outermost first: each directory is worked
    /// out once from its parent's, so a deep tree costs no more per entry.
    chains: Mutex<HashMap<String, Chain>>,
    warnings: Mutex<Vec<IgnoreError>>,
}

impl Ignores {
    /// Reads the root's `.dockerignore` and compiles `--exclude` patterns.
    pub fn load(root: &Path, excludes: &[String]) -> Ignores {
        Ignores::with_filter(root, &Filter::excludes(excludes))
    }

    /// Reads the root's `.dockerignore` and compiles `filter`.
    pub fn with_filter(root: &Path, filter: &Filter) -> Ignores {
        let mut warnings = Vec::new();
        let docker = std::fs::read_to_string(root.join(DOCKERIGNORE))
            .ok()
            .filter(|_| !filter.no_dockerignore)
            .and_then(|t| DockerIgnore::parse(&t, &mut warnings));
        let (excludes, bad) = Excludes::compile(root, filter);
        let file = if filter.at.is_empty() {
            "--exclude"
        } else {
            "ignore"
        };
        for (pattern, reason) in bad {
            warnings.push(IgnoreError::BadPattern {
                file: file.into(),
                pattern,
                reason,
            });
        }
        // Checked when the configuration is read: a bad entry here is one
        // written by a caller that did not, so nothing is left out.
        let only = Only::compile(&filter.only).unwrap_or_else(|(pattern, reason)| {
            warnings.push(IgnoreError::BadPattern {
                file: "only".into(),
                pattern,
                reason,
            });
            None
        });
        Ignores {
            root: root.to_path_buf(),
            docker,
            excludes,
            only,
            lksignore: Mutex::new(HashMap::new()),
            chains: Mutex::new(HashMap::new()),
            warnings: Mutex::new(warnings),
        }
    }

    /// Problems found in ignore files so far; each is returned once.
    pub fn take_warnings(&self) -> Vec<IgnoreError> {
        std::mem::take(&mut *self.warnings.lock().unwrap())
    }

    /// Whether a directory that is itself ignored may still hold synced paths
    /// (a `!` exception in `.dockerignore`), so a walk must not prune it.
    pub fn may_reinclude_beneath(&self, dir: &RelPath) -> bool {
        self.docker.as_ref().is_some_and(|d| d.has_exceptions())
            && !self.ignored_by_non_docker(dir, true)
    }

    /// A matcher for many entries in a row (a walk's, a manifest's): the
    /// rules of their directory are looked up once for a run of siblings.
    pub fn entries(&self) -> Entries<'_> {
        Entries {
            ignores: self,
            last: None,
        }
    }

    fn ignored_by_non_docker(&self, path: &RelPath, is_dir: bool) -> bool {
        let parent = path.parent();
        let chain = self.chain(parent.as_ref().map_or("", |p| p.as_str()));
        self.ignored_with(&chain, path, is_dir)
    }

    /// Whether `path` is ignored by the rules other than Docker's, `chain`
    /// being the `.lksignore` files of its directory.
    fn ignored_with(&self, chain: &Chain, path: &RelPath, is_dir: bool) -> bool {
        if path.file_name() == ".git" || (!is_dir && is_temporary(path.file_name())) {
            return true;
        }
        if self.excludes.excludes(path, is_dir) {
            return true;
        }
        if self.only.as_ref().is_some_and(|o| !o.admits(path, is_dir)) {
            return true;
        }
        // The deepest .lksignore with an opinion decides.
        for (len, g) in chain.iter().rev() {
            let rel_in_dir = if *len == 0 {
                path.as_str()
            } else {
                &path.as_str()[len + 1..]
            };
            match g.matched(rel_in_dir, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        false
    }

    /// The `.lksignore` files that apply in `dir` (see [`Chain`]).
    fn chain(&self, dir: &str) -> Chain {
        if let Some(c) = self.chains.lock().unwrap().get(dir) {
            return c.clone();
        }
        // The nearest known ancestor, and the directories below it.
        let mut missing = Vec::new();
        let mut d = dir;
        let mut base: Chain = loop {
            if let Some(c) = self.chains.lock().unwrap().get(d) {
                break c.clone();
            }
            missing.push(d);
            if d.is_empty() {
                break Arc::new(Vec::new());
            }
            d = d.rsplit_once('/').map_or("", |(parent, _)| parent);
        };
        for d in missing.into_iter().rev() {
            if let Some(g) = self.lksignore_of(d) {
                let mut v = (*base).clone();
                v.push((d.len(), g));
                base = Arc::new(v);
            }
            self.chains
                .lock()
                .unwrap()
                .insert(d.to_string(), base.clone());
        }
        base
    }

    /// A filter for the entries of a whole tree, given in order (sorted by
    /// path: a directory before what it holds), that keeps what is not
    /// ignored in time linear in its size however deep it is: what an
    /// ignored directory holds is ignored with it, so each path is matched
    /// once, given its parent is not ignored.
    pub fn tree_filter(&self) -> TreeFilter<'_> {
        TreeFilter {
            entries: self.entries(),
            ignored_dirs: Default::default(),
        }
    }

    /// Whether `path` is ignored, checking every parent too (for single paths
    /// reported by the watcher).
    pub fn ignores_path(&self, path: &RelPath, is_dir: bool) -> bool {
        let s = path.as_str();
        if path.components().any(|c| c == ".git") {
            return true;
        }
        if self.docker.as_ref().is_some_and(|d| d.excludes(path)) {
            return true;
        }
        for (i, _) in s.match_indices('/') {
            let prefix = RelPath::new(&s[..i]).expect("prefix of a valid path");
            if self.ignored_by_non_docker(&prefix, true) {
                return true;
            }
        }
        self.ignored_by_non_docker(path, is_dir)
    }

    fn lksignore_of(&self, dir: &str) -> Option<Arc<Gitignore>> {
        let mut map = self.lksignore.lock().unwrap();
        if let Some(g) = map.get(dir) {
            return g.clone();
        }
        let abs = if dir.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir)
        };
        let file = abs.join(LKSIGNORE);
        let g = if file.is_file() {
            let mut b = GitignoreBuilder::new(&abs);
            if let Some(e) = b.add(&file) {
                self.warnings.lock().unwrap().push(IgnoreError::BadPattern {
                    file: file.display().to_string(),
                    pattern: String::new(),
                    reason: e.to_string(),
                });
            }
            b.build().ok().map(Arc::new)
        } else {
            None
        };
        map.insert(dir.to_string(), g.clone());
        g
    }

    /// What a walk saw listing `dir` (relative to the root, `""` for the
    /// root): whether it holds a `.lksignore`. One it does not hold is not
    /// looked for again (a directory costs one `stat` less).
    pub fn listed(&self, dir: &str, has_lksignore: bool) {
        if !has_lksignore {
            let mut map = self.lksignore.lock().unwrap();
            if !map.contains_key(dir) {
                map.insert(dir.to_string(), None);
            }
        }
    }

    /// Whether a change to `path` changes the rules themselves.
    pub fn is_rule_file(path: &RelPath) -> bool {
        path.file_name() == LKSIGNORE || path.as_str() == DOCKERIGNORE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(files: &[(&str, &str)], excludes: &[&str]) -> (tempfile::TempDir, Ignores) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let ex: Vec<String> = excludes.iter().map(|s| s.to_string()).collect();
        let ig = Ignores::load(dir.path(), &ex);
        (dir, ig)
    }

    fn ignored(ig: &Ignores, p: &str) -> bool {
        ig.ignores_path(&RelPath::new(p).unwrap(), false)
    }

    #[test]
    fn editors_and_tools_temporary_files_are_never_synced() {
        let (_d, ig) = rules(&[], &[]);
        for t in [
            "src/.server.js.swp",
            "src/.server.js.swo",
            "4913",
            "src/server.js~",
            ".#server.js",
            "#server.js#",
            "server.js___jb_tmp___",
            "server.js___jb_old___",
            "sedAb12Cd",
            "src/.goutputstream-X1Y2Z3",
        ] {
            assert!(ignored(&ig, t), "{t} is synced");
        }
        for f in [
            "server.js",
            "sediment.txt",
            "sedimentary",
            "a.swf",
            "49130",
            "notes.swp.md",
        ] {
            assert!(!ignored(&ig, f), "{f} is not synced");
        }
    }

    #[test]
    fn git_is_always_ignored() {
        let (_d, ig) = rules(&[], &[]);
        assert!(ignored(&ig, ".git/config"));
        assert!(ignored(&ig, "sub/.git/HEAD"));
        assert!(!ignored(&ig, "src/main.rs"));
    }

    #[test]
    fn dockerignore_patterns_are_anchored_at_the_root() {
        let (_d, ig) = rules(
            &[(".dockerignore", "*.log\nnode_modules\n**/*.tmp\n/build/\n")],
            &[],
        );
        assert!(ignored(&ig, "x.log"));
        assert!(!ignored(&ig, "sub/x.log"), "docker's *.log is root-only");
        assert!(ignored(&ig, "node_modules/a/b.js"));
        assert!(!ignored(&ig, "web/node_modules/a.js"));
        assert!(ignored(&ig, "a/b/c.tmp"));
        assert!(ignored(&ig, "build/out.bin"));
    }

    #[test]
    fn dockerignore_exceptions_reinclude_beneath_an_excluded_dir() {
        let (_d, ig) = rules(
            &[(".dockerignore", "docs\n!docs/keep.md\n# comment\n")],
            &[],
        );
        assert!(ignored(&ig, "docs/other.md"));
        assert!(!ignored(&ig, "docs/keep.md"));
        assert!(ig.may_reinclude_beneath(&RelPath::new("docs").unwrap()));
    }

    #[test]
    fn lksignore_applies_beneath_its_directory_with_gitignore_semantics() {
        let (_d, ig) = rules(
            &[
                (".lksignore", "*.bak\n"),
                ("web/.lksignore", "dist/\n!keep.bak\n"),
            ],
            &[],
        );
        assert!(ignored(&ig, "a.bak"));
        assert!(ignored(&ig, "deep/x/a.bak"));
        assert!(ignored(&ig, "web/dist/app.js"));
        assert!(!ignored(&ig, "dist/app.js"));
        assert!(!ignored(&ig, "web/keep.bak"), "a deeper whitelist wins");
    }

    #[test]
    fn excludes_use_gitignore_semantics() {
        let (_d, ig) = rules(&[], &["target", "*.o"]);
        assert!(ignored(&ig, "target/debug/x"));
        assert!(ignored(&ig, "sub/target/x"));
        assert!(ignored(&ig, "a/b.o"));
        assert!(!ignored(&ig, "a/b.c"));
    }

    #[test]
    fn a_bad_pattern_is_reported_not_fatal() {
        let (_d, ig) = rules(&[(".dockerignore", "[unclosed\nok.txt\n")], &[]);
        assert!(ignored(&ig, "ok.txt"));
        assert_eq!(ig.take_warnings().len(), 1);
    }
}
