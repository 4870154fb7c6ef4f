//! A local directory as lks mirrors it: its ignore rules and its tree, kept
//! current from watcher events, and the safety stops (after mutagen's) that
//! keep damage on the host from being mirrored onto an agent.

use crate::filter::Filter;
use crate::ignores::Ignores;
use crate::plan::{Op, plan, plan_beneath};
use crate::scan::Found;
use crate::tree::{LocalTree, Tree, subtree};
use lks_proto::RelPath;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What may differ between a source's tree and the tree its agent last
/// confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dirty {
    /// Anything: the next plan looks at both trees whole (the first one,
    /// after a rescan, after the agent's tree was fetched again or an
    /// operation failed).
    All,
    /// Only these paths and what is beneath them (what the watcher
    /// reported since the last batch that went through whole).
    Beneath(BTreeSet<RelPath>),
}

/// One mirrored local directory.
pub struct Source {
    /// The directory.
    pub root: PathBuf,
    filter: Filter,
    /// Its ignore rules (reloaded when a rule file changes).
    pub ignores: Ignores,
    /// Its tree as last scanned or refreshed.
    pub tree: LocalTree,
    /// Where it may differ from the agent's.
    dirty: Dirty,
    /// Where its hashes are kept between runs, if anywhere.
    hashes: Option<Kept>,
}

/// A source's hashes kept on disk (see [`crate::hashcache`]).
struct Kept {
    file: PathBuf,
    /// Read once, at the first scan.
    loaded: bool,
    /// How many files the tree had hashed at the last save.
    saved: usize,
    saved_at: Instant,
}

/// Hashes learned are written out once this many are new...
const SAVE_AFTER_HASHES: usize = 1000;
/// ...or once this long passed since the last time.
const SAVE_AFTER: Duration = Duration::from_secs(10);

impl Source {
    /// A source for `root` with extra gitignore-style `excludes`; nothing is
    /// scanned yet.
    pub fn new(root: &Path, excludes: &[String]) -> Source {
        Source::with_filter(root, &Filter::excludes(excludes))
    }

    /// A source for `root` that takes what `filter` lets through.
    pub fn with_filter(root: &Path, filter: &Filter) -> Source {
        Source {
            root: root.to_path_buf(),
            filter: filter.clone(),
            ignores: Ignores::with_filter(root, filter),
            tree: LocalTree::new(root),
            dirty: Dirty::All,
            hashes: None,
        }
    }

    /// Keeps the hashes of the tree's files in a file under `dir` between
    /// runs (read at the first scan, written as they are learned and when
    /// the source goes).
    pub fn keep_hashes_in(mut self, dir: &Path) -> Source {
        self.hashes = Some(Kept {
            file: crate::hashcache::file_for(dir, &self.root),
            loaded: false,
            saved: 0,
            saved_at: Instant::now(),
        });
        self
    }

    /// Writes the hashes out when enough are new (`now`: when any are).
    fn save_hashes(&mut self, now: bool) -> Option<String> {
        let kept = self.hashes.as_mut()?;
        let new = self.tree.hashed - kept.saved;
        if new == 0 || !(now || new >= SAVE_AFTER_HASHES || kept.saved_at.elapsed() >= SAVE_AFTER) {
            return None;
        }
        kept.saved = self.tree.hashed;
        kept.saved_at = Instant::now();
        match crate::hashcache::save(&kept.file, &self.tree.nodes) {
            Ok(n) => {
                tracing::debug!(file = %kept.file.display(), hashes = n, "hash cache saved");
                None
            }
            Err(e) => Some(format!(
                "cannot write the hash cache {}: {e} (the next run reads the files again)",
                kept.file.display()
            )),
        }
    }

    /// Reads the kept hashes into the tree (once, after the first scan).
    fn load_hashes(&mut self) {
        let Some(kept) = self.hashes.as_mut().filter(|k| !k.loaded) else {
            return;
        };
        kept.loaded = true;
        match crate::hashcache::load(&kept.file) {
            Ok(records) => {
                let seeded = crate::hashcache::seed(&mut self.tree.nodes, &records);
                tracing::debug!(
                    kept = records.len(),
                    seeded,
                    "hash cache: {seeded} of {} kept hashes still hold",
                    records.len()
                );
            }
            Err(why) => self.tree.warnings.push(why),
        }
    }

    /// The agent's tree may differ anywhere (it was fetched again, or an
    /// operation failed): the next plan looks at both trees whole.
    pub fn unsettled(&mut self) {
        self.dirty = Dirty::All;
    }

    /// A plan went through whole: the trees are equal (until the next change).
    pub fn settled(&mut self) {
        self.dirty = Dirty::Beneath(BTreeSet::new());
    }

    /// The operations that make `remote` equal to the tree, looking only
    /// where they may differ; what could not be planned, to tell the user.
    pub fn plan(&mut self, remote: &Tree) -> (Vec<Op>, Vec<String>) {
        let hashed = self.tree.hashed;
        let (ops, mut problems) = match &self.dirty {
            Dirty::All => plan(&mut self.tree, remote),
            Dirty::Beneath(roots) => plan_beneath(&mut self.tree, remote, roots),
        };
        if self.tree.hashed > hashed {
            tracing::debug!(
                files = self.tree.hashed - hashed,
                "hashed {} files to compare them with the agent's",
                self.tree.hashed - hashed
            );
        }
        problems.extend(self.save_hashes(false));
        (ops, problems)
    }

    /// Reloads the rules and rescans everything; returns what was skipped
    /// or could not be parsed, to tell the user.
    pub fn rescan(&mut self) -> Vec<String> {
        let found = self.scan();
        self.take(found)
    }

    /// Reloads the rules and walks everything: what is there now (and its
    /// digest), for [`Source::take`]. The tree is not changed yet.
    pub fn scan(&mut self) -> Found {
        self.ignores = Ignores::with_filter(&self.root, &self.filter);
        self.tree.walk(&self.ignores)
    }

    /// Makes what [`Source::scan`] found the tree; returns what was skipped
    /// or could not be parsed, to tell the user.
    pub fn take(&mut self, found: Found) -> Vec<String> {
        self.tree.adopt(found);
        self.load_hashes();
        self.dirty = Dirty::All;
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
            let top = self.tree.refresh(p, &self.ignores);
            if let Dirty::Beneath(roots) = &mut self.dirty {
                roots.insert(top);
            }
        }
        self.warnings()
    }

    /// Why mirroring the tree onto `remote` now would copy damage rather than
    /// work: the directory vanished, or it is empty while the agent's is not.
    pub fn safety_stop(&self, remote: &Tree) -> Option<String> {
        // A folder a host-side build makes later: nothing to mirror yet, and
        // nothing on the agent to lose.
        if remote.is_empty() && self.root.symlink_metadata().is_err() {
            return None;
        }
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

    /// Whether mirroring onto `remote` would delete anything (looking only
    /// where the trees may differ).
    pub fn deletes_pending(&self, remote: &Tree) -> bool {
        // Both are sorted: one merge walk, no lookups.
        let only_remote = |local: &mut dyn Iterator<Item = &RelPath>,
                           remote: &mut dyn Iterator<Item = &RelPath>| {
            let mut local = local.peekable();
            for r in remote {
                while local.next_if(|l| *l < r).is_some() {}
                if local.peek() != Some(&r) {
                    return true;
                }
            }
            false
        };
        match &self.dirty {
            Dirty::All => only_remote(&mut self.tree.nodes.keys(), &mut remote.keys()),
            Dirty::Beneath(roots) => roots.iter().any(|root| {
                only_remote(
                    &mut subtree(&self.tree.nodes, root).map(|(p, _)| p),
                    &mut subtree(remote, root).map(|(p, _)| p),
                )
            }),
        }
    }

    /// What was skipped or could not be parsed since the last call, to
    /// tell the user.
    pub fn warnings(&mut self) -> Vec<String> {
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

impl Drop for Source {
    /// The hashes learned since the last save are kept for the next run.
    fn drop(&mut self) {
        if let Some(why) = self.save_hashes(true) {
            tracing::warn!("{why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::confirm;
    use crate::tree::Kind;

    /// A small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// What the agent would confirm after a full sync of `source`.
    fn confirmed(source: &mut Source) -> Tree {
        let paths: Vec<RelPath> = source.tree.nodes.keys().cloned().collect();
        let mut remote = Tree::new();
        for p in paths {
            if source.tree.nodes[&p].kind == Kind::File {
                source.tree.hash(&p).unwrap();
            }
            let n = source.tree.nodes[&p].node.clone();
            remote.insert(p, n);
        }
        remote
    }

    fn sorted(mut ops: Vec<Op>) -> Vec<String> {
        let mut v: Vec<String> = ops.drain(..).map(|o| format!("{o:?}")).collect();
        v.sort();
        v
    }

    #[test]
    fn planning_beneath_the_changed_paths_gives_what_a_whole_plan_gives() {
        for seed in [0x5eed, 0xfeed_beef, 42] {
            edits_planned_beneath_match_whole_plans(seed);
        }
    }

    fn edits_planned_beneath_match_whole_plans(seed: u64) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let names = ["a", "a b", "a-x", "b", "c"];
        let mut rng = Rng(seed);
        let pick = |rng: &mut Rng, depth: u64| -> String {
            let n = 1 + rng.below(depth);
            (0..n)
                .map(|_| names[rng.below(names.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join("/")
        };
        for _ in 0..40 {
            let p = root.join(pick(&mut rng, 3));
            if std::fs::create_dir_all(p.parent().unwrap()).is_ok() && !p.is_dir() {
                let _ = std::fs::write(&p, "first");
            }
        }
        let mut source = Source::new(root, &[]);
        source.rescan();
        let mut remote = confirmed(&mut source);
        for round in 0..150 {
            source.settled();
            let mut touched = Vec::new();
            for _ in 0..1 + rng.below(4) {
                let rel = pick(&mut rng, 3);
                let abs = root.join(&rel);
                match rng.below(5) {
                    // Edit (or create) a file.
                    0 | 1 => {
                        if std::fs::create_dir_all(abs.parent().unwrap()).is_ok() && !abs.is_dir() {
                            let _ = std::fs::write(&abs, format!("round {round}"));
                        }
                    }
                    // Delete whatever is there.
                    2 => {
                        let _ = std::fs::remove_file(&abs);
                        let _ = std::fs::remove_dir_all(&abs);
                    }
                    // A directory where a file may be.
                    3 => {
                        let _ = std::fs::remove_file(&abs);
                        let _ = std::fs::create_dir_all(abs.join("inner"));
                        let _ = std::fs::write(abs.join("inner/f"), "f");
                    }
                    // A mode change.
                    _ => {
                        use std::os::unix::fs::PermissionsExt;
                        if abs.is_file() {
                            let mode = if rng.below(2) == 0 { 0o755 } else { 0o644 };
                            let _ = std::fs::set_permissions(
                                &abs,
                                std::fs::Permissions::from_mode(mode),
                            );
                        }
                    }
                }
                touched.push(RelPath::new(rel).unwrap());
            }
            source.apply(false, touched.iter().map(Some));
            let (beneath, problems) = source.plan(&remote);
            assert!(problems.is_empty(), "{problems:?}");
            let (whole, _) = plan(&mut source.tree, &remote);
            assert_eq!(
                sorted(beneath.clone()),
                sorted(whole),
                "seed {seed} round {round}, touched {touched:?}"
            );
            // A deletion: a path the agent has and the tree has not (a
            // directory that became a file is not one).
            assert_eq!(
                source.deletes_pending(&remote),
                beneath
                    .iter()
                    .any(|o| matches!(o, Op::Delete(p) if !source.tree.nodes.contains_key(p))),
                "round {round}"
            );
            // The agent applies it: its tree is the local one again.
            for op in &beneath {
                match op {
                    Op::Put { path, file, .. } => {
                        let hash = source.tree.hash(path).unwrap();
                        remote.insert(path.clone(), file.node(file.size, Some(hash)));
                    }
                    op => confirm(&mut remote, op),
                }
            }
            assert_eq!(plan(&mut source.tree, &remote).0, vec![], "round {round}");
        }
    }
}
