//! Paths in what the app prints, told as the developer's own files: a stack
//! trace names `/app/src/server.js:3` in a container and
//! `.lks/web/root/src/server.js:3` on the local runtime; shown, both read
//! `/home/dev/ws/web/src/server.js:3`, which an editor or terminal opens.
//! Only a path that starts where a path can (the line's start, a space, a
//! quote, a bracket, `=`) and continues past the synced directory is
//! rewritten; `http://host/app/x` stays as it is.

use crate::config::SyncMapping;
use std::path::Path;

/// From the agent's directories to the developer's, longest first.
#[derive(Debug, Clone, Default)]
pub struct SourcePaths {
    /// (a directory as the agent sees it, no trailing `/`; the local one).
    dirs: Vec<(String, String)>,
}

impl SourcePaths {
    /// A service's sync mappings, beneath the agent's root `agent_root` (as
    /// its Hello says it).
    pub fn new(sync: &[SyncMapping], agent_root: &str) -> SourcePaths {
        let root = agent_root.trim_end_matches('/');
        if !root.starts_with('/') {
            return SourcePaths::default();
        }
        let mut dirs: Vec<(String, String)> = sync
            .iter()
            .map(|m| {
                let remote = m.remote.trim_matches('/');
                let remote = if remote.is_empty() || remote == "." {
                    root.to_string()
                } else {
                    format!("{root}/{remote}")
                };
                (remote, display(&m.local))
            })
            .filter(|(remote, local)| remote != local && remote.len() > 1)
            .collect();
        dirs.sort_by_key(|(remote, _)| std::cmp::Reverse(remote.len()));
        SourcePaths { dirs }
    }

    /// `line` with every path beneath a synced directory of the agent told
    /// as the local file.
    pub fn rewrite(&self, line: String) -> String {
        if !self.dirs.iter().any(|(r, _)| line.contains(r.as_str())) {
            return line;
        }
        let mut out = String::with_capacity(line.len() + 32);
        let mut rest = line.as_str();
        let mut at_boundary = true;
        'scan: while !rest.is_empty() {
            if at_boundary && rest.starts_with('/') {
                for (remote, local) in &self.dirs {
                    if let Some(after) = rest.strip_prefix(remote.as_str())
                        && after.starts_with('/')
                    {
                        out.push_str(local);
                        rest = after;
                        at_boundary = false;
                        continue 'scan;
                    }
                }
            }
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
            at_boundary = c.is_whitespace() || "(\"'[<=,".contains(c);
        }
        out
    }
}

fn display(p: &Path) -> String {
    p.display().to_string().trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn paths(root: &str, sync: &[(&str, &str)]) -> SourcePaths {
        let sync: Vec<SyncMapping> = sync
            .iter()
            .map(|(local, remote)| SyncMapping {
                local: PathBuf::from(local),
                remote: remote.to_string(),
                only: vec![],
            })
            .collect();
        SourcePaths::new(&sync, root)
    }

    #[test]
    fn node_python_and_go_traces_name_the_developers_files() {
        let p = paths("/app", &[("/ws/web", "")]);
        assert_eq!(
            p.rewrite("    at Object.<anonymous> (/app/server.js:3:9)".into()),
            "    at Object.<anonymous> (/ws/web/server.js:3:9)"
        );
        assert_eq!(
            p.rewrite("  File \"/app/app.py\", line 3, in <module>".into()),
            "  File \"/ws/web/app.py\", line 3, in <module>"
        );
        assert_eq!(
            p.rewrite("\t/app/main.go:12 +0x1d".into()),
            "\t/ws/web/main.go:12 +0x1d"
        );
    }

    #[test]
    fn only_paths_are_rewritten_and_the_deepest_mapping_wins() {
        let p = paths(
            "/ws/.lks/web/root",
            &[("/ws/web", ""), ("/ws/shared/lib", "vendor/lib")],
        );
        assert_eq!(
            p.rewrite("at /ws/.lks/web/root/vendor/lib/a.js:1 and /ws/.lks/web/root/b.js:2".into()),
            "at /ws/shared/lib/a.js:1 and /ws/web/b.js:2"
        );
        let p = paths("/app", &[("/ws/web", "")]);
        for untouched in [
            "GET http://host/app/x 200",
            "/application/x.js",
            "/app",
            "no paths here",
        ] {
            assert_eq!(p.rewrite(untouched.into()), untouched);
        }
    }
}
