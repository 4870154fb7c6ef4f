//! Bearer-token authentication, checked before any work.

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// Where the agent's token came from, and the token itself.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

/// Why no usable token was found.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Neither `LKS_TOKEN` nor `--token-file` was given.
    #[error(
        "no token: set LKS_TOKEN or pass --token-file FILE (the host generates one for each `lks up`; \
         for `lks sync`, use the same value on both sides)"
    )]
    Missing,
    /// The token file could not be read.
    #[error("cannot read the token file {path}: {source}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The token is empty or whitespace.
    #[error("the token from {0} is empty")]
    Empty(String),
}

impl Token {
    /// Loads the token from `--token-file` if given, else from `LKS_TOKEN`.
    pub fn load(file: Option<&std::path::Path>) -> Result<Token, TokenError> {
        let (raw, from) = match file {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| TokenError::Unreadable {
                    path: p.display().to_string(),
                    source,
                })?,
                p.display().to_string(),
            ),
            None => (
                std::env::var(lks_proto::launch::TOKEN_ENV).map_err(|_| TokenError::Missing)?,
                lks_proto::launch::TOKEN_ENV.into(),
            ),
        };
        let token = raw.trim();
        if token.is_empty() {
            return Err(TokenError::Empty(from));
        }
        Ok(Token {
            digest: *blake3::hash(token.as_bytes()).as_bytes(),
        })
    }

    /// Refuses a request whose `authorization` is not `Bearer <token>`. Digests are
    /// compared in constant time, so neither the content nor the length leaks.
    #[allow(clippy::result_large_err)]
    pub fn check<T>(&self, req: Request<T>) -> Result<Request<T>, Status> {
        let Some(value) = req.metadata().get(lks_proto::AUTHORIZATION) else {
            return Err(Status::unauthenticated(
                "missing bearer token (authorization metadata)",
            ));
        };
        let presented = value.as_bytes().strip_prefix(b"Bearer ").unwrap_or(b"");
        let digest = blake3::hash(presented);
        if bool::from(digest.as_bytes().ct_eq(&self.digest)) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("wrong bearer token"))
        }
    }
}
