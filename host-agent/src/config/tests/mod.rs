//! Loading whole workspaces from real files: every kind of mistake with its
//! full message (file:line:col), the happy path, and the launch order.

mod errors;
mod host;
mod live_update;
mod resolve;
mod workspace;

use super::{ConfigErrors, Workspace};
use std::path::{Path, PathBuf};

/// A workspace in a temporary directory.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

/// The lines of a YAML file (line N of the file is `lines[N - 1]`).
fn yaml(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        Fixture { _tmp: tmp, root }
    }

    /// Writes `rel` with `lines`, creating its directories.
    fn file(&self, rel: &str, lines: &[&str]) -> &Fixture {
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, yaml(lines)).unwrap();
        self
    }

    /// Creates the directory `rel`.
    fn dir(&self, rel: &str) -> &Fixture {
        std::fs::create_dir_all(self.root.join(rel)).unwrap();
        self
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Loads `lks.yaml`, paths shown relative to the workspace directory.
    fn load(&self) -> Result<Workspace, ConfigErrors> {
        super::workspace::load(Path::new("lks.yaml"), &self.root)
    }

    fn ok(&self) -> Workspace {
        self.load()
            .unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
    }

    /// The error messages, one per error.
    fn errors(&self) -> Vec<String> {
        match self.load() {
            Ok(_) => panic!("the configuration loaded without errors"),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }
}
