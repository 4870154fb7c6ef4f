//! The walk of the repository `lks init` looks at: the directories that may
//! hold a service (a file that says which language, or a Dockerfile) and the
//! YAML files that may be Kubernetes manifests.

use std::path::{Path, PathBuf};

/// The files whose presence makes a directory a candidate service.
pub(super) const MARKERS: &[&str] = &[
    "package.json",
    "requirements.txt",
    "pyproject.toml",
    "go.mod",
    "Dockerfile",
];

/// Directories never looked into: dependencies, build outputs, caches (hidden
/// ones, such as `.git` and lks's work dir `.lks`, are skipped too, and so is
/// what a Git repository's ignore files name).
const SKIPPED: &[&str] = &[
    "node_modules",
    "bower_components",
    "vendor",
    "target",
    "__pycache__",
    "venv",
];

/// A manifest larger than this is not read (generated bundles, CRDs).
const MAX_MANIFEST: u64 = 1 << 20;

/// What the walk found, each list in path order.
#[derive(Debug, Default)]
pub(super) struct Repo {
    /// Directories holding at least one of [`MARKERS`].
    pub dirs: Vec<PathBuf>,
    /// `.yaml` and `.yml` files of at most 1 MiB.
    pub yaml: Vec<PathBuf>,
}

/// Walks `root` (absolute).
pub(super) fn walk(root: &Path) -> Repo {
    let mut repo = Repo::default();
    let walker = ignore::WalkBuilder::new(root)
        .standard_filters(true)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(|e| {
            let is_dir = e.file_type().is_some_and(|t| t.is_dir());
            !(is_dir && e.depth() > 0 && e.file_name().to_str().is_some_and(skipped))
        })
        .build();
    for entry in walker.filter_map(Result::ok) {
        let Some(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            if MARKERS.iter().any(|m| path.join(m).is_file()) {
                repo.dirs.push(path.to_path_buf());
            }
        } else if kind.is_file()
            && path.extension().is_some_and(|e| e == "yaml" || e == "yml")
            && entry.metadata().is_ok_and(|m| m.len() <= MAX_MANIFEST)
        {
            repo.yaml.push(path.to_path_buf());
        }
    }
    repo
}

fn skipped(name: &str) -> bool {
    SKIPPED.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "").unwrap();
    }

    #[test]
    fn dependencies_hidden_directories_and_work_dirs_are_not_looked_into() {
        // tempfile names its directories `.tmpXXXX`: the root itself may be hidden.
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for f in [
            "package.json",
            "web/package.json",
            "web/node_modules/left-pad/package.json",
            "api/requirements.txt",
            "api/k8s/api.yaml",
            "api/k8s/notes.txt",
            ".lks/web/root/package.json",
            ".git/hooks/go.mod",
            "tools/vendor/x/go.mod",
            "worker/go.mod",
            "docs/README.md",
        ] {
            touch(root, f);
        }
        let repo = walk(root);
        let rel = |v: &[PathBuf]| -> Vec<String> {
            v.iter()
                .map(|p| p.strip_prefix(root).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(rel(&repo.dirs), ["", "api", "web", "worker"]);
        assert_eq!(rel(&repo.yaml), ["api/k8s/api.yaml"]);
    }
}
