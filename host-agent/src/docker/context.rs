//! A build context as `docker build` would send it: the context directory
//! minus what its `.dockerignore` excludes (the Dockerfile and the
//! `.dockerignore` itself always go), as a tar, plus a digest of everything
//! that decides the image (paths, modes, contents, link targets, the
//! Dockerfile's path, build args, target). Equal digests mean the same image,
//! so a digest tag that already exists needs no build.

use crate::config::Build;
use crate::ignores::ContextRules;
use lks_proto::RelPath;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A packed build context.
pub struct BuildContext {
    /// The tar the engine receives.
    pub tar: Vec<u8>,
    /// blake3 of what decides the image, hex.
    pub digest: String,
    /// The Dockerfile's path inside the tar.
    pub dockerfile: String,
    /// Regular files in it.
    pub files: usize,
    /// Warnings (bad `.dockerignore` patterns, skipped special files).
    pub warnings: Vec<String>,
}

/// Where a Dockerfile outside the context goes inside the tar (as the
/// Docker CLI does with its own random name).
const OUTSIDE_DOCKERFILE: &str = ".lks-dockerfile";

/// Why a build context could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The context is not a directory.
    #[error("the build context {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The Dockerfile is missing.
    #[error("there is no Dockerfile at {} (set build.dockerfile in the service's config)", .0.display())]
    NoDockerfile(PathBuf),
    /// A file or directory of the context could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// What.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The tar could not be written.
    #[error("packing the build context: {0}")]
    Tar(#[from] std::io::Error),
}

fn reading(path: &Path) -> impl FnOnce(std::io::Error) -> ContextError + '_ {
    move |source| ContextError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// Packs `build.context` (blocking; call from a blocking thread).
pub fn pack(build: &Build) -> Result<BuildContext, ContextError> {
    let dir = &build.context;
    if !dir.is_dir() {
        return Err(ContextError::NotADirectory(dir.clone()));
    }
    if !build.dockerfile.is_file() {
        return Err(ContextError::NoDockerfile(build.dockerfile.clone()));
    }
    let (rules, bad) = ContextRules::load(dir);
    let mut out = BuildContext {
        tar: Vec::new(),
        digest: String::new(),
        dockerfile: String::new(),
        files: 0,
        warnings: bad.iter().map(|w| w.to_string()).collect(),
    };
    let dockerfile_inside = build
        .dockerfile
        .strip_prefix(dir)
        .ok()
        .and_then(|p| p.to_str())
        .map(str::to_string);
    let mut hasher = blake3::Hasher::new();
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    let always: Vec<&str> = [
        Some(crate::ignores::DOCKERIGNORE),
        dockerfile_inside.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    // What lks itself reads (the service's manifests and file) is not the
    // image's: an edit of a manifest re-applies without a rebuild.
    let skip: Vec<String> = build
        .exclude
        .iter()
        .filter_map(|p| p.strip_prefix(dir).ok()?.to_str().map(str::to_string))
        .filter(|p| !always.contains(&p.as_str()))
        .collect();
    let filter = Filter {
        rules: &rules,
        always: &always,
        skip: &skip,
    };
    walk(dir, None, &filter, &mut tar, &mut hasher, &mut out)?;
    out.dockerfile = match dockerfile_inside {
        Some(p) => p,
        None => {
            let text = std::fs::read(&build.dockerfile).map_err(reading(&build.dockerfile))?;
            append_bytes(&mut tar, OUTSIDE_DOCKERFILE, 0o644, &text)?;
            hasher.update(&text);
            OUTSIDE_DOCKERFILE.to_string()
        }
    };
    hasher.update(b"\0dockerfile\0");
    hasher.update(out.dockerfile.as_bytes());
    for (k, v) in &build.args {
        hasher.update(format!("\0arg\0{k}={v}").as_bytes());
    }
    if let Some(t) = &build.target {
        hasher.update(format!("\0target\0{t}").as_bytes());
    }
    out.tar = tar.into_inner()?;
    out.digest = hasher.finalize().to_hex().to_string();
    Ok(out)
}

/// Which entries of the context go.
struct Filter<'a> {
    /// `.dockerignore`.
    rules: &'a ContextRules,
    /// Paths that go whatever it says (the Dockerfile, `.dockerignore`).
    always: &'a [&'a str],
    /// Files that never go (what lks reads itself).
    skip: &'a [String],
}

fn walk(
    root: &Path,
    rel: Option<&RelPath>,
    filter: &Filter,
    tar: &mut tar::Builder<Vec<u8>>,
    hasher: &mut blake3::Hasher,
    out: &mut BuildContext,
) -> Result<(), ContextError> {
    let dir = match rel {
        Some(r) => root.join(r.as_str()),
        None => root.to_path_buf(),
    };
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(reading(&dir))?
        .collect::<Result<_, _>>()
        .map_err(reading(&dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            out.warnings
                .push(format!("skipped {:?}: not UTF-8", entry.path()));
            continue;
        };
        let path = match rel {
            Some(r) => r.join(name),
            None => RelPath::new(name),
        };
        let Ok(path) = path else {
            out.warnings.push(format!("skipped {:?}", entry.path()));
            continue;
        };
        let meta = entry.metadata().map_err(reading(&entry.path()))?;
        let (rules, always) = (filter.rules, filter.always);
        let excluded = (rules.excludes(&path) && !always.contains(&path.as_str()))
            || (!meta.is_dir() && filter.skip.iter().any(|s| s == path.as_str()));
        let ft = meta.file_type();
        if ft.is_dir() {
            if excluded && !rules.may_reinclude_beneath() {
                continue;
            }
            if !excluded {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                set_common(&mut h, &meta);
                h.set_size(0);
                tar.append_data(&mut h, path.as_str(), std::io::empty())?;
                hasher.update(format!("\0dir\0{}\0{:o}", path.as_str(), mode(&meta)).as_bytes());
            }
            walk(root, Some(&path), filter, tar, hasher, out)?;
            continue;
        }
        if excluded {
            continue;
        }
        if ft.is_file() {
            let data = std::fs::read(entry.path()).map_err(reading(&entry.path()))?;
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            set_common(&mut h, &meta);
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, path.as_str(), data.as_slice())?;
            hasher.update(format!("\0file\0{}\0{:o}\0", path.as_str(), mode(&meta)).as_bytes());
            hasher.update(blake3::hash(&data).as_bytes());
            out.files += 1;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(reading(&entry.path()))?;
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            set_common(&mut h, &meta);
            h.set_size(0);
            tar.append_link(&mut h, path.as_str(), &target)?;
            hasher.update(format!("\0link\0{}\0{}", path.as_str(), target.display()).as_bytes());
        } else {
            out.warnings.push(format!(
                "skipped {}: not a file, directory or symlink",
                entry.path().display()
            ));
        }
    }
    Ok(())
}

fn mode(meta: &std::fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

/// Mode and mtime as on disk (so files in the image keep the host's mtimes
/// and the first sync's quick check matches them); owner root.
fn set_common(h: &mut tar::Header, meta: &std::fs::Metadata) {
    use std::os::unix::fs::MetadataExt;
    h.set_mode(mode(meta));
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_uid(0);
    h.set_gid(0);
}

fn append_bytes(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    tar.append_data(&mut h, path, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn build(dir: &Path) -> Build {
        Build {
            context: dir.to_path_buf(),
            dockerfile: dir.join("Dockerfile"),
            args: BTreeMap::new(),
            target: None,
            local: vec![],
            exclude: vec![],
        }
    }

    fn names(ctx: &BuildContext) -> Vec<String> {
        let mut a = tar::Archive::new(ctx.tar.as_slice());
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn dockerignore_is_honoured_but_dockerfile_and_dockerignore_always_go() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::write(d.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(
            d.join(".dockerignore"),
            "node_modules\n*.log\nDockerfile\n.dockerignore\n",
        )
        .unwrap();
        std::fs::create_dir_all(d.join("node_modules/x")).unwrap();
        std::fs::write(d.join("node_modules/x/i.js"), "x").unwrap();
        std::fs::write(d.join("a.log"), "log").unwrap();
        std::fs::write(d.join("server.js"), "js").unwrap();
        let ctx = pack(&build(d)).unwrap();
        assert_eq!(names(&ctx), [".dockerignore", "Dockerfile", "server.js"]);
        assert_eq!(ctx.dockerfile, "Dockerfile");
    }

    #[test]
    fn the_digest_follows_content_mode_and_args_but_not_mtime() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::write(d.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(d.join("f"), "one").unwrap();
        let first = pack(&build(d)).unwrap().digest;
        let f = std::fs::File::options()
            .write(true)
            .open(d.join("f"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(pack(&build(d)).unwrap().digest, first, "mtime only");
        std::fs::write(d.join("f"), "two").unwrap();
        let second = pack(&build(d)).unwrap().digest;
        assert_ne!(second, first, "content");
        std::fs::set_permissions(d.join("f"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let third = pack(&build(d)).unwrap().digest;
        assert_ne!(third, second, "mode");
        let mut b = build(d);
        b.args.insert("BASE".into(), "x".into());
        assert_ne!(pack(&b).unwrap().digest, third, "build arg");
    }

    #[test]
    fn a_missing_dockerfile_is_a_clear_error() {
        let t = tempfile::tempdir().unwrap();
        let e = pack(&build(t.path())).err().unwrap().to_string();
        assert!(e.contains("no Dockerfile at"), "{e}");
    }
}
