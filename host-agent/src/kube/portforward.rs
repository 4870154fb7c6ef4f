//! The tunnel into pods: kube's pod port-forward (the API server's
//! WebSocket), one fresh stream per connection, to the pod that runs the
//! workload at that moment ([`Pods`]). So gRPC to the agent and the service's
//! own ports on 127.0.0.1 follow a pod that restarts or is replaced (kubefwd
//! binds one pod and breaks when it goes).

use super::pods::Pods;
use crate::forward::Opener;
use crate::tunnel::{DialFuture, Dialer, Stream};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use std::sync::Arc;
use std::time::Duration;

/// How long a connection to a service port waits for a pod that runs.
const WAIT_FOR_POD: Duration = Duration::from_secs(30);

impl Pods {
    /// Opens a stream to `port` of `pod`.
    pub async fn open_to(&self, pod: &str, port: u16) -> std::io::Result<Box<dyn Stream>> {
        let api: Api<Pod> = Api::namespaced(self.client().clone(), &self.namespace);
        let mut pf = api.portforward(pod, &[port]).await.map_err(|e| {
            std::io::Error::other(format!(
                "port-forward to {}/{pod}:{port}: {:#}",
                self.namespace,
                crate::kube::explain(e)
            ))
        })?;
        let stream = pf.take_stream(port).ok_or_else(|| {
            std::io::Error::other(format!("port-forward to {pod}:{port} gave no stream"))
        })?;
        // The forwarder's task keeps running for the stream after `pf` goes.
        Ok(Box::new(stream))
    }

    /// A dialer for the agent's gRPC on `port` of the pod that runs now:
    /// each dial waits for one and records which it reached.
    pub fn dialer(&self, port: u16) -> Dialer {
        let pods = self.clone();
        Dialer::Custom {
            name: format!(
                "pods {} in {} (port-forward :{port})",
                self.selector, self.namespace
            ),
            dial: Arc::new(move || -> DialFuture {
                let pods = pods.clone();
                Box::pin(async move {
                    let pod = pods.running().await;
                    match pods.open_to(&pod, port).await {
                        Ok(stream) => {
                            pods.dialed(&pod);
                            Ok(stream)
                        }
                        Err(e) => {
                            pods.forwarded(Some(e.to_string()));
                            Err(e)
                        }
                    }
                })
            }),
        }
    }
}

/// The opener of the service's forwarded ports while `pods` hold it: each
/// connection goes to the same port of the pod that serves at that moment
/// ([`super::pods::View::serving`]); a failure is recorded in the pods' view
/// ([`Pods::forwarded`]).
pub fn opener(pods: Pods) -> Opener {
    Arc::new(move |port| -> DialFuture {
        let pods = pods.clone();
        Box::pin(async move {
            let Ok(pod) = tokio::time::timeout(WAIT_FOR_POD, pods.serving()).await else {
                let why = format!(
                    "forwarding 127.0.0.1:{port}: no pod runs after {}s",
                    WAIT_FOR_POD.as_secs()
                );
                pods.forwarded(Some(why.clone()));
                return Err(std::io::Error::other(why));
            };
            match pods.open_to(&pod, port).await {
                Ok(stream) => {
                    pods.forwarded(None);
                    Ok(stream)
                }
                Err(e) => {
                    pods.forwarded(Some(format!("forwarding 127.0.0.1:{port}: {e}")));
                    Err(e)
                }
            }
        })
    })
}
