//! Kubernetes: which cluster and namespace (`target`), the local kind
//! cluster (`cluster`), the admission webhook's objects (`webhook_install`),
//! rendering a service's manifests with its image and the agent injected
//! (`render`), applying them (`apply`), a workload's pods followed as they
//! come and go (`pods`), and the tunnel into them (`portforward`).

pub mod apply;
pub mod cluster;
pub mod pods;
pub mod portforward;
pub mod render;
pub mod target;
pub mod webhook_install;

#[cfg(test)]
mod tests;

/// A kube error as one line a developer can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The context's user lacks a permission (RBAC).
    #[error(
        "forbidden: {0} (the context's user lacks this permission: ask for it in a Role, or use another context)"
    )]
    Forbidden(String),
    /// The user may not open a port-forward to the pod.
    #[error(
        "forbidden: the context's user may not open a port-forward to the pod (RBAC: it needs \
         `create` on pods/portforward in the namespace; ask for it in a Role, or use another context)"
    )]
    PortForwardForbidden,
    /// The API server refused, with its message.
    #[error("{0}")]
    Refused(String),
    /// The API server refused the upgraded connection into the pod.
    #[error("the API server refused the connection into the pod: {0}")]
    Upgrade(String),
    /// The API server cannot be reached.
    #[error("the API server is not reachable: {0}")]
    Unreachable(String),
    /// Anything else kube said.
    #[error(transparent)]
    Other(kube::Error),
}

/// Explains a kube error: the API server's own message for a refusal (with
/// what to do about RBAC), or that the API server cannot be reached (kube's
/// transport errors repeat their causes).
pub fn explain(e: kube::Error) -> ClusterError {
    match &e {
        kube::Error::Api(s) if s.code == 403 => ClusterError::Forbidden(s.message.clone()),
        kube::Error::Api(s) => ClusterError::Refused(s.message.clone()),
        // Only port-forwards upgrade the connection here.
        kube::Error::UpgradeConnection(kube::client::UpgradeConnectionError::ProtocolSwitch(
            code,
        )) if code.as_u16() == 403 => ClusterError::PortForwardForbidden,
        kube::Error::UpgradeConnection(u) => ClusterError::Upgrade(u.to_string()),
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            ClusterError::Unreachable(crate::tunnel::source_chain(&e))
        }
        _ => ClusterError::Other(e),
    }
}
