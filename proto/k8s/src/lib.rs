//! lks's Kubernetes vocabulary, with no I/O (in the spirit of kube-core):
//! what the host agent, the admission webhook in `lks-agent` and `lks render`
//! must agree on about objects, as JSON values.
//!
//! - [`inject`]: the agent put into a pod template (the init container that
//!   installs it, the supervisor wrapping the app's command), lks's
//!   annotations.
//! - [`labels`]: the labels on what lks applies, its field manager, and a
//!   workload's pod selector.
//! - [`rollout`]: where a workload's rollout stands, from its status.
//! - [`workload`]: the workload kinds and where their pod template is.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod inject;
pub mod labels;
pub mod rollout;
pub mod workload;
