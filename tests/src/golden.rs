//! Reviewed output: snapshots under `tests/snapshots/`, and Kubernetes
//! objects checked by kubernetes-validate.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Kubernetes version rendered objects are validated against (what
/// `lks cluster create` pins by default).
pub const K8S_VERSION: &str = "1.34.0";

/// Validates Kubernetes objects (YAML, several documents allowed) against
/// the API schemas of `version` with `kubernetes-validate --strict` (PyPI;
/// tests/run.sh installs it). Err carries its complaints.
pub fn kubernetes_validate(yaml: &str, version: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, yaml).map_err(|e| e.to_string())?;
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--no-warn", "-k", version])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run kubernetes-validate ({e}): install it with `pip install kubernetes-validate` \
                 (tests/run.sh does)"
            )
        });
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `tests/snapshots/REL_PATH`.
pub fn snapshot_file(rel_path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(rel_path)
}

/// Panics, with a line diff, unless `actual` equals the reviewed snapshot
/// `tests/snapshots/REL_PATH`; with `LKS_UPDATE_SNAPSHOTS=1` writes `actual`
/// there instead (review the change with `git diff`).
pub fn assert_snapshot(rel_path: &str, actual: &str) {
    if let Err(e) = check_snapshot(rel_path, actual) {
        panic!("{e}");
    }
}

/// [`assert_snapshot`] that returns what it would panic with, so that a test
/// can report every snapshot that differs at once.
pub fn check_snapshot(rel_path: &str, actual: &str) -> Result<(), String> {
    let path = snapshot_file(rel_path);
    let expected = match std::fs::read_to_string(&path) {
        Ok(expected) => Some(expected),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("cannot read the snapshot {}: {e}", path.display()),
    };
    if expected.as_deref() == Some(actual) {
        return Ok(());
    }
    if std::env::var("LKS_UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        eprintln!("wrote the snapshot {}", path.display());
        return Ok(());
    }
    Err(match expected {
        None => format!(
            "no snapshot {}; review this output and write it with LKS_UPDATE_SNAPSHOTS=1:\n{actual}",
            path.display()
        ),
        Some(expected) => format!(
            "the output differs from the snapshot {} (- snapshot, + now; \
             LKS_UPDATE_SNAPSHOTS=1 rewrites it if the change is intended):\n{}",
            path.display(),
            line_diff(&expected, actual)
        ),
    })
}

/// A line diff (longest common subsequence): `-` for lines only in `a`, `+`
/// for lines only in `b`, changed lines with 2 lines of context.
fn line_diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = vec![];
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near = |k: usize| {
        ops[k.saturating_sub(2)..(k + 3).min(ops.len())]
            .iter()
            .any(|(c, _)| *c != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (c, line)) in ops.iter().enumerate() {
        if near(k) {
            if skipped {
                out.push_str("  ...\n");
                skipped = false;
            }
            out.push_str(&format!("{c} {line}\n"));
        } else {
            skipped = true;
        }
    }
    out
}
