//! The tunnel into pods: kube's pod port-forward (the API server's
//! WebSocket), one fresh stream per connection, to whichever pod runs the
//! workload at that moment. So gRPC to the agent and the service's own ports
//! on 127.0.0.1 follow a pod that restarts or is replaced (kubefwd binds one
//! pod and breaks when it goes).

use super::apply::find_pod;
use crate::tunnel::{DialFuture, Dialer, Stream};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use std::sync::Arc;
use std::time::Duration;

/// How long a dial waits for a ready pod (a rollout in progress).
const FIND_POD: Duration = Duration::from_secs(60);

/// Where a workload's pods are.
#[derive(Clone)]
pub struct Target {
    /// The client.
    pub client: Client,
    /// The namespace.
    pub namespace: String,
    /// The pods' label selector.
    pub selector: String,
}

impl Target {
    /// Opens a stream to `port` of the workload's current pod.
    pub async fn open(&self, port: u16) -> std::io::Result<Box<dyn Stream>> {
        let pod = find_pod(&self.client, &self.namespace, &self.selector, FIND_POD)
            .await
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut pf = api.portforward(&pod, &[port]).await.map_err(|e| {
            std::io::Error::other(format!(
                "port-forward to {}/{pod}:{port}: {e}",
                self.namespace
            ))
        })?;
        let stream = pf.take_stream(port).ok_or_else(|| {
            std::io::Error::other(format!("port-forward to {pod}:{port} gave no stream"))
        })?;
        // The forwarder's task keeps running for the stream after `pf` goes.
        Ok(Box::new(stream))
    }

    /// A dialer for the agent's gRPC on `port` of the current pod.
    pub fn dialer(&self, port: u16) -> Dialer {
        let target = self.clone();
        Dialer::Custom {
            name: format!(
                "pods {} in {} (port-forward :{port})",
                self.selector, self.namespace
            ),
            dial: Arc::new(move || -> DialFuture {
                let target = target.clone();
                Box::pin(async move { target.open(port).await })
            }),
        }
    }
}

/// Serves 127.0.0.1:`port` (the service's declared port) by forwarding each
/// connection to the same port of the current pod. Runs until aborted.
pub async fn serve_port(target: Target, port: u16, report: Arc<dyn Fn(String) + Send + Sync>) {
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            report(format!(
                "cannot forward 127.0.0.1:{port} to the pod: {e} (is something else using it?)"
            ));
            return;
        }
    };
    loop {
        let Ok((mut local, _)) = listener.accept().await else {
            continue;
        };
        let target = target.clone();
        let report = report.clone();
        tokio::spawn(async move {
            match target.open(port).await {
                Ok(mut remote) => {
                    let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
                }
                Err(e) => report(format!("forwarding 127.0.0.1:{port}: {e}")),
            }
        });
    }
}
