//! Checks and conversions of single values: names, ports, durations, paths,
//! globs. Pure functions: the callers attach positions to their errors.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Why `name` is not a valid service or alias name, if it is not: a DNS label
/// (what Kubernetes accepts as a name): lowercase letters, digits and `-`,
/// starting and ending with a letter or digit, at most 63 characters.
pub(super) fn name_problem(name: &str) -> Option<String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if name.is_empty() {
        Some("a name must not be empty".into())
    } else if name.len() > 63 {
        Some(format!("\"{name}\" is longer than 63 characters"))
    } else if !name.chars().all(|c| ok_char(c) || c == '-') {
        Some(format!(
            "\"{name}\" is not a valid name (use lowercase letters, digits and '-')"
        ))
    } else if !name.starts_with(ok_char) || !name.ends_with(ok_char) {
        Some(format!(
            "\"{name}\" is not a valid name (it must start and end with a letter or digit)"
        ))
    } else {
        None
    }
}

/// A port number 1..=65535.
pub(super) fn port(s: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => Err(format!("port {p} is out of range (1 to 65535)")),
        Err(_) => Err(format!("\"{s}\" is not a port number")),
    }
}

/// A duration written as a number and a unit (`ms`, `s`, `m`, `h`), or several
/// such terms (`1m30s`); `500ms`, `30s`. Zero is refused.
pub(super) fn duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("\"{s}\" is not a duration (write e.g. \"500ms\", \"30s\", \"2m\")");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let term = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "" => {
                return Err(format!(
                    "\"{s}\" has no unit (write e.g. \"{n}s\" or \"{n}ms\")"
                ));
            }
            _ => return Err(bad()),
        };
        total = total.saturating_add(term);
        rest = rest[unit_len..].trim_start();
    }
    if total.is_zero() {
        return Err(format!("\"{s}\" must be longer than zero"));
    }
    Ok(total)
}

/// `path` with `.` removed and `..` applied lexically (no file-system access).
pub(super) fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The `/`-separated components of `p` after lexical cleaning, or None if a
/// `..` climbs above the start.
fn components(p: &str) -> Option<Vec<&str>> {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// The live-update root: an absolute `/`-separated path, cleaned, no
/// trailing `/` (except for `/` itself).
pub(super) fn remote_root(root: &str) -> Result<String, String> {
    if !root.starts_with('/') {
        return Err(format!("\"{root}\" is not an absolute path"));
    }
    if root.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let parts = components(root).ok_or_else(|| format!("\"{root}\" climbs above /"))?;
    Ok(format!("/{}", parts.join("/")))
}

/// A sync remote made relative to `root` (`""` for the root itself), or None
/// when it is outside. Relative remotes are relative to the root; absolute
/// ones must be beneath it.
pub(super) fn remote_beneath(remote: &str, root: &str) -> Option<String> {
    let parts = if let Some(abs) = remote.strip_prefix('/') {
        let parts = components(abs)?;
        let root_parts = components(root.trim_start_matches('/'))?;
        if !parts.starts_with(&root_parts) {
            return None;
        }
        parts[root_parts.len()..].to_vec()
    } else {
        components(remote)?
    };
    Some(parts.join("/"))
}

/// A glob matched against relative paths: `/` matched only by `/`, `**` for
/// any number of directories. A leading `/`, `./` or `../` could never match.
pub(super) fn glob(pattern: &str) -> Result<Glob, String> {
    if pattern.starts_with('/') || pattern.starts_with("./") || pattern.starts_with("../") {
        return Err(
            "globs are relative paths: write it without a leading '/', './' or '../'".into(),
        );
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| e.kind().to_string())
}

/// A set of globs already checked with [`glob`].
pub(super) fn glob_set(globs: &[Glob]) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(g.clone());
    }
    b.build().unwrap_or_else(|_| GlobSet::empty())
}

/// Whether `pattern` has glob syntax (else it is a plain path).
pub(super) fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '{'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(name_problem("web-2"), None);
        assert_eq!(name_problem("0"), None);
        assert!(name_problem("Web").unwrap().contains("lowercase"));
        assert!(name_problem("web-").unwrap().contains("start and end"));
        assert!(name_problem("-web").is_some());
        assert!(name_problem("").is_some());
        assert!(name_problem(&"a".repeat(64)).unwrap().contains("63"));
    }

    #[test]
    fn ports_are_1_to_65535() {
        assert_eq!(port("8080"), Ok(8080));
        assert_eq!(port("0"), Err("port 0 is out of range (1 to 65535)".into()));
        assert_eq!(
            port("65536"),
            Err("port 65536 is out of range (1 to 65535)".into())
        );
        assert_eq!(port("http"), Err("\"http\" is not a port number".into()));
    }

    #[test]
    fn durations_need_a_unit_and_add_up() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(
            duration("5"),
            Err("\"5\" has no unit (write e.g. \"5s\" or \"5ms\")".into())
        );
        assert!(duration("5 years").is_err());
        assert!(duration("0s").unwrap_err().contains("zero"));
        assert!(duration("").is_err());
        assert!(duration("s").is_err());
    }

    #[test]
    fn remotes_are_made_relative_to_the_root() {
        assert_eq!(remote_root("/app/").as_deref(), Ok("/app"));
        assert_eq!(remote_root("/").as_deref(), Ok("/"));
        assert!(remote_root("app").is_err());
        assert_eq!(remote_beneath(".", "/app").as_deref(), Some(""));
        assert_eq!(remote_beneath("./src/", "/app").as_deref(), Some("src"));
        assert_eq!(remote_beneath("/app/src", "/app").as_deref(), Some("src"));
        assert_eq!(remote_beneath("/app", "/app").as_deref(), Some(""));
        assert_eq!(remote_beneath("/etc", "/app"), None);
        assert_eq!(remote_beneath("/application", "/app"), None);
        assert_eq!(remote_beneath("/app/../etc", "/app"), None);
        assert_eq!(remote_beneath("../x", "/app"), None);
        assert_eq!(remote_beneath("a/../b", "/app").as_deref(), Some("b"));
        assert_eq!(remote_beneath("/srv/x", "/").as_deref(), Some("srv/x"));
    }

    #[test]
    fn globs_keep_separators_literal() {
        let g = glob("*.go").unwrap().compile_matcher();
        assert!(g.is_match("main.go"));
        assert!(!g.is_match("cmd/main.go"));
        let g = glob("**/*.go").unwrap().compile_matcher();
        assert!(g.is_match("main.go") && g.is_match("cmd/x/main.go"));
        assert!(glob("[a-").is_err());
        assert!(glob("./go.mod").is_err());
    }

    #[test]
    fn clean_applies_dots_lexically() {
        assert_eq!(clean(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(clean(Path::new("a/../../b")), PathBuf::from("../b"));
    }
}
