//! Shared harness for lks's end-to-end tests and benchmarks: it runs the real
//! `lks` and `lks-agent` binaries (built by `cargo build --workspace --bins`,
//! which the test command does first) and compares real directory trees.
//! The benchmarks' shared statistics and result table are in [`bench`].

pub mod bench;
pub mod kube;
pub mod raw;

mod agents;
mod browser;
mod docker;
mod golden;
mod net;
mod process;
mod trees;
mod up;

pub use agents::*;
pub use browser::*;
pub use docker::*;
pub use golden::*;
pub use net::*;
pub use process::*;
pub use trees::*;
pub use up::*;
