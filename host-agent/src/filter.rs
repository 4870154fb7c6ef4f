//! What one synced folder gives, beyond its own ignore files: gitignore-style
//! excludes (a service's `ignore`, written relative to the service directory;
//! `lks sync --exclude`, relative to the folder) and an allow-list (a sync
//! mapping's `only:`).
//!
//! A service's patterns keep their meaning in every mapping: `/*` with
//! `!/web/` ignores what is beside `web/`, not what is inside it, whichever
//! folder a mapping syncs.

use globset::{GlobBuilder, GlobMatcher};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use lks_proto::RelPath;
use std::path::Path;

/// The settings; [`Excludes`] and [`Only`] are what they compile to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// gitignore-style patterns, relative to the directory the folder is
    /// `at` (the folder itself when `at` is empty).
    pub excludes: Vec<String>,
    /// The folder's path beneath the directory the excludes are written
    /// for, `/`-separated; empty: the folder itself.
    pub at: String,
    /// The allow-list, relative to the folder; empty: everything.
    pub only: Vec<String>,
    /// The folder's `.dockerignore` is not read (nothing builds an image
    /// from it: a host resource's directory).
    pub no_dockerignore: bool,
}

impl Filter {
    /// Only `patterns`, relative to the folder.
    pub fn excludes(patterns: &[String]) -> Filter {
        Filter {
            excludes: patterns.to_vec(),
            ..Filter::default()
        }
    }
}

/// A pattern that could not be compiled: (the pattern, why).
pub type BadPattern = (String, String);

/// The compiled excludes of a folder.
pub struct Excludes {
    rules: Gitignore,
    /// The folder's path beneath the patterns' directory plus `/`, or empty.
    at: String,
    /// The folder itself (or a parent) is excluded: so is everything in it.
    all: bool,
}

impl Excludes {
    /// Compiles `filter`'s excludes for the folder `root`; bad patterns are
    /// left out and returned.
    pub fn compile(root: &Path, filter: &Filter) -> (Excludes, Vec<BadPattern>) {
        let mut bad = vec![];
        let mut b = GitignoreBuilder::new(root);
        for pat in &filter.excludes {
            if let Err(e) = b.add_line(None, pat) {
                bad.push((pat.clone(), e.to_string()));
            }
        }
        let rules = b.build().unwrap_or_else(|_| Gitignore::empty());
        let at = filter.at.trim_matches('/');
        let all = !at.is_empty()
            && at
                .match_indices('/')
                .map(|(i, _)| &at[..i])
                .chain([at])
                .any(|dir| rules.matched(dir, true).is_ignore());
        let at = if at.is_empty() {
            String::new()
        } else {
            format!("{at}/")
        };
        (Excludes { rules, at, all }, bad)
    }

    /// Whether `path` (relative to the folder) is excluded, given that none
    /// of its parents is.
    pub fn excludes(&self, path: &RelPath, is_dir: bool) -> bool {
        if self.all {
            return true;
        }
        if self.rules.is_empty() {
            return false;
        }
        let matched = if self.at.is_empty() {
            self.rules.matched(path.as_str(), is_dir)
        } else {
            self.rules
                .matched(format!("{}{}", self.at, path.as_str()), is_dir)
        };
        matched.is_ignore()
    }
}

/// A compiled allow-list: each entry a path whose components may be globs
/// (`**` for any number of directories). A path is admitted when an entry
/// names it or one of its parents; a directory also when it is on the way to
/// what an entry may name (so the walk reaches it).
#[derive(Debug)]
pub struct Only {
    entries: Vec<Vec<Part>>,
}

#[derive(Debug)]
enum Part {
    /// `**`.
    Any,
    /// One component.
    Name(GlobMatcher),
}

/// How far a path gets along an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reach {
    /// Off it.
    No,
    /// On the way: what the entry names may be beneath.
    Toward,
    /// Named (itself or a parent).
    Named,
}

impl Only {
    /// Whether `pattern` is a valid entry; why not.
    pub fn check(pattern: &str) -> Result<(), String> {
        entry(pattern).map(|_| ())
    }

    /// Compiles `patterns`; None when there are none (everything admitted).
    pub fn compile(patterns: &[String]) -> Result<Option<Only>, BadPattern> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let entries = patterns
            .iter()
            .map(|p| entry(p).map_err(|e| (p.clone(), e)))
            .collect::<Result<_, _>>()?;
        Ok(Some(Only { entries }))
    }

    /// Whether `path` (relative to the folder) is admitted.
    pub fn admits(&self, path: &RelPath, is_dir: bool) -> bool {
        let parts: Vec<&str> = path.components().collect();
        let best = self
            .entries
            .iter()
            .map(|e| reach(e, &parts))
            .max()
            .unwrap_or(Reach::No);
        best == Reach::Named || (is_dir && best == Reach::Toward)
    }
}

fn entry(pattern: &str) -> Result<Vec<Part>, String> {
    let trimmed = pattern.trim().trim_start_matches("./").trim_matches('/');
    let mut parts = vec![];
    for c in trimmed.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if c == ".." {
            return Err("an allow-list entry is a path inside the sync folder: no `..`".into());
        }
        if c == "**" {
            parts.push(Part::Any);
            continue;
        }
        let glob = GlobBuilder::new(c)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| e.kind().to_string())?;
        parts.push(Part::Name(glob.compile_matcher()));
    }
    if parts.is_empty() {
        return Err("empty: name a file or directory inside the sync folder".into());
    }
    Ok(parts)
}

fn reach(entry: &[Part], path: &[&str]) -> Reach {
    match (entry.first(), path.first()) {
        (None, _) => Reach::Named,
        (Some(_), None) => Reach::Toward,
        (Some(Part::Any), Some(_)) => reach(&entry[1..], path).max(reach(entry, &path[1..])),
        (Some(Part::Name(m)), Some(c)) if m.is_match(c) => reach(&entry[1..], &path[1..]),
        (Some(Part::Name(_)), Some(_)) => Reach::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(patterns: &[&str]) -> Only {
        let p: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        Only::compile(&p).unwrap().unwrap()
    }

    fn admits(o: &Only, path: &str, is_dir: bool) -> bool {
        o.admits(&RelPath::new(path).unwrap(), is_dir)
    }

    #[test]
    fn an_allowed_directory_brings_everything_beneath_it() {
        let o = only(&["src/", "package.json"]);
        assert!(admits(&o, "src", true));
        assert!(admits(&o, "src/a/b.js", false));
        assert!(admits(&o, "package.json", false));
        assert!(!admits(&o, "package-lock.json", false));
        assert!(!admits(&o, "node_modules", true));
        assert!(!admits(&o, "test/x.js", false));
    }

    #[test]
    fn the_directories_on_the_way_to_an_entry_are_walked_but_bring_nothing_else() {
        let o = only(&["web/static/*.css"]);
        assert!(admits(&o, "web", true));
        assert!(admits(&o, "web/static", true));
        assert!(admits(&o, "web/static/a.css", false));
        assert!(!admits(&o, "web/static/a.js", false));
        assert!(!admits(&o, "web/index.html", false));
        assert!(!admits(&o, "web/other", true));
    }

    #[test]
    fn double_star_matches_any_depth() {
        let o = only(&["**/*.py"]);
        assert!(admits(&o, "a.py", false));
        assert!(admits(&o, "pkg/sub/a.py", false));
        assert!(admits(&o, "pkg/sub", true));
        assert!(!admits(&o, "pkg/sub/a.pyc", false));
    }

    #[test]
    fn bad_entries_are_refused_with_a_reason() {
        assert!(Only::check("../x").is_err());
        assert!(Only::check("/").is_err());
        assert!(Only::check("src/[a").is_err());
        assert!(Only::check("/src/").is_ok());
    }

    fn excludes(patterns: &[&str], at: &str) -> Excludes {
        let filter = Filter {
            excludes: patterns.iter().map(|s| s.to_string()).collect(),
            at: at.into(),
            only: vec![],
            no_dockerignore: false,
        };
        let (e, bad) = Excludes::compile(Path::new("/svc"), &filter);
        assert!(bad.is_empty());
        e
    }

    #[test]
    fn a_services_patterns_mean_the_same_in_a_mapping_of_a_subfolder() {
        // Everything at the service's top level but web/: nothing inside web/.
        let e = excludes(&["/*", "!/web/"], "web");
        assert!(!e.excludes(&RelPath::new("index.js").unwrap(), false));
        assert!(!e.excludes(&RelPath::new("lib").unwrap(), true));
        // Anchored at the service dir, not at the mapping's folder.
        let e = excludes(&["/lib/", "*.tmp"], "web");
        assert!(!e.excludes(&RelPath::new("lib").unwrap(), true));
        assert!(e.excludes(&RelPath::new("a.tmp").unwrap(), false));
        let e = excludes(&["/web/lib/"], "web");
        assert!(e.excludes(&RelPath::new("lib").unwrap(), true));
    }

    #[test]
    fn a_mapping_of_an_excluded_folder_gets_nothing() {
        let e = excludes(&["/gen/"], "gen/out");
        assert!(e.excludes(&RelPath::new("x").unwrap(), false));
        let e = excludes(&["/gen/"], "other");
        assert!(!e.excludes(&RelPath::new("x").unwrap(), false));
    }
}
