//! Image references (`[HOST[:PORT]/]PATH[:TAG][@DIGEST]`), split in one
//! place: a `:` is a tag only after the last `/` (before it, it is a
//! registry's port).

/// The parts of an image reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference<'a> {
    /// Everything before the tag and digest (registry and path).
    pub repository: &'a str,
    /// The tag, if there is one.
    pub tag: Option<&'a str>,
    /// The digest (`sha256:...`), if there is one.
    pub digest: Option<&'a str>,
}

impl<'a> Reference<'a> {
    /// Splits `reference`.
    pub fn parse(reference: &'a str) -> Reference<'a> {
        let (named, digest) = match reference.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (reference, None),
        };
        let last_slash = named.rfind('/').map_or(0, |i| i + 1);
        match named[last_slash..].rfind(':') {
            Some(i) => Reference {
                repository: &named[..last_slash + i],
                tag: Some(&named[last_slash + i + 1..]),
                digest,
            },
            None => Reference {
                repository: named,
                tag: None,
                digest,
            },
        }
    }

    /// The tag, `latest` when none is given (as Docker defaults it).
    pub fn tag_or_latest(&self) -> &'a str {
        self.tag.unwrap_or("latest")
    }

    /// The reference without its digest.
    pub fn without_digest(&self) -> String {
        match self.tag {
            Some(t) => format!("{}:{t}", self.repository),
            None => self.repository.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Reference;

    #[test]
    fn a_port_is_not_a_tag_and_digests_come_off() {
        let r = Reference::parse("localhost:5000/registry");
        assert_eq!((r.repository, r.tag), ("localhost:5000/registry", None));
        assert_eq!(r.tag_or_latest(), "latest");
        let r = Reference::parse("localhost:5000/lks/web:dev-1a2b");
        assert_eq!(
            (r.repository, r.tag),
            ("localhost:5000/lks/web", Some("dev-1a2b"))
        );
        let r = Reference::parse("kindest/node:v1.34.0@sha256:abc");
        assert_eq!(r.repository, "kindest/node");
        assert_eq!(r.digest, Some("sha256:abc"));
        assert_eq!(r.without_digest(), "kindest/node:v1.34.0");
        assert_eq!(Reference::parse("busybox").without_digest(), "busybox");
        let r = Reference::parse("registry:2");
        assert_eq!((r.repository, r.tag), ("registry", Some("2")));
    }
}
