//! The local tree's hashes, kept on disk between runs: a new `lks sync` or
//! `lks up` reads only the files that changed since, not every file whose
//! mtime differs from the agent's (an image's `node_modules` beside the
//! developer's: 100,000 files read again at each start).
//!
//! One file per local directory, named after it, holding for each file
//! whose hash is known its path and the version it was computed for (size,
//! mtime, inode, ctime, device). A hash is used only for the very version
//! it was computed for, so a stale or foreign record is never trusted. The
//! file is written whole to a temporary name and renamed over the old one;
//! one that cannot be read (cut short, another version) is ignored with a
//! warning, never an error.

use crate::tree::{Ident, Kind, Local, LocalNodes};
use lks_proto::RelPath;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The first bytes of a hash cache file (and its format's version).
const MAGIC: &[u8; 8] = b"lkshash1";

/// A file's hash for one version of it, as read back from disk.
#[derive(Debug)]
pub struct Record {
    /// Its path in the local tree.
    pub path: RelPath,
    /// The version (size, mtime, identity) the hash holds for.
    pub size: u64,
    /// Its mtime then.
    pub mtime_ns: i64,
    /// Its identity then.
    pub ident: Ident,
    /// blake3 of its content.
    pub hash: [u8; 32],
}

/// Where the hashes of the local directory `local` are kept under `dir`.
pub fn file_for(dir: &Path, local: &Path) -> PathBuf {
    let key = blake3::hash(local.as_os_str().as_encoded_bytes());
    dir.join(&key.to_hex()[..32])
}

/// Reads the records of `file`, sorted by path; none when there is no such
/// file; why it cannot be read otherwise.
pub fn load(file: &Path) -> Result<Vec<Record>, String> {
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(format!(
                "cannot read the hash cache {}: {e}",
                file.display()
            ));
        }
    };
    let bad = |why: &str| format!("ignoring the hash cache {}: {why}", file.display());
    let mut r = BufReader::new(f);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|_| bad("it is empty or cut short"))?;
    if &magic != MAGIC {
        return Err(bad("it is not one (or of another version)"));
    }
    let mut out: Vec<Record> = Vec::new();
    loop {
        let mut len = [0u8; 2];
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(bad(&e.to_string())),
        }
        let mut path = vec![0u8; u16::from_le_bytes(len) as usize];
        let mut fixed = [0u8; 8 + 8 + 8 + 8 + 4 + 32];
        r.read_exact(&mut path)
            .and_then(|()| r.read_exact(&mut fixed))
            .map_err(|_| bad("it is cut short"))?;
        let path = String::from_utf8(path)
            .ok()
            .and_then(|p| RelPath::new(p).ok())
            .ok_or_else(|| bad("it holds a path that is not one"))?;
        let u64_at = |i: usize| u64::from_le_bytes(fixed[i..i + 8].try_into().expect("8 bytes"));
        let record = Record {
            path,
            size: u64_at(0),
            mtime_ns: u64_at(8) as i64,
            ident: Ident::from_parts(
                u64_at(16),
                u64_at(24) as i64,
                u32::from_le_bytes(fixed[32..36].try_into().expect("4 bytes")),
            ),
            hash: fixed[36..68].try_into().expect("32 bytes"),
        };
        if out.last().is_some_and(|last| last.path >= record.path) {
            return Err(bad("its paths are out of order"));
        }
        out.push(record);
    }
    Ok(out)
}

/// Writes the hashes `nodes` knows to `file` (its directory made if
/// missing), replacing it whole; how many.
pub fn save(file: &Path, nodes: &LocalNodes) -> std::io::Result<usize> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("tmp");
    let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
    w.write_all(MAGIC)?;
    let mut n = 0;
    for (path, local) in nodes {
        let Some(hash) = local
            .hash
            .filter(|_| local.kind == Kind::File && local.ident.is_known())
        else {
            continue;
        };
        let (ino, ctime_ns, dev) = local.ident.parts();
        w.write_all(&(path.as_str().len() as u16).to_le_bytes())?;
        w.write_all(path.as_str().as_bytes())?;
        w.write_all(&local.size.to_le_bytes())?;
        w.write_all(&local.mtime_ns.to_le_bytes())?;
        w.write_all(&ino.to_le_bytes())?;
        w.write_all(&ctime_ns.to_le_bytes())?;
        w.write_all(&dev.to_le_bytes())?;
        w.write_all(&hash)?;
        n += 1;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, file)?;
    Ok(n)
}

/// Gives each file of `nodes` the hash a record keeps for its very version;
/// how many it got.
pub fn seed(nodes: &mut LocalNodes, records: &[Record]) -> usize {
    let mut records = records.iter().peekable();
    let mut seeded = 0;
    for (path, local) in nodes.iter_mut() {
        while records.next_if(|r| r.path < *path).is_some() {}
        if let Some(r) = records.peek()
            && r.path == *path
            && local.hash.is_none()
            && holds_for(r, local)
        {
            local.hash = Some(r.hash);
            seeded += 1;
        }
    }
    seeded
}

/// Whether the record was made for the version of the file `local` is.
fn holds_for(r: &Record, local: &Local) -> bool {
    local.kind == Kind::File
        && local.ident.is_known()
        && r.ident == local.ident
        && r.size == local.size
        && r.mtime_ns == local.mtime_ns
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ignores::Ignores;
    use crate::tree::LocalTree;

    fn rp(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn hashes_saved_are_read_back_for_the_same_versions_only() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/kept"), "kept").unwrap();
        std::fs::write(src.join("edited"), "one").unwrap();
        std::fs::write(src.join("unhashed"), "never hashed").unwrap();
        let ignores = Ignores::load(&src, &[]);
        let mut tree = LocalTree::new(&src);
        tree.rescan(&ignores);
        tree.hash(&rp("d/kept")).unwrap();
        tree.hash(&rp("edited")).unwrap();
        let file = file_for(&tmp.path().join("cache"), &src);
        assert_eq!(save(&file, &tree.nodes).unwrap(), 2);

        std::fs::write(src.join("edited"), "two").unwrap();
        let mut next = LocalTree::new(&src);
        next.rescan(&ignores);
        let records = load(&file).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(seed(&mut next.nodes, &records), 1);
        assert_eq!(
            next.nodes[&rp("d/kept")].hash,
            Some(*blake3::hash(b"kept").as_bytes())
        );
        assert_eq!(next.nodes[&rp("edited")].hash, None);
        assert_eq!(next.nodes[&rp("unhashed")].hash, None);
    }

    #[test]
    fn a_cache_cut_short_or_foreign_is_ignored_with_a_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("cache");
        assert!(load(&file).unwrap().is_empty(), "no file: no records");
        std::fs::write(&file, b"lkshash1\x05\x00ab").unwrap();
        assert!(load(&file).unwrap_err().contains("cut short"));
        std::fs::write(&file, b"something else entirely").unwrap();
        assert!(load(&file).unwrap_err().contains("not one"));
    }
}
