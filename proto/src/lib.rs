//! The wire contract of lks (`lks.agent.v1`) and the small, I/O-free vocabulary that
//! the host agent (`lks`) and the in-container agent (`lks-agent`) share.
//!
//! Nothing here touches the file system or the network: the generated messages, a
//! validated relative path type ([`RelPath`]), the symlink containment rule
//! ([`link_stays_inside`]), the content-defined chunking both sides must agree on
//! ([`chunk`]) and the protocol limits ([`limits`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chunk;
pub mod launch;
pub mod limits;
mod relpath;

pub use relpath::{PathError, RelPath, link_stays_inside};

/// Generated messages and the tonic client and server of `lks.agent.v1`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("lks.agent.v1");
}

/// Request metadata on `Apply`: the boot id (from `Hello`) of the agent the
/// host planned the batch against. An agent with another boot id (it
/// restarted, and the tunnel reached the new one by itself) refuses the batch
/// with `ABORTED` before applying anything: the host's picture of its root is
/// stale, and it must fetch the manifest again.
pub const BOOT_ID_METADATA: &str = "lks-boot-id";

/// Version of the protocol spoken by this build; `Hello` refuses a different one.
pub const PROTOCOL_VERSION: u32 = 2;

/// Metadata key carrying the bearer token on every call.
pub const AUTHORIZATION: &str = "authorization";

/// Default address `lks-agent serve` listens on.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7690";
/// The port of [`DEFAULT_LISTEN`] (what a port-forward into a pod targets).
pub const DEFAULT_PORT: u16 = 7690;

/// Prefix of the staging files the agent creates beside a file's final path.
/// Paths whose last component starts with it are never synced or listed.
pub const STAGING_PREFIX: &str = ".lks-stage.";

/// Whether a file name is one of the agent's staging files.
pub fn is_staging_name(name: &str) -> bool {
    name.starts_with(STAGING_PREFIX)
}
