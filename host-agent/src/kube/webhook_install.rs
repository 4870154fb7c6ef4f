//! The objects that install `lks-agent webhook` in the cluster: the
//! mutating admission webhook that injects the agent into pods annotated
//! `lks.dev/agent: "true"` as they are created.
//!
//! Everything lives in the namespace `lks-system`: the serving certificate
//! (a Secret), the webhook's Deployment and Service, and cluster-wide the
//! `MutatingWebhookConfiguration` that sends pod creations to it. The
//! webhook must never stand in the way of the cluster: failures are ignored
//! (the pod is created without the agent), system namespaces and its own are
//! excluded, and calls time out after 5 s.
//!
//! [`webhook_objects`] is pure: the same image and PEMs give the same objects
//! (snapshot-tested). [`webhook_certs`] makes the PEMs: a CA of its own and a
//! serving certificate for the Service's DNS names, valid for a year.

use anyhow::Context;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};

/// The namespace the webhook runs in.
pub const NAMESPACE: &str = "lks-system";
/// Name of its Deployment and Service.
pub const NAME: &str = "lks-webhook";
/// The Secret holding its serving certificate (`tls.crt`, `tls.key`, `ca.crt`).
pub const TLS_SECRET: &str = "lks-webhook-tls";
/// The `MutatingWebhookConfiguration`.
pub const CONFIGURATION: &str = "lks-agent-injector";
/// The port the webhook listens on in its pod.
const PORT: u16 = 8443;
/// How long certificates made by [`webhook_certs`] are valid.
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Namespaces whose pods never go through the webhook.
const EXCLUDED_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease", NAMESPACE];

/// The DNS names the API server uses to call the webhook's Service.
pub fn service_dns_names() -> Vec<String> {
    vec![
        format!("{NAME}.{NAMESPACE}.svc"),
        format!("{NAME}.{NAMESPACE}.svc.cluster.local"),
    ]
}

/// `app.kubernetes.io/*` labels on everything lks installs.
fn labels() -> Value {
    json!({
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/part-of": "lks",
        "app.kubernetes.io/managed-by": "lks",
    })
}

/// Base64, as Kubernetes wants `[]byte` fields in JSON.
fn base64(bytes: &[u8]) -> Value {
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec())).expect("a byte string serializes")
}

/// Every object of the webhook, in the order they are applied: Namespace,
/// Secret, Deployment, Service, MutatingWebhookConfiguration (last, so the
/// API server starts calling the webhook only once it exists).
/// `agent_image` is what the webhook runs and what injected pods copy the
/// agent from; it must be pullable by the cluster's nodes.
pub fn webhook_objects(
    agent_image: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Vec<Value> {
    let selector = json!({ "app.kubernetes.io/name": NAME });
    let namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": NAMESPACE, "labels": labels() },
    });
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": TLS_SECRET, "namespace": NAMESPACE, "labels": labels() },
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64(cert_pem.as_bytes()),
            "tls.key": base64(key_pem.as_bytes()),
            "ca.crt": base64(ca_pem.as_bytes()),
        },
    });
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": NAME, "namespace": NAMESPACE, "labels": labels() },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": selector },
            "template": {
                "metadata": {
                    "labels": labels(),
                    // A new certificate rolls the pod: the webhook reads its
                    // certificate once, at start.
                    "annotations": { "lks.dev/tls-cert": fingerprint(cert_pem) },
                },
                "spec": {
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": "webhook",
                        "image": agent_image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": [
                            "/lks-agent", "webhook",
                            "--tls-cert", "/tls/tls.crt",
                            "--tls-key", "/tls/tls.key",
                            "--listen", format!("0.0.0.0:{PORT}"),
                            "--agent-image", agent_image,
                        ],
                        "ports": [{ "name": "https", "containerPort": PORT, "protocol": "TCP" }],
                        "readinessProbe": {
                            "httpGet": { "scheme": "HTTPS", "path": "/healthz", "port": PORT },
                            "periodSeconds": 5,
                            "failureThreshold": 3,
                        },
                        "resources": {
                            "requests": { "cpu": "10m", "memory": "16Mi" },
                            "limits": { "memory": "128Mi" },
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                        "volumeMounts": [{ "name": "tls", "mountPath": "/tls", "readOnly": true }],
                    }],
                    "volumes": [{
                        "name": "tls",
                        // Readable by the pod's group only (fsGroup).
                        "secret": { "secretName": TLS_SECRET, "defaultMode": 0o440 },
                    }],
                },
            },
        },
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": NAME, "namespace": NAMESPACE, "labels": labels() },
        "spec": {
            "selector": selector,
            "ports": [{ "name": "https", "port": 443, "targetPort": "https", "protocol": "TCP" }],
        },
    });
    let configuration = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": CONFIGURATION, "labels": labels() },
        "webhooks": [{
            "name": "agent-injector.lks.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            // A broken or absent webhook must never block the cluster: the
            // pod is then created as it is, without the agent.
            "failurePolicy": "Ignore",
            "matchPolicy": "Equivalent",
            "reinvocationPolicy": "Never",
            "timeoutSeconds": 5,
            "rules": [{
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }],
            "namespaceSelector": {
                "matchExpressions": [{
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": EXCLUDED_NAMESPACES,
                }],
            },
            "clientConfig": {
                "service": { "namespace": NAMESPACE, "name": NAME, "path": "/mutate", "port": 443 },
                "caBundle": base64(ca_pem.as_bytes()),
            },
        }],
    });
    vec![namespace, secret, deployment, service, configuration]
}

/// Webhook certificates that expire within this are replaced by [`install`].
const CERT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Installs the webhook in the cluster of `client`, or updates it (its
/// certificates are kept while they are good for another 30 days), and
/// waits until it serves. `agent_image` must be pullable by the nodes: the
/// webhook runs it, and injected pods copy the agent from it.
pub async fn install(client: &kube::Client, agent_image: &str) -> anyhow::Result<()> {
    let (ca, cert, key) = match existing_certs(client).await {
        Some(certs) => {
            super::cluster::detail("keeping its serving certificate (valid for more than 30 days)");
            certs
        }
        None => {
            super::cluster::detail("making its CA and serving certificate (valid for a year)");
            webhook_certs()?
        }
    };
    super::cluster::apply(client, &webhook_objects(agent_image, &ca, &cert, &key)).await?;
    super::cluster::wait_for_deployment(client, NAMESPACE, NAME).await
}

/// Removes the webhook: its configuration first (the API server stops
/// calling it), then its namespace. Returns what it deleted.
pub async fn uninstall(client: &kube::Client) -> anyhow::Result<Vec<String>> {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::Namespace;
    // Whether it was there.
    fn existed<T>(r: Result<T, kube::Error>) -> anyhow::Result<bool> {
        match r {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(super::explain(e).into()),
        }
    }
    let mut deleted = vec![];
    let configs: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(client.clone());
    if existed(configs.delete(CONFIGURATION, &Default::default()).await)? {
        deleted.push(format!("MutatingWebhookConfiguration {CONFIGURATION}"));
    }
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    if existed(namespaces.delete(NAMESPACE, &Default::default()).await)? {
        deleted.push(format!(
            "Namespace {NAMESPACE} (its Deployment, Service and Secret)"
        ));
    }
    Ok(deleted)
}

/// The webhook's certificates from its Secret, when they are still good for
/// a while.
async fn existing_certs(client: &kube::Client) -> Option<(String, String, String)> {
    use k8s_openapi::api::core::v1::Secret;
    let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), NAMESPACE);
    let secret = api.get_opt(TLS_SECRET).await.ok()??;
    let data = secret.data?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    let (ca, cert, key) = (text("ca.crt")?, text("tls.crt")?, text("tls.key")?);
    certs_valid_at(&ca, &cert, SystemTime::now() + CERT_RENEW_BEFORE).then_some((ca, cert, key))
}

/// `lks webhook` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum WebhookCommand {
    /// Build and push the agent image, then install (or update) the webhook
    /// in the cluster and wait until it serves.
    Install,
    /// Remove the webhook (pods created from then on get no agent; running
    /// ones keep theirs).
    Uninstall,
    /// Whether the webhook is installed and serving.
    Status,
}

/// Runs `lks webhook ...` on the chosen cluster (any cluster lks may change).
pub async fn command(
    file: Option<&std::path::Path>,
    sel: &super::target::Selection,
    cmd: WebhookCommand,
) -> anyhow::Result<()> {
    let ws = match file {
        Some(f) => Some(crate::config::load(Some(f))?),
        None => crate::config::load(None).ok(),
    };
    let settings = ws.as_ref().map(|w| w.kube.clone()).unwrap_or_default();
    let change = !matches!(cmd, WebhookCommand::Status);
    let target = super::target::connect(&settings, sel, change).await?;
    let client = &target.client;
    match cmd {
        WebhookCommand::Install => {
            let registry = crate::registry::Registry::of(ws.as_ref())?;
            let registry = target.registry(registry).await?;
            super::cluster::step(&format!(
                "the agent image, pushed to {}",
                registry.push.address
            ));
            let docker = crate::docker::connect().await?;
            let progress = |l: &str| super::cluster::detail(l);
            crate::registry::ensure_running(&docker, &registry.push, None, &progress).await?;
            let image = crate::agent_image::publish(&docker, &registry, &|_: &str| {}).await?;
            super::cluster::step(&format!(
                "the webhook {NAMESPACE}/{NAME} in context {:?}, running {image}",
                target.context
            ));
            install(client, &image).await?;
            println!(
                "installed: pods annotated lks.dev/agent: \"true\" get the agent (outside {})",
                EXCLUDED_NAMESPACES.join(", ")
            );
        }
        WebhookCommand::Uninstall => {
            let deleted = uninstall(client).await?;
            for d in &deleted {
                println!("deleted {d}");
            }
            if deleted.is_empty() {
                println!(
                    "the webhook is not installed in context {:?}",
                    target.context
                );
            }
        }
        WebhookCommand::Status => {
            println!("webhook: {}", super::cluster::webhook_status(client).await);
        }
    }
    Ok(())
}

/// A short stable digest of a PEM (the pod template's annotation).
fn fingerprint(pem: &str) -> String {
    blake3::hash(pem.as_bytes()).to_hex()[..16].to_string()
}

/// A fresh CA and a serving certificate it signed for the webhook's Service
/// ([`service_dns_names`]), both valid for [`CERT_VALIDITY`] from now (an
/// hour earlier, for clocks that lag): `(ca_pem, cert_pem, key_pem)`. Keys
/// are ECDSA P-256; the CA's key is thrown away.
pub fn webhook_certs() -> anyhow::Result<(String, String, String)> {
    webhook_certs_at(SystemTime::now())
}

/// [`webhook_certs`] as if it were `now`.
pub fn webhook_certs_at(now: SystemTime) -> anyhow::Result<(String, String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let not_before = epoch + since_epoch.saturating_sub(Duration::from_secs(3600));
    let not_after = epoch + since_epoch + CERT_VALIDITY;

    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "lks webhook CA");
    ca.distinguished_name.push(DnType::OrganizationName, "lks");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_key = KeyPair::generate().context("generating the webhook CA's key")?;
    let ca_cert = ca.self_signed(&ca_key).context("signing the webhook CA")?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf =
        CertificateParams::new(service_dns_names()).context("the webhook's DNS names")?;
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, service_dns_names()[0].clone());
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let key = KeyPair::generate().context("generating the webhook's key")?;
    let cert = leaf
        .signed_by(&key, &issuer)
        .context("signing the webhook's certificate")?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

/// Whether `cert_pem` is a serving certificate for the webhook's Service
/// that `ca_pem` signed and that is still valid at `at` (used to keep the
/// certificates of an installed webhook rather than make new ones).
pub fn certs_valid_at(ca_pem: &str, cert_pem: &str, at: SystemTime) -> bool {
    verify_at(ca_pem, cert_pem, &service_dns_names()[0], at).is_ok()
}

/// Verifies `cert_pem` as a TLS server certificate for `dns_name`, chained
/// to `ca_pem`, at time `at` (webpki, through rustls).
pub fn verify_at(
    ca_pem: &str,
    cert_pem: &str,
    dns_name: &str,
    at: SystemTime,
) -> anyhow::Result<()> {
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use std::sync::Arc;

    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(ca.context("reading the CA certificate")?)
            .context("the CA certificate")?;
    }
    anyhow::ensure!(!roots.is_empty(), "no CA certificate");
    let mut chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes());
    let leaf = chain
        .next()
        .context("no certificate")?
        .context("reading the certificate")?;
    let intermediates = chain
        .collect::<Result<Vec<_>, _>>()
        .context("reading the certificate chain")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .context("building the verifier")?;
    let name = ServerName::try_from(dns_name.to_string()).context("the DNS name")?;
    let since_epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .context("the time is before 1970")?;
    verifier
        .verify_server_cert(
            &leaf,
            &intermediates,
            &name,
            &[],
            UnixTime::since_unix_epoch(since_epoch),
        )
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn serving_cert_verifies_against_its_ca_for_both_service_names() {
        let now = SystemTime::now();
        let (ca, cert, key) = webhook_certs_at(now).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
        for name in [
            "lks-webhook.lks-system.svc",
            "lks-webhook.lks-system.svc.cluster.local",
        ] {
            verify_at(&ca, &cert, name, now).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
        assert!(certs_valid_at(&ca, &cert, now));
    }

    #[test]
    fn serving_cert_names_nothing_else() {
        let now = SystemTime::now();
        let (ca, cert, _) = webhook_certs_at(now).unwrap();
        for name in [
            "lks-webhook",
            "lks-webhook.default.svc",
            "localhost",
            "example.com",
        ] {
            assert!(
                verify_at(&ca, &cert, name, now).is_err(),
                "the certificate must not be valid for {name}"
            );
        }
    }

    #[test]
    fn serving_cert_is_refused_under_another_ca() {
        let now = SystemTime::now();
        let (_, cert, _) = webhook_certs_at(now).unwrap();
        let (other_ca, _, _) = webhook_certs_at(now).unwrap();
        assert!(verify_at(&other_ca, &cert, "lks-webhook.lks-system.svc", now).is_err());
        assert!(!certs_valid_at(&other_ca, &cert, now));
    }

    #[test]
    fn certs_are_valid_for_about_a_year() {
        let now = SystemTime::now();
        let (ca, cert, _) = webhook_certs_at(now).unwrap();
        // Valid a little before now (lagging clocks) and for a year...
        assert!(certs_valid_at(
            &ca,
            &cert,
            now - Duration::from_secs(30 * 60)
        ));
        assert!(certs_valid_at(&ca, &cert, now + 364 * DAY));
        // ...and not after.
        assert!(!certs_valid_at(&ca, &cert, now + 366 * DAY));
        assert!(!certs_valid_at(&ca, &cert, now - 2 * DAY));
    }

    #[test]
    fn the_key_matches_the_certificate() {
        // The pair must work as a TLS server identity: rustls checks that the
        // key belongs to the certificate.
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (_, cert, key) = webhook_certs().unwrap();
        let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key);
        assert!(config.is_ok(), "{:?}", config.err());
    }

    #[test]
    fn objects_are_deterministic_and_carry_the_pems() {
        let a = webhook_objects("localhost:5000/lks-agent:0.1.0", "CA", "CERT", "KEY");
        let b = webhook_objects("localhost:5000/lks-agent:0.1.0", "CA", "CERT", "KEY");
        assert_eq!(a, b);
        let kinds: Vec<&str> = a.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "Secret",
                "Deployment",
                "Service",
                "MutatingWebhookConfiguration"
            ]
        );
        assert_eq!(a[1]["data"]["tls.crt"], "Q0VSVA==");
        assert_eq!(a[1]["data"]["tls.key"], "S0VZ");
        assert_eq!(a[1]["data"]["ca.crt"], "Q0E=");
        assert_eq!(a[4]["webhooks"][0]["clientConfig"]["caBundle"], "Q0E=");
        // Another certificate rolls the webhook's pod.
        let c = webhook_objects("localhost:5000/lks-agent:0.1.0", "CA", "CERT2", "KEY");
        assert_ne!(
            a[2]["spec"]["template"]["metadata"]["annotations"],
            c[2]["spec"]["template"]["metadata"]["annotations"]
        );
    }

    #[test]
    fn the_webhook_never_blocks_and_skips_system_namespaces() {
        let objects = webhook_objects("img", "CA", "CERT", "KEY");
        let hook = &objects[4]["webhooks"][0];
        assert_eq!(hook["failurePolicy"], "Ignore");
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(hook["timeoutSeconds"], 5);
        assert_eq!(hook["reinvocationPolicy"], "Never");
        assert_eq!(hook["rules"][0]["operations"], json!(["CREATE"]));
        assert_eq!(hook["rules"][0]["resources"], json!(["pods"]));
        let expr = &hook["namespaceSelector"]["matchExpressions"][0];
        assert_eq!(expr["key"], "kubernetes.io/metadata.name");
        assert_eq!(expr["operator"], "NotIn");
        for ns in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "lks-system",
        ] {
            assert!(
                expr["values"].as_array().unwrap().contains(&json!(ns)),
                "{ns} must be excluded"
            );
        }
        let container = &objects[2]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "img");
        let command: Vec<&str> = container["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            command,
            [
                "/lks-agent",
                "webhook",
                "--tls-cert",
                "/tls/tls.crt",
                "--tls-key",
                "/tls/tls.key",
                "--listen",
                "0.0.0.0:8443",
                "--agent-image",
                "img"
            ]
        );
    }
}
