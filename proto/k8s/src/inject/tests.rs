//! The injection's tests: every workload kind, each annotation, each error.

use super::*;
use crate::workload::pod_template_mut;

const AGENT: &str = "registry.local/lks-agent:0.1.0";

fn opts() -> InjectOptions {
    InjectOptions {
        agent_image: AGENT.into(),
    }
}

fn no_image(_: &str) -> Option<ImageConfig> {
    None
}

fn deployment(annotations: Value, containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": annotations},
                "spec": {"containers": containers},
            },
        },
    })
}

fn web(annotations: Value) -> Value {
    deployment(
        annotations,
        json!([{"name": "web", "image": "web:1", "command": ["node"], "args": ["server.js"]}]),
    )
}

fn template(object: &mut Value) -> &mut Value {
    pod_template_mut(object).expect("a pod template")
}

fn container(object: &mut Value, index: usize) -> &Value {
    &template(object)["spec"]["containers"][index]
}

fn wrapped(root: &str, argv: &[&str]) -> Value {
    let mut v = vec![
        AGENT_BIN,
        "supervise",
        "--root",
        root,
        "--listen",
        "127.0.0.1:7690",
        "--workdir",
        ".",
        "--",
    ];
    v.extend(argv);
    json!(v)
}

#[test]
fn templates_of_every_workload_kind() {
    let spec = json!({"template": {"metadata": {}, "spec": {"containers": []}}});
    for (api, kind) in [
        ("apps/v1", "Deployment"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("apps/v1", "ReplicaSet"),
        ("v1", "ReplicationController"),
        ("batch/v1", "Job"),
    ] {
        let mut o = json!({"apiVersion": api, "kind": kind, "spec": spec});
        let t = pod_template_mut(&mut o).unwrap_or_else(|| panic!("{kind}"));
        assert_eq!(t, &spec["template"], "{kind}");
    }
    let mut cron = json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "spec": {"jobTemplate": {"spec": spec}}});
    assert_eq!(pod_template_mut(&mut cron).unwrap(), &spec["template"]);
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {}});
    let copy = pod.clone();
    assert_eq!(pod_template_mut(&mut pod).unwrap(), &copy);
}

#[test]
fn no_template_for_other_kinds() {
    for mut o in [
        json!({"apiVersion": "v1", "kind": "Service", "spec": {"template": {}}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap"}),
        // Same kind, another API group: not ours to interpret.
        json!({"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "spec": {"template": {}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment"}),
        json!({"kind": 3}),
        json!([]),
    ] {
        assert!(pod_template_mut(&mut o).is_none(), "{o}");
        let before = o.clone();
        assert_eq!(
            inject(&mut o, &opts(), &no_image),
            Ok(Outcome::NotAnnotated)
        );
        assert_eq!(o, before);
    }
}

#[test]
fn injects_volume_init_container_and_wrapped_command() {
    let mut d = web(json!({"lks.dev/agent": "true"}));
    assert_eq!(inject(&mut d, &opts(), &no_image), Ok(Outcome::Injected));
    let t = template(&mut d);
    assert_eq!(t["metadata"]["annotations"][ANNOTATION_INJECTED], AGENT);
    assert_eq!(t["metadata"]["labels"]["app"], "web", "labels kept");
    assert_eq!(
        t["spec"]["volumes"],
        json!([{"name": "lks-agent", "emptyDir": {}}])
    );
    let init = &t["spec"]["initContainers"];
    assert_eq!(init.as_array().unwrap().len(), 1);
    assert_eq!(init[0]["name"], INIT_CONTAINER);
    assert_eq!(init[0]["image"], AGENT);
    assert_eq!(init[0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        init[0]["command"],
        json!(["/lks-agent", "install", "/.lks/lks-agent"])
    );
    assert_eq!(
        init[0]["volumeMounts"],
        json!([{"name": "lks-agent", "mountPath": "/.lks"}])
    );
    let c = &t["spec"]["containers"][0];
    assert_eq!(c["command"], wrapped("/app", &["node", "server.js"]));
    assert!(c.get("args").is_none(), "args folded into command");
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "lks-agent", "mountPath": "/.lks", "readOnly": true}])
    );
    assert_eq!(
        c["env"],
        json!([{"name": "LKS_TOKEN", "valueFrom": {"secretKeyRef": {"name": "lks-agent-token", "key": "token", "optional": true}}}]),
        "the pod starts without the Secret (no lks up in its namespace)"
    );
    assert_eq!(c["image"], "web:1");
}

#[test]
fn wait_for_sync_is_passed_to_the_supervisor_and_checked() {
    let mut d = web(json!({"lks.dev/agent": "true", "lks.dev/wait-for-sync": "10"}));
    assert_eq!(inject(&mut d, &opts(), &no_image), Ok(Outcome::Injected));
    let command = template(&mut d)["spec"]["containers"][0]["command"].clone();
    let argv: Vec<&str> = command
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let at = argv.iter().position(|a| *a == "--wait-for-sync").unwrap();
    assert_eq!(argv[at + 1], "10");
    assert!(at < argv.iter().position(|a| *a == "--").unwrap());
    for bad in ["soon", "-1", "3601", "1.5"] {
        let mut d = web(json!({"lks.dev/agent": "true", "lks.dev/wait-for-sync": bad}));
        let before = d.clone();
        let e = inject(&mut d, &opts(), &no_image).unwrap_err();
        assert!(
            matches!(e, InjectError::BadWaitForSync { .. }),
            "{bad}: {e}"
        );
        assert_eq!(d, before, "untouched on error");
    }
}

#[test]
fn existing_volumes_mounts_env_and_init_containers_are_kept() {
    let mut d = web(json!({"lks.dev/agent": "true"}));
    let t = template(&mut d);
    t["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    t["spec"]["initContainers"] = json!([{"name": "migrate", "image": "web:1"}]);
    t["spec"]["containers"][0]["env"] = json!([{"name": "PORT", "value": "80"}]);
    t["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    inject(&mut d, &opts(), &no_image).unwrap();
    let t = template(&mut d);
    let names = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&t["spec"]["volumes"]), ["data", "lks-agent"]);
    assert_eq!(
        names(&t["spec"]["initContainers"]),
        ["migrate", "lks-agent-install"]
    );
    let c = &t["spec"]["containers"][0];
    assert_eq!(names(&c["env"]), ["PORT", "LKS_TOKEN"]);
    assert_eq!(names(&c["volumeMounts"]), ["data", "lks-agent"]);
}

#[test]
fn idempotent() {
    let mut d = web(json!({"lks.dev/agent": "true"}));
    inject(&mut d, &opts(), &no_image).unwrap();
    let once = d.clone();
    let other = InjectOptions {
        agent_image: "other:2".into(),
    };
    assert_eq!(
        inject(&mut d, &other, &no_image),
        Ok(Outcome::AlreadyInjected)
    );
    assert_eq!(d, once);
}

#[test]
fn not_annotated_is_untouched() {
    for annotations in [
        Value::Null,
        json!({}),
        json!({"lks.dev/agent": "false"}),
        json!({"lks.dev/agent": "True"}),
        json!({"lks.dev/agent": ""}),
        json!({"other": "true"}),
    ] {
        let mut d = web(annotations.clone());
        let before = d.clone();
        assert_eq!(
            inject(&mut d, &opts(), &no_image),
            Ok(Outcome::NotAnnotated),
            "{annotations}"
        );
        assert_eq!(d, before);
    }
    // A template without metadata at all.
    let mut d = web(Value::Null);
    d["spec"]["template"]
        .as_object_mut()
        .unwrap()
        .remove("metadata");
    let before = d.clone();
    assert_eq!(
        inject(&mut d, &opts(), &no_image),
        Ok(Outcome::NotAnnotated)
    );
    assert_eq!(d, before);
}

#[test]
fn annotation_that_is_not_a_string_is_an_error() {
    let mut d = web(json!({"lks.dev/agent": true}));
    let before = d.clone();
    let e = inject(&mut d, &opts(), &no_image).unwrap_err();
    assert!(matches!(
        e,
        InjectError::AnnotationNotString {
            key: ANNOTATION_AGENT,
            ..
        }
    ));
    let msg = e.to_string();
    assert!(
        msg.contains("Deployment shop/web") && msg.contains("\"true\""),
        "{msg}"
    );
    assert_eq!(d, before);
}

#[test]
fn chosen_container_by_annotation() {
    let mut d = deployment(
        json!({"lks.dev/agent": "true", "lks.dev/container": "app"}),
        json!([
            {"name": "proxy", "image": "envoy:1", "command": ["envoy"]},
            {"name": "app", "image": "app:1", "command": ["./app"], "args": ["--port", "80"]},
        ]),
    );
    inject(&mut d, &opts(), &no_image).unwrap();
    assert_eq!(
        container(&mut d, 0)["command"],
        json!(["envoy"]),
        "proxy untouched"
    );
    assert!(container(&mut d, 0).get("env").is_none());
    assert_eq!(
        container(&mut d, 1)["command"],
        wrapped("/app", &["./app", "--port", "80"])
    );
}

#[test]
fn first_container_by_default() {
    let mut d = deployment(
        json!({"lks.dev/agent": "true"}),
        json!([
            {"name": "app", "image": "app:1", "command": ["./app"]},
            {"name": "proxy", "image": "envoy:1", "command": ["envoy"]},
        ]),
    );
    inject(&mut d, &opts(), &no_image).unwrap();
    assert_eq!(container(&mut d, 0)["command"], wrapped("/app", &["./app"]));
    assert_eq!(container(&mut d, 1)["command"], json!(["envoy"]));
}

#[test]
fn unknown_container_names_the_existing_ones() {
    let mut d = deployment(
        json!({"lks.dev/agent": "true", "lks.dev/container": "api"}),
        json!([
            {"name": "web", "image": "web:1", "command": ["web"]},
            {"name": "proxy", "image": "envoy:1", "command": ["envoy"]},
        ]),
    );
    let before = d.clone();
    let e = inject(&mut d, &opts(), &no_image).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, InjectError::UnknownContainer { .. }), "{msg}");
    assert!(
        msg.contains("\"api\"") && msg.contains("web, proxy") && msg.contains("shop/web"),
        "{msg}"
    );
    assert_eq!(d, before);
}

#[test]
fn no_containers_is_an_error() {
    let mut d = deployment(json!({"lks.dev/agent": "true"}), json!([]));
    assert!(matches!(
        inject(&mut d, &opts(), &no_image),
        Err(InjectError::NoContainers { .. })
    ));
}

#[test]
fn root_annotation() {
    let mut d = web(json!({"lks.dev/agent": "true", "lks.dev/root": "/srv/web"}));
    inject(&mut d, &opts(), &no_image).unwrap();
    assert_eq!(
        container(&mut d, 0)["command"],
        wrapped("/srv/web", &["node", "server.js"])
    );
    let mut d = web(json!({"lks.dev/agent": "true", "lks.dev/root": "app"}));
    let e = inject(&mut d, &opts(), &no_image).unwrap_err();
    assert!(matches!(e, InjectError::BadRoot { .. }), "{e}");
}

#[test]
fn command_without_args() {
    let mut d = deployment(
        json!({"lks.dev/agent": "true"}),
        json!([{"name": "web", "image": "web:1", "command": ["/bin/web", "-v"]}]),
    );
    let resolver_called = std::cell::Cell::new(false);
    let resolver = |_: &str| {
        resolver_called.set(true);
        None
    };
    inject(&mut d, &opts(), &resolver).unwrap();
    assert!(
        !resolver_called.get(),
        "the image is not read when command is set"
    );
    assert_eq!(
        container(&mut d, 0)["command"],
        wrapped("/app", &["/bin/web", "-v"])
    );
}

fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
    ImageConfig {
        entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn no_command_uses_the_image_entrypoint_and_cmd() {
    let resolver =
        |r: &str| (r == "web:1").then(|| image(&["docker-entrypoint.sh"], &["node", "server.js"]));
    let mut d = deployment(
        json!({"lks.dev/agent": "true"}),
        json!([{"name": "web", "image": "web:1"}]),
    );
    inject(&mut d, &opts(), &resolver).unwrap();
    assert_eq!(
        container(&mut d, 0)["command"],
        wrapped("/app", &["docker-entrypoint.sh", "node", "server.js"])
    );
}

#[test]
fn args_without_command_replace_the_image_cmd() {
    let resolver = |_: &str| Some(image(&["python", "-m"], &["http.server"]));
    let mut d = deployment(
        json!({"lks.dev/agent": "true"}),
        json!([{"name": "web", "image": "py:3", "args": ["app", "--reload"]}]),
    );
    inject(&mut d, &opts(), &resolver).unwrap();
    let c = container(&mut d, 0);
    assert_eq!(
        c["command"],
        wrapped("/app", &["python", "-m", "app", "--reload"])
    );
    assert!(c.get("args").is_none());
}

#[test]
fn empty_command_counts_as_unset_and_empty_entrypoint_is_none() {
    let resolver = |_: &str| Some(image(&[""], &["/srv/app"]));
    let mut d = deployment(
        json!({"lks.dev/agent": "true"}),
        json!([{"name": "web", "image": "app:1", "command": [], "args": []}]),
    );
    inject(&mut d, &opts(), &resolver).unwrap();
    assert_eq!(
        container(&mut d, 0)["command"],
        wrapped("/app", &["/srv/app"])
    );
}

#[test]
fn image_strings_are_escaped_from_variable_expansion() {
    let resolver = |_: &str| Some(image(&["sh", "-c"], &["echo $(date) $$ $HOME"]));
    let mut d = deployment(
        json!({"lks.dev/agent": "true"}),
        json!([{"name": "web", "image": "app:1"}]),
    );
    inject(&mut d, &opts(), &resolver).unwrap();
    assert_eq!(
        container(&mut d, 0)["command"],
        wrapped("/app", &["sh", "-c", "echo $$(date) $$$$ $$HOME"])
    );
    // The container's own command was already expanded by Kubernetes: kept as is.
    let mut d = deployment(
        json!({"lks.dev/agent": "true"}),
        json!([{"name": "web", "image": "app:1", "command": ["echo", "$(PORT)"]}]),
    );
    inject(&mut d, &opts(), &resolver).unwrap();
    assert_eq!(
        container(&mut d, 0)["command"],
        wrapped("/app", &["echo", "$(PORT)"])
    );
}

#[test]
fn no_command_and_unreadable_image_is_an_error() {
    let mut d = deployment(
        json!({"lks.dev/agent": "true"}),
        json!([{"name": "web", "image": "private.example/web:1"}]),
    );
    let before = d.clone();
    let e = inject(&mut d, &opts(), &no_image).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, InjectError::UnknownCommand { .. }), "{msg}");
    assert!(
        msg.contains("private.example/web:1")
            && msg.contains("set `command`")
            && msg.contains("\"web\""),
        "{msg}"
    );
    assert_eq!(d, before);
}

#[test]
fn nothing_to_run_and_no_image_are_errors() {
    let resolver = |_: &str| Some(ImageConfig::default());
    let mut d = deployment(
        json!({"lks.dev/agent": "true"}),
        json!([{"name": "web", "image": "scratch:1"}]),
    );
    assert!(matches!(
        inject(&mut d, &opts(), &resolver),
        Err(InjectError::NothingToRun { .. })
    ));
    let mut d = deployment(json!({"lks.dev/agent": "true"}), json!([{"name": "web"}]));
    assert!(matches!(
        inject(&mut d, &opts(), &resolver),
        Err(InjectError::NoImage { .. })
    ));
}

#[test]
fn conflicts_with_what_lks_adds_are_errors() {
    let cases: [(&str, Value); 5] = [
        (
            "volume",
            json!({"volumes": [{"name": "lks-agent", "emptyDir": {}}]}),
        ),
        (
            "init container",
            json!({"initContainers": [{"name": "lks-agent-install", "image": "x"}]}),
        ),
        (
            "LKS_TOKEN",
            json!({"env": [{"name": "LKS_TOKEN", "value": "x"}]}),
        ),
        (
            "/.lks",
            json!({"volumeMounts": [{"name": "tools", "mountPath": "/.lks"}]}),
        ),
        (
            "volume mount",
            json!({"volumeMounts": [{"name": "lks-agent", "mountPath": "/x"}]}),
        ),
    ];
    for (expect, extra) in cases {
        let mut d = web(json!({"lks.dev/agent": "true"}));
        let t = template(&mut d);
        for (k, v) in extra.as_object().unwrap() {
            if k == "volumes" || k == "initContainers" {
                t["spec"][k] = v.clone();
            } else {
                t["spec"]["containers"][0][k] = v.clone();
            }
        }
        let before = d.clone();
        let e = inject(&mut d, &opts(), &no_image).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, InjectError::Conflict { .. }), "{msg}");
        assert!(msg.contains(expect), "{expect}: {msg}");
        assert_eq!(d, before, "{expect}: untouched after an error");
    }
}

#[test]
fn malformed_fields_are_errors_naming_the_path() {
    let mut d = web(json!({"lks.dev/agent": "true"}));
    template(&mut d)["spec"]["containers"][0]["env"] = json!({"PORT": "80"});
    let msg = inject(&mut d, &opts(), &no_image).unwrap_err().to_string();
    assert!(
        msg.contains("spec.template.spec.containers[0].env must be a list"),
        "{msg}"
    );
    let mut d = web(json!({"lks.dev/agent": "true"}));
    template(&mut d)["spec"]["containers"][0]["command"] = json!("node server.js");
    let msg = inject(&mut d, &opts(), &no_image).unwrap_err().to_string();
    assert!(
        msg.contains("containers[0].command must be a list of strings"),
        "{msg}"
    );
}

#[test]
fn bare_pod_and_cron_job() {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "dev", "annotations": {"lks.dev/agent": "true"}},
        "spec": {"containers": [{"name": "web", "image": "web:1", "command": ["web"]}]},
    });
    inject(&mut pod, &opts(), &no_image).unwrap();
    assert_eq!(pod["metadata"]["annotations"][ANNOTATION_INJECTED], AGENT);
    assert_eq!(
        pod["spec"]["containers"][0]["command"],
        wrapped("/app", &["web"])
    );
    assert_eq!(pod["spec"]["volumes"][0]["name"], VOLUME);

    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "dev", "annotations": {"lks.dev/agent": "true"}},
        "spec": {"containers": [{"name": "web", "image": "web:1"}]}});
    let msg = inject(&mut pod, &opts(), &no_image)
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("Pod dev/web-*: "), "{msg}");

    let mut cron = json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {
            "metadata": {"annotations": {"lks.dev/agent": "true"}},
            "spec": {"restartPolicy": "OnFailure",
                     "containers": [{"name": "job", "image": "job:1", "command": ["run"]}]}}}}},
    });
    inject(&mut cron, &opts(), &no_image).unwrap();
    let t = &cron["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(
        t["spec"]["containers"][0]["command"],
        wrapped("/app", &["run"])
    );
    assert_eq!(t["spec"]["initContainers"][0]["name"], INIT_CONTAINER);
}

#[test]
fn literal_round_trips_through_kubernetes_expansion() {
    // Kubernetes' expansion with no variables defined: `$$` -> `$`, `$(X)` kept.
    fn expand(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' && chars.peek() == Some(&'$') {
                chars.next();
            }
            out.push(c);
        }
        out
    }
    for s in [
        "plain", "$HOME", "$(date)", "$$", "a$", "$$(x)", "$", "$(", "x$$$y",
    ] {
        assert_eq!(expand(&literal(s)), s, "{s:?} -> {:?}", literal(s));
    }
    assert_eq!(
        literal("$HOME"),
        "$HOME",
        "left alone when expansion cannot change it"
    );
}
