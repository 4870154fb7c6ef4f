//! [`RelPath`]: a path that can only name something beneath a root.

use crate::limits::{MAX_COMPONENT_BYTES, MAX_PATH_BYTES};
use std::fmt;

/// Why a string is not a valid [`RelPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty.
    #[error("empty path")]
    Empty,
    /// The path starts with `/`.
    #[error("absolute path {0:?}: paths must be relative to the root")]
    Absolute(String),
    /// A component is `..`.
    #[error("path {0:?} contains `..`")]
    ParentComponent(String),
    /// A component is `.` or empty (`a//b`, trailing `/`).
    #[error("path {0:?} has an empty or `.` component")]
    EmptyComponent(String),
    /// The path contains a NUL byte.
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
    /// The path is longer than [`MAX_PATH_BYTES`].
    #[error("path of {0} bytes is longer than the limit of {MAX_PATH_BYTES}")]
    TooLong(usize),
    /// A component is longer than [`MAX_COMPONENT_BYTES`].
    #[error("a component of {0:?} is longer than {MAX_COMPONENT_BYTES} bytes")]
    ComponentTooLong(String),
    /// The last component is reserved for the agent's staging files.
    #[error("path {0:?} uses the reserved staging prefix {prefix}", prefix = crate::STAGING_PREFIX)]
    Reserved(String),
}

/// A validated relative path: `/`-separated, non-empty components, none of them
/// `.` or `..`, no NUL, within the length limits. Joining it to a root can only
/// name something beneath that root (symlinks aside, which the agent refuses to
/// traverse).
///
/// Its text is shared: a clone is a reference count, so the trees that hold
/// the same paths (what the host has, what the agent confirmed) keep one copy.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(std::sync::Arc<str>);

impl RelPath {
    /// Validates `s`.
    pub fn new(s: impl Into<String>) -> Result<Self, PathError> {
        let s = s.into();
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(s.len()));
        }
        if s.contains('\0') {
            return Err(PathError::Nul(s));
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute(s));
        }
        for c in s.split('/') {
            match c {
                "" | "." => return Err(PathError::EmptyComponent(s)),
                ".." => return Err(PathError::ParentComponent(s)),
                c if c.len() > MAX_COMPONENT_BYTES => return Err(PathError::ComponentTooLong(s)),
                _ => {}
            }
        }
        if crate::is_staging_name(s.rsplit('/').next().unwrap_or_default()) {
            return Err(PathError::Reserved(s));
        }
        Ok(RelPath(s.into()))
    }

    /// The path as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, first to last.
    pub fn components(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.0.split('/')
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The parent, or `None` for a path directly beneath the root.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rsplit_once('/').map(|(p, _)| RelPath(p.into()))
    }

    /// `self/name`, validated.
    pub fn join(&self, name: &str) -> Result<RelPath, PathError> {
        let len = self.0.len() + 1 + name.len();
        // `self` is valid: only `name` needs looking at (a walk joins
        // every entry, and the whole path would be looked at again).
        let plain = !name.is_empty()
            && name != "."
            && name != ".."
            && name.len() <= MAX_COMPONENT_BYTES
            && len <= MAX_PATH_BYTES
            && !name.bytes().any(|b| b == b'/' || b == 0)
            && !crate::is_staging_name(name);
        if !plain {
            // The error says which rule, for the whole path.
            return RelPath::new(format!("{}/{}", self.0, name));
        }
        // Put together on the stack: the shared text is the one allocation.
        let mut buf = [0u8; 512];
        if len <= buf.len() {
            buf[..self.0.len()].copy_from_slice(self.0.as_bytes());
            buf[self.0.len()] = b'/';
            buf[self.0.len() + 1..len].copy_from_slice(name.as_bytes());
            let s = std::str::from_utf8(&buf[..len]).expect("two strs and a slash");
            return Ok(RelPath(s.into()));
        }
        Ok(RelPath(format!("{}/{}", self.0, name).into()))
    }

    /// Whether `self` is `other` or beneath it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&*other.0)
                && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// Number of components.
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Looked up by its text (hash, equality and order are the text's).
impl std::borrow::Borrow<str> for RelPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for RelPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Whether a symlink at `link` (relative to the root) with target `target`
/// resolves beneath the root. Absolute targets never do. `..` may appear only as
/// leading components, and climb no higher than the root: the kernel resolves a
/// `..` that follows a symlink from that symlink's target, so `up/..` with
/// `up -> .` would leave the root although it looks contained. The link's own
/// directory is a real one (the agent never creates anything through a
/// symlink), so leading `..` climbs through real parents only. A target such
/// as `sub/../file` is refused; `file` says the same.
pub fn link_stays_inside(link: &RelPath, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return false;
    }
    let mut climbs = 0usize;
    let mut descended = false;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." if descended => return false,
            ".." => climbs += 1,
            _ => descended = true,
        }
    }
    climbs < link.depth()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_paths_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a/..",
            "a//b",
            "a/./b",
            "./a",
            "a/",
            "a\0b",
            ".lks-stage.x",
            "d/.lks-stage.y",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(RelPath::new("a".repeat(256)).is_err());
        assert!(RelPath::new(format!("{}/x", "a/".repeat(2100))).is_err());
    }

    #[test]
    fn ordinary_paths_are_accepted() {
        for ok in [
            "a",
            "a/b/c",
            "..a",
            "a..",
            ".hidden",
            "with space/x",
            "ünï/çødé",
        ] {
            assert_eq!(RelPath::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn links_may_not_climb_out_of_the_root() {
        let link = RelPath::new("a/b/link").unwrap();
        assert!(link_stays_inside(&link, "target"));
        assert!(link_stays_inside(&link, "../x"));
        assert!(link_stays_inside(&link, "../../x"));
        assert!(!link_stays_inside(&link, "../../../x"));
        assert!(!link_stays_inside(&link, "/etc/passwd"));
        assert!(!link_stays_inside(&link, "../../../a/b"));
        // `..` after a normal component could follow a symlink out of the root.
        assert!(!link_stays_inside(&link, "up/.."));
        assert!(!link_stays_inside(&link, "sub/../file"));
        assert!(link_stays_inside(&link, "./../x/./y"));
        assert!(!link_stays_inside(&RelPath::new("top").unwrap(), ".."));
        assert!(link_stays_inside(&RelPath::new("top").unwrap(), "."));
    }

    #[test]
    fn a_long_path_joins_as_a_short_one_does() {
        let deep = vec!["d".repeat(200); 10].join("/");
        let parent = RelPath::new(deep.clone()).unwrap();
        assert_eq!(parent.join("f").unwrap().as_str(), format!("{deep}/f"));
        let too_long = RelPath::new(vec!["d".repeat(200); 20].join("/")).unwrap();
        assert_eq!(
            too_long.join(&"f".repeat(100)),
            Err(PathError::TooLong(too_long.as_str().len() + 101))
        );
    }

    #[test]
    fn parent_and_starts_with() {
        let p = RelPath::new("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert!(p.starts_with(&RelPath::new("a/b").unwrap()));
        assert!(
            !RelPath::new("a/bc")
                .unwrap()
                .starts_with(&RelPath::new("a/b").unwrap())
        );
    }

    proptest! {
        #[test]
        fn a_valid_path_never_climbs(s in "[a-z./]{1,20}") {
            if let Ok(p) = RelPath::new(s) {
                prop_assert!(p.components().all(|c| c != ".." && c != "." && !c.is_empty()));
            }
        }

        /// Joining checks only the new name, and says what `new` says of
        /// the whole path.
        #[test]
        fn a_join_is_what_the_whole_path_would_be(base in "[a-z]{1,8}(/[a-z]{1,8}){0,3}", name in "[a-z./\\x00]{0,6}|\\.lks-stage\\.[a-z]{1,4}|[a-z]{250,260}") {
            let parent = RelPath::new(base.clone()).unwrap();
            prop_assert_eq!(parent.join(&name), RelPath::new(format!("{base}/{name}")));
        }
    }
}
