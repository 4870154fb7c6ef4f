//! What each runtime needs from a service's definition: `lks config check`
//! reports what the runtime `lks up` would choose (or `--runtime`) lacks,
//! with the other mistakes of `lks.yaml`. A host resource (`host:`) needs
//! nothing of any runtime. `lks up` itself runs the other
//! services and reports such a one once, without retrying it.

use super::Kind;
use crate::config::{ConfigError, Location, Service, Workspace};

/// What `kind` cannot do with the services of `ws`, one error each, at the
/// service's name.
pub fn unmet(ws: &Workspace, kind: Kind) -> Vec<ConfigError> {
    ws.services
        .values()
        .filter_map(|s| {
            let need = missing(s, kind)?;
            Some(ConfigError::Unrunnable {
                at: ws
                    .named_at
                    .get(&s.name)
                    .cloned()
                    .unwrap_or_else(|| Location {
                        file: s.file.as_path().into(),
                        line: 1,
                        column: 1,
                    }),
                service: s.name.clone(),
                runtime: kind.name(),
                need,
            })
        })
        .collect()
}

/// What `service` lacks for `kind`, said with what to do.
fn missing(service: &Service, kind: Kind) -> Option<String> {
    match kind {
        // A host resource runs on the host whatever the runtime.
        _ if service.host.is_some() => None,
        Kind::Local if service.command.is_empty() => Some(
            "it has no `command`, which the local runtime runs to start the app \
             (add `command:`, or use --runtime docker or kube)"
                .into(),
        ),
        Kind::Docker if !service.build.dockerfile.is_file() => Some(format!(
            "there is no Dockerfile at {}, which the docker runtime builds its image from \
             (add one, or set build.dockerfile)",
            service.build.dockerfile.display()
        )),
        Kind::Kube if service.k8s.is_empty() => Some(
            "it has no `k8s:` manifests, which the kube runtime applies \
             (list its Deployment and Service files)"
                .into(),
        ),
        _ => None,
    }
}
