//! Kubernetes: the local kind cluster (`cluster`), the admission webhook's
//! objects (`webhook_install`), rendering a service's manifests with its
//! image and the agent injected (`render`), and the `kube` runtime.

pub mod apply;
pub mod cluster;
pub mod portforward;
pub mod render;
pub mod webhook_install;

#[cfg(test)]
mod tests;
