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

/// A kube error as one line a developer can act on: the API server's own
/// message for a refusal (with what to do about RBAC), or that the API
/// server cannot be reached (kube's transport errors repeat their causes).
pub fn explain(e: kube::Error) -> anyhow::Error {
    match &e {
        kube::Error::Api(s) if s.code == 403 => anyhow::anyhow!(
            "forbidden: {} (the context's user lacks this permission: ask for it in a Role, or use another context)",
            s.message
        ),
        kube::Error::Api(s) => anyhow::anyhow!("{}", s.message),
        // Only port-forwards upgrade the connection here.
        kube::Error::UpgradeConnection(kube::client::UpgradeConnectionError::ProtocolSwitch(
            code,
        )) if code.as_u16() == 403 => anyhow::anyhow!(
            "forbidden: the context's user may not open a port-forward to the pod (RBAC: it needs \
             `create` on pods/portforward in the namespace; ask for it in a Role, or use another context)"
        ),
        kube::Error::UpgradeConnection(u) => {
            anyhow::anyhow!("the API server refused the connection into the pod: {u}")
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => anyhow::anyhow!(
            "the API server is not reachable: {}",
            crate::tunnel::source_chain(&e)
        ),
        _ => anyhow::Error::new(e),
    }
}
