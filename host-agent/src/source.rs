//! A local directory as lks mirrors it: its ignore rules and its tree, kept
//! current from watcher events, and the safety stops (after mutagen's) that
//! keep damage on the host from being mirrored onto an agent.

use crate::ignores::Ignores;
use crate::tree::{LocalTree, Tree};
use lks_proto::RelPath;
use std::path::{Path, PathBuf};

/// One mirrored local directory.
pub struct Source {
    /// The directory.
    pub root: PathBuf,
    excludes: Vec<String>,
    /// Its ignore rules (reloaded when a rule file changes).
    pub ignores: Ignores,
    /// Its tree as last scanned or refreshed.
    pub tree: LocalTree,
}

impl Source {
    /// A source for `root` with extra gitignore-style `excludes`; nothing is
    /// scanned yet.
    pub fn new(root: &Path, excludes: &[String]) -> Source {
        Source {
            root: root.to_path_buf(),
            excludes: excludes.to_vec(),
            ignores: Ignores::load(root, excludes),
            tree: LocalTree::new(root),
        }
    }

    /// Reloads the rules and rescans everything; returns what was skipped
    /// or could not be parsed, to tell the user.
    pub fn rescan(&mut self) -> Vec<String> {
        self.ignores = Ignores::load(&self.root, &self.excludes);
        self.tree.rescan(&self.ignores);
        self.warnings()
    }

    /// Brings the tree up to date with changed `paths` (relative to the
    /// root; `None` is the root itself). A rule file among them, the root,
    /// or `rescan` (the watcher lost events) means a full rescan.
    pub fn apply<'a>(
        &mut self,
        rescan: bool,
        paths: impl IntoIterator<Item = Option<&'a RelPath>>,
    ) -> Vec<String> {
        let paths: Vec<Option<&RelPath>> = paths.into_iter().collect();
        if rescan || paths.iter().any(|p| p.is_none_or(Ignores::is_rule_file)) {
            return self.rescan();
        }
        for p in paths.into_iter().flatten() {
            self.tree.refresh(p, &self.ignores);
        }
        self.warnings()
    }

    /// Why mirroring the tree onto `remote` now would copy damage rather than
    /// work: the directory vanished, or it is empty while the agent's is not.
    pub fn safety_stop(&self, remote: &Tree) -> Option<String> {
        if !self.root.is_dir() {
            return Some(format!(
                "the local directory {} is gone; not mirroring that on the agent (waiting for it to come back)",
                self.root.display()
            ));
        }
        if self.tree.nodes.is_empty() && !remote.is_empty() {
            return Some(format!(
                "the local directory {} is empty while the agent's has {} entries; not deleting them all \
                 (clear the agent's directory yourself if that is what you want)",
                self.root.display(),
                remote.len()
            ));
        }
        None
    }

    /// Whether mirroring onto `remote` would delete anything.
    pub fn deletes_pending(&self, remote: &Tree) -> bool {
        // Both are sorted: one merge walk, no lookups.
        let mut local = self.tree.nodes.keys().peekable();
        for r in remote.keys() {
            while local.next_if(|l| *l < r).is_some() {}
            if local.peek() != Some(&r) {
                return true;
            }
        }
        false
    }

    fn warnings(&mut self) -> Vec<String> {
        let mut out: Vec<String> = self
            .ignores
            .take_warnings()
            .into_iter()
            .map(|w| w.to_string())
            .collect();
        out.append(&mut self.tree.warnings);
        out
    }
}
