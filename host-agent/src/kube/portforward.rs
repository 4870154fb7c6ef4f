//! The tunnel into pods: kube's pod port-forward (the API server's
//! WebSocket), one fresh stream per connection, to the pod that runs the
//! workload at that moment ([`Pods`]). So gRPC to the agent and the service's
//! own ports on 127.0.0.1 follow a pod that restarts or is replaced (kubefwd
//! binds one pod and breaks when it goes).

use super::pods::Pods;
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

/// Serves 127.0.0.1:`port` (the service's declared port) by forwarding each
/// connection to the same port of the pod that serves now
/// ([`super::pods::View::serving`]) among the pods `pods` holds at that
/// moment (a new start of the service hands over its new [`Pods`] without
/// closing the port); a failure is recorded in the pods' view
/// ([`Pods::forwarded`]). Runs until aborted.
pub async fn serve_port(
    pods: tokio::sync::watch::Receiver<Pods>,
    port: u16,
    report: Arc<dyn Fn(String) + Send + Sync>,
) {
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
        let _ = local.set_nodelay(true);
        let pods = pods.borrow().clone();
        tokio::spawn(async move {
            let Ok(pod) = tokio::time::timeout(WAIT_FOR_POD, pods.serving()).await else {
                pods.forwarded(Some(format!(
                    "forwarding 127.0.0.1:{port}: no pod runs after {}s",
                    WAIT_FOR_POD.as_secs()
                )));
                return;
            };
            match pods.open_to(&pod, port).await {
                Ok(mut remote) => {
                    pods.forwarded(None);
                    let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
                }
                Err(e) => pods.forwarded(Some(format!("forwarding 127.0.0.1:{port}: {e}"))),
            }
        });
    }
}

/// A service's ports forwarded from 127.0.0.1, kept across new starts of
/// the service (a rebuild, a manifest edit): only the pods they lead to
/// change, so the ports never close.
pub struct Forwards {
    pods: tokio::sync::watch::Sender<Pods>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Forwards {
    /// Starts forwarding `ports` to `pods`.
    pub fn start(pods: Pods, ports: &[u16], report: Arc<dyn Fn(String) + Send + Sync>) -> Forwards {
        let (tx, rx) = tokio::sync::watch::channel(pods);
        let tasks = ports
            .iter()
            .map(|&port| tokio::spawn(serve_port(rx.clone(), port, report.clone())))
            .collect();
        Forwards { pods: tx, tasks }
    }

    /// From now on, connections go to `pods`.
    pub fn retarget(&self, pods: Pods) {
        self.pods.send_replace(pods);
    }
}

impl Drop for Forwards {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
