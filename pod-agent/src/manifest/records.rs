//! What the agent knows of its root, in memory: one record per entry, by
//! path, in the order the manifest answers (sorted by path, byte by byte).
//!
//! A path's subtree is `path` itself and the keys from `path/` up to (not
//! including) `path0`: `0` follows `/` in ASCII, and nothing beneath `path`
//! sorts outside that range.

use super::StatKey;
use lks_proto::v1::{Entry, EntryKind};
use std::collections::BTreeMap;
use std::ops::Bound::{self, Excluded, Included, Unbounded};

/// One entry beneath the root.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub what: What,
    /// Its permission bits.
    pub mode: u32,
    /// The look at the tree that last saw it (see [`Records::sweep`]).
    pub seen: u32,
}

/// The kind of an entry and what the manifest says of it.
#[derive(Clone, Debug, PartialEq)]
pub enum What {
    /// A regular file: its stat when it was hashed, and its blake3 (valid
    /// while the stat is unchanged).
    File { key: StatKey, hash: [u8; 32] },
    /// A directory, and its watch when it is watched.
    Dir { wd: Option<i32> },
    /// A symlink and its target.
    Symlink { target: Box<str> },
}

impl Record {
    /// Whether the answer says the same of both (a file's inode and ctime,
    /// a directory's watch, when it was seen: not in the answer).
    fn answers_as(&self, other: &Record) -> bool {
        self.mode == other.mode
            && match (&self.what, &other.what) {
                (What::File { key: a, hash: h }, What::File { key: b, hash: g }) => {
                    a.size == b.size && a.mtime_ns == b.mtime_ns && h == g
                }
                (What::Dir { .. }, What::Dir { .. }) => true,
                (What::Symlink { target: a }, What::Symlink { target: b }) => a == b,
                _ => false,
            }
    }

    /// The entry the manifest answers for this record at `path`.
    fn entry(&self, path: &str) -> Entry {
        let mut e = Entry {
            path: path.to_string(),
            mode: self.mode,
            ..Default::default()
        };
        match &self.what {
            What::File { key, hash } => {
                e.kind = EntryKind::File as i32;
                e.size = key.size;
                e.mtime_ns = key.mtime_ns;
                e.blake3 = hash.to_vec();
            }
            What::Dir { .. } => e.kind = EntryKind::Dir as i32,
            What::Symlink { target } => {
                e.kind = EntryKind::Symlink as i32;
                e.link_target = target.to_string();
            }
        }
        e
    }
}

/// A directory that is no longer known, with the watch it had.
pub type Unwatched = (i32, Box<str>);

/// The records of one root.
#[derive(Default)]
pub struct Records {
    map: BTreeMap<Box<str>, Record>,
    /// Entries that could not be described, and why: repeated in every
    /// answer, as a scan would.
    problems: BTreeMap<Box<str>, String>,
    /// The current look at the tree.
    epoch: u32,
    /// Records added since the map was last packed.
    added: usize,
    /// Counts the changes to what the answer says (not to the watches nor
    /// to when an entry was last seen): equal, the answer is the same.
    generation: u64,
}

/// Where `path`'s subtree ends (excluded).
fn subtree_end(path: &str) -> String {
    format!("{path}0")
}

impl Records {
    /// Starts a new look at the tree: what it describes is marked with the
    /// returned epoch.
    pub fn begin(&mut self) -> u32 {
        self.epoch = self.epoch.wrapping_add(1);
        self.epoch
    }

    /// The epoch of the current look.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn get(&self, path: &str) -> Option<&Record> {
        self.map.get(path)
    }

    pub fn get_mut(&mut self, path: &str) -> Option<&mut Record> {
        self.map.get_mut(path)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Records `path` as `record`. A directory replaced by something else
    /// takes its subtree with it; a directory described again keeps its
    /// watch unless `record` names one. Returns the watches of the
    /// directories no longer known.
    pub fn put(&mut self, path: &str, mut record: Record) -> Vec<Unwatched> {
        if !self.problems.is_empty() && self.problems.remove(path).is_some() {
            self.generation += 1;
        }
        let Some(old) = self.map.get_mut(path) else {
            self.map.insert(path.into(), record);
            self.added += 1;
            self.generation += 1;
            return Vec::new();
        };
        if !old.answers_as(&record) {
            self.generation += 1;
        }
        match (&old.what, &mut record.what) {
            (What::Dir { wd: Some(old_wd) }, What::Dir { wd }) if wd.is_none() => {
                *wd = Some(*old_wd);
            }
            (What::Dir { .. }, What::Dir { .. })
            | (What::File { .. } | What::Symlink { .. }, _) => {}
            (What::Dir { .. }, _) => {
                let gone = self.forget(path);
                self.map.insert(path.into(), record);
                return gone;
            }
        }
        *old = record;
        Vec::new()
    }

    /// Packs the records tightly again once many were added since the last
    /// time: a map filled in order keeps its nodes about half full, and the
    /// agent's records are most of its memory.
    pub fn compact(&mut self) {
        if self.added < 1024 || self.added < self.map.len() / 4 {
            return;
        }
        self.added = 0;
        // `append` builds the merged map anew from both sorted sequences,
        // its nodes full, freeing the old ones as it goes (no second copy).
        if let Some((key, record)) = self.map.pop_last() {
            let mut last = BTreeMap::new();
            last.insert(key, record);
            self.map.append(&mut last);
        }
    }

    /// Forgets `path` and everything beneath it; returns the watches of the
    /// directories no longer known.
    pub fn forget(&mut self, path: &str) -> Vec<Unwatched> {
        let mut gone = Vec::new();
        let below = format!("{path}/");
        let end = subtree_end(path);
        let keys: Vec<Box<str>> = std::iter::once(path)
            .filter(|p| self.map.contains_key(*p))
            .map(Box::from)
            .chain(
                self.map
                    .range::<str, _>((Included(below.as_str()), Excluded(end.as_str())))
                    .map(|(k, _)| k.clone()),
            )
            .collect();
        for key in keys {
            self.generation += 1;
            if let Some(Record {
                what: What::Dir { wd: Some(wd) },
                ..
            }) = self.map.remove(&key)
            {
                gone.push((wd, key));
            }
        }
        let problems: Vec<Box<str>> = std::iter::once(path)
            .filter(|p| self.problems.contains_key(*p))
            .map(Box::from)
            .chain(
                self.problems
                    .range::<str, _>((Included(below.as_str()), Excluded(end.as_str())))
                    .map(|(k, _)| k.clone()),
            )
            .collect();
        for key in problems {
            self.generation += 1;
            self.problems.remove(&key);
        }
        gone
    }

    /// Notes why `path` could not be described (or listed).
    pub fn problem(&mut self, path: &str, why: String) {
        if self.problems.get(path) != Some(&why) {
            self.generation += 1;
            self.problems.insert(path.into(), why);
        }
    }

    /// Changes to what the answer says so far.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Notes a change made through [`Records::get_mut`] that the answer
    /// shows (a new mode).
    pub fn changed(&mut self) {
        self.generation += 1;
    }

    /// The names of the known entries directly in the directory `dir` (""
    /// for the root), skipping over what is beneath them.
    pub fn children(&self, dir: &str) -> Vec<String> {
        let (start, end) = if dir.is_empty() {
            (String::new(), None)
        } else {
            (format!("{dir}/"), Some(subtree_end(dir)))
        };
        let mut out = Vec::new();
        let mut from: Bound<String> = Included(start.clone());
        loop {
            let upper = end.as_deref().map_or(Unbounded, Excluded);
            let bounds = (from.as_ref().map(|s| s.as_str()), upper);
            let Some((key, _)) = self.map.range::<str, _>(bounds).next() else {
                break;
            };
            let name = key[start.len()..].split('/').next().unwrap_or_default();
            out.push(name.to_string());
            from = if key.len() == start.len() + name.len() {
                // The child itself: what follows may be a sibling (`a.c`
                // sorts between `a` and `a/x`).
                Excluded(key.to_string())
            } else {
                // Beneath the child: past its subtree.
                Included(subtree_end(&key[..start.len() + name.len()]))
            };
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Forgets what beneath `dir` (the whole root for None; `dir` itself
    /// included) was not seen since the look `epoch` began; returns the
    /// watches of the directories no longer known.
    pub fn sweep(&mut self, dir: Option<&str>, epoch: u32) -> Vec<Unwatched> {
        let stale: Vec<Box<str>> = match dir {
            None => self
                .map
                .iter()
                .filter(|(_, r)| r.seen != epoch)
                .map(|(k, _)| k.clone())
                .collect(),
            Some(dir) => {
                let below = format!("{dir}/");
                let end = subtree_end(dir);
                self.map
                    .get_key_value(dir)
                    .into_iter()
                    .chain(
                        self.map
                            .range::<str, _>((Included(below.as_str()), Excluded(end.as_str()))),
                    )
                    .filter(|(_, r)| r.seen != epoch)
                    .map(|(k, _)| k.clone())
                    .collect()
            }
        };
        let mut gone = Vec::new();
        // Forgetting a directory forgets what is beneath it: the stale
        // entries beneath one already forgotten are gone.
        for key in stale {
            gone.extend(self.forget(&key));
        }
        gone
    }

    /// Up to `n` entries of the answer for `prefix` (the whole root for
    /// None) that come after `after` (from the start for None).
    pub fn page(&self, prefix: Option<&str>, after: Option<&str>, n: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let (below, end) = match prefix {
            None => (None, None),
            Some(p) => (Some(format!("{p}/")), Some(subtree_end(p))),
        };
        if let (Some(p), None) = (prefix, after)
            && let Some(r) = self.map.get(p)
        {
            out.push(r.entry(p));
        }
        let lower = match (after, &below) {
            // After the prefix itself: its subtree, not its siblings.
            (Some(a), Some(b)) if Some(a) == prefix => Included(b.as_str()),
            (Some(a), _) => Excluded(a),
            (None, Some(b)) => Included(b.as_str()),
            (None, None) => Unbounded,
        };
        let upper = end.as_deref().map_or(Unbounded, Excluded);
        for (k, r) in self.map.range::<str, _>((lower, upper)) {
            if out.len() >= n {
                break;
            }
            out.push(r.entry(k));
        }
        out
    }

    /// Why the entries beneath `prefix` (or anywhere) could not be described.
    pub fn warnings(&self, prefix: Option<&str>) -> Vec<String> {
        self.problems
            .iter()
            .filter(|(k, _)| {
                prefix.is_none_or(|p| {
                    ***k == *p || (k.starts_with(p) && k.as_bytes().get(p.len()) == Some(&b'/'))
                })
            })
            .map(|(_, w)| w.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: u8) -> Record {
        Record {
            what: What::File {
                key: StatKey::default(),
                hash: [n; 32],
            },
            mode: 0o644,
            seen: 0,
        }
    }

    fn dir(wd: Option<i32>) -> Record {
        Record {
            what: What::Dir { wd },
            mode: 0o755,
            seen: 0,
        }
    }

    fn paths(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.path.as_str()).collect()
    }

    fn sample() -> Records {
        let mut r = Records::default();
        for (p, rec) in [
            ("a", dir(Some(2))),
            ("a/x", file(1)),
            ("a/sub", dir(Some(3))),
            ("a/sub/y", file(2)),
            ("a.c", file(3)),
            ("a0", file(4)),
            ("b", file(5)),
        ] {
            r.put(p, rec);
        }
        r
    }

    #[test]
    fn the_generation_counts_changes_to_the_answer_only() {
        let mut r = sample();
        let g = r.generation();
        // Seen again by a look, watched anew, its inode and ctime moved (a
        // rename in place): the answer is the same.
        let mut again = file(1);
        again.seen = 7;
        if let What::File { key, .. } = &mut again.what {
            key.ino = 42;
            key.ctime_ns = 9;
        }
        r.put("a/x", again);
        r.put("a", dir(Some(9)));
        r.put("a", dir(None));
        r.sweep(Some("nothing-here"), 0);
        assert_eq!(r.generation(), g);
        r.put("a/x", file(9));
        assert_eq!(r.generation(), g + 1, "new content");
        let mut chmod = file(9);
        chmod.mode = 0o600;
        r.put("a/x", chmod);
        assert_eq!(r.generation(), g + 2, "new mode");
        r.put("new", file(1));
        assert_eq!(r.generation(), g + 3, "a new entry");
        r.forget("a/sub");
        assert_eq!(r.generation(), g + 5, "two entries gone");
        r.problem("bad", "unreadable".into());
        r.problem("bad", "unreadable".into());
        assert_eq!(r.generation(), g + 6, "a new problem, said twice");
    }

    #[test]
    fn the_answer_is_sorted_by_path_and_a_prefix_holds_only_its_subtree() {
        let r = sample();
        let all = r.page(None, None, 100);
        assert_eq!(
            paths(&all),
            ["a", "a.c", "a/sub", "a/sub/y", "a/x", "a0", "b"]
        );
        let a = r.page(Some("a"), None, 100);
        assert_eq!(paths(&a), ["a", "a/sub", "a/sub/y", "a/x"]);
        // In pages, each after the last path of the one before.
        let first = r.page(Some("a"), None, 1);
        assert_eq!(paths(&first), ["a"]);
        let second = r.page(Some("a"), Some("a"), 2);
        assert_eq!(paths(&second), ["a/sub", "a/sub/y"]);
        let third = r.page(Some("a"), Some("a/sub/y"), 2);
        assert_eq!(paths(&third), ["a/x"]);
        assert!(r.page(Some("nothing"), None, 10).is_empty());
        let whole = r.page(None, Some("a/x"), 10);
        assert_eq!(paths(&whole), ["a0", "b"]);
    }

    #[test]
    fn children_are_the_entries_directly_in_a_directory() {
        let r = sample();
        assert_eq!(r.children(""), ["a", "a.c", "a0", "b"]);
        assert_eq!(r.children("a"), ["sub", "x"]);
        assert!(r.children("b").is_empty());
    }

    #[test]
    fn a_directory_replaced_by_a_file_takes_its_subtree_and_its_watches() {
        let mut r = sample();
        let gone = r.put("a", file(9));
        assert_eq!(gone, [(2, "a".into()), (3, "a/sub".into())]);
        assert_eq!(paths(&r.page(None, None, 100)), ["a", "a.c", "a0", "b"]);
        // A directory described again keeps its watch.
        let mut r = sample();
        r.put("a/sub", dir(None));
        assert_eq!(r.get("a/sub").unwrap().what, What::Dir { wd: Some(3) });
    }

    #[test]
    fn a_sweep_forgets_what_the_look_did_not_see() {
        let mut r = sample();
        let epoch = r.begin();
        for p in ["a", "a/x", "a.c"] {
            r.get_mut(p).unwrap().seen = epoch;
        }
        let gone = r.sweep(Some("a"), epoch);
        assert_eq!(gone, [(3, "a/sub".into())]);
        assert_eq!(
            paths(&r.page(None, None, 100)),
            ["a", "a.c", "a/x", "a0", "b"]
        );
        let gone = r.sweep(None, epoch);
        assert!(gone.is_empty());
        assert_eq!(paths(&r.page(None, None, 100)), ["a", "a.c", "a/x"]);
    }

    #[test]
    fn packing_the_records_keeps_every_one_and_their_order() {
        let mut r = Records::default();
        for i in 0..5000 {
            r.put(&format!("d{}/f{i}", i % 7), file((i % 251) as u8));
        }
        let before = r.page(None, None, usize::MAX);
        r.compact();
        assert_eq!(r.added, 0, "packed");
        assert_eq!(r.page(None, None, usize::MAX), before);
        assert_eq!(r.get("d3/f10").unwrap().what, file(10).what);
    }

    #[test]
    fn problems_are_repeated_until_the_entry_is_described_or_gone() {
        let mut r = sample();
        r.problem("a/bad", "cannot read a/bad".into());
        r.problem("c", "cannot read c".into());
        assert_eq!(r.warnings(Some("a")), ["cannot read a/bad"]);
        assert_eq!(r.warnings(None).len(), 2);
        r.put("c", file(1));
        r.forget("a");
        assert!(r.warnings(None).is_empty());
    }
}
