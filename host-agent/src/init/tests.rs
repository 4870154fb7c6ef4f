//! `lks init`'s guesses on real directories, and what it writes loaded back
//! with lks's own loader.

use super::detect::{Guess, detect, sanitize};
use super::manifests::Probe;
use super::{InitOptions, command, write};
use std::path::{Path, PathBuf};

fn put(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A temporary directory, canonical (the walk reports canonical paths).
fn tmp() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    (t, root)
}

/// The repository's `examples/` copied into `dst` without its lks files.
fn examples_without_lks_files(dst: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for entry in ignore::WalkBuilder::new(&src)
        .standard_filters(false)
        .build()
        .filter_map(Result::ok)
    {
        let rel = entry.path().strip_prefix(&src).unwrap();
        let name = entry.file_name().to_string_lossy();
        // The first three examples (the tour's use lks's own features).
        let tour = ["notes", "notes-build", "quotes", "clock", "clock-build"];
        if rel.starts_with(".lks")
            || tour.iter().any(|t| rel.starts_with(t))
            || name == "lks.yaml"
            || name == "lks.service.yaml"
        {
            continue;
        }
        if entry.file_type().is_some_and(|t| t.is_file()) {
            put(
                dst,
                &rel.display().to_string(),
                &std::fs::read_to_string(entry.path()).unwrap(),
            );
        }
    }
}

fn by_name<'g>(services: &'g [Guess], name: &str) -> &'g Guess {
    services
        .iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no {name} in {services:?}"))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Writes what `lks init` would and loads it as `lks up` does.
fn write_and_load(root: &Path, services: &[Guess]) -> crate::config::Workspace {
    for (path, text) in write::files(root, services) {
        std::fs::write(path, text).unwrap();
    }
    crate::config::load(Some(&root.join("lks.yaml"))).unwrap_or_else(|e| {
        let files: Vec<String> = write::files(root, services)
            .into_iter()
            .map(|(p, t)| format!("--- {}\n{t}", p.display()))
            .collect();
        panic!("{e}\n{}", files.join("\n"))
    })
}

#[test]
fn the_examples_are_guessed_as_the_services_they_are() {
    let (_t, root) = tmp();
    examples_without_lks_files(&root);
    let found = detect(&root);
    let names: Vec<&str> = found.services.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["api", "web", "worker"]);

    let web = by_name(&found.services, "web");
    assert_eq!(web.command.as_ref().unwrap().value, ["node", "server.js"]);
    assert_eq!(
        web.command.as_ref().unwrap().from,
        "package.json scripts.start"
    );
    assert!(
        web.build_local.is_empty(),
        "no dependencies, nothing to install"
    );
    assert_eq!(web.fall_back_on, ["package.json", "Dockerfile"]);
    assert_eq!(
        web.ports.iter().map(|p| p.value).collect::<Vec<_>>(),
        [18080]
    );
    assert_eq!(web.k8s, ["k8s/*.yaml"]);
    assert_eq!(web.deps, ["api"]);
    let env: Vec<(&str, &str)> = web
        .env
        .iter()
        .map(|(n, v)| (n.as_str(), v.value.as_str()))
        .collect();
    assert_eq!(
        env,
        [("PORT", "18080"), ("API_URL", "http://${host:api}:18081")]
    );
    assert_eq!(
        web.readiness.as_ref().unwrap().value,
        Probe::Http("http://127.0.0.1:18080/health".into())
    );

    let api = by_name(&found.services, "api");
    assert_eq!(api.command.as_ref().unwrap().value, ["python3", "app.py"]);
    assert_eq!(api.build_local, [super::language::PIP_INSTALL]);
    assert_eq!(api.run.len(), 1);
    assert_eq!(api.run[0].trigger, ["requirements.txt"]);
    assert_eq!(api.ignore, [".deps/", "__pycache__/"]);
    assert_eq!(api.fall_back_on, ["Dockerfile"]);
    assert!(
        api.env
            .iter()
            .any(|(n, v)| n == "PYTHONPATH" && v.value == ".deps")
    );
    assert_eq!(
        api.readiness.as_ref().unwrap().value,
        Probe::Tcp("127.0.0.1:18081".into())
    );

    let worker = by_name(&found.services, "worker");
    assert_eq!(worker.build_local, ["go build -o bin/worker ."]);
    assert_eq!(worker.command.as_ref().unwrap().value, ["./bin/worker"]);
    assert_eq!(worker.run[0].cmd, "go build -o bin/worker .");
    assert_eq!(worker.run[0].trigger, ["**/*.go", "go.mod"]);
    assert_eq!(worker.ignore, ["bin/"]);
    assert!(worker.k8s.is_empty() && worker.ports.is_empty());
    for g in &found.services {
        assert!(g.notes.is_empty(), "{}: {:?}", g.name, g.notes);
    }
}

#[test]
fn what_lks_init_writes_for_the_examples_loads_as_lks_up_reads_it() {
    let (_t, root) = tmp();
    examples_without_lks_files(&root);
    let found = detect(&root);
    let ws = write_and_load(&root, &found.services);
    assert!(
        std::fs::read_to_string(root.join("lks.yaml"))
            .unwrap()
            .contains("\"*/lks.service.yaml\"")
    );
    let web = &ws.services["web"];
    assert_eq!(web.command, ["node", "server.js"]);
    assert_eq!(web.deps, ["api"]);
    assert_eq!(web.env["API_URL"], "http://${host:api}:18081");
    assert_eq!(web.k8s.len(), 1);
    let api = &ws.services["api"];
    assert_eq!(api.build.local.len(), 1);
    assert_eq!(api.live_update.run[0].triggers, ["requirements.txt"]);
    assert_eq!(api.ports, [18081]);
    let worker = &ws.services["worker"];
    assert_eq!(worker.live_update.ignore, ["bin/"]);
    assert!(crate::runtime::needs::unmet(&ws, crate::runtime::Kind::Local).is_empty());
}

#[test]
fn node_apps_start_by_their_start_script_main_or_entry_file_and_install_what_they_declare() {
    let (_t, root) = tmp();
    put(
        &root,
        "shop/package.json",
        r#"{"scripts": {"start": "NODE_ENV=dev next start", "build": "next build"},
            "dependencies": {"next": "14"}}"#,
    );
    put(&root, "shop/yarn.lock", "");
    put(&root, "lib/package.json", r#"{"main": "lib/index.js"}"#);
    put(&root, "lib/lib/index.js", "");
    put(&root, "plain/package.json", "{}");
    put(&root, "plain/index.js", "");
    put(
        &root,
        "mono/package.json",
        r#"{"workspaces": ["packages/*"]}"#,
    );
    let found = detect(&root);
    let shop = by_name(&found.services, "shop");
    assert_eq!(shop.command.as_ref().unwrap().value, ["npm", "start"]);
    assert_eq!(
        shop.build_local,
        ["yarn install --frozen-lockfile", "npm run build"]
    );
    assert_eq!(shop.run[0].cmd, "npm run build");
    assert!(shop.run[0].trigger.is_empty());
    assert_eq!(shop.ignore, ["node_modules/"]);
    assert_eq!(shop.fall_back_on, ["package.json", "yarn.lock"]);
    let lib = by_name(&found.services, "lib");
    assert_eq!(
        lib.command.as_ref().unwrap().value,
        ["node", "lib/index.js"]
    );
    let plain = by_name(&found.services, "plain");
    assert_eq!(plain.command.as_ref().unwrap().value, ["node", "index.js"]);
    assert!(found.services.iter().all(|g| g.name != "mono"));
    assert!(
        found
            .notes
            .iter()
            .any(|n| n.starts_with("mono: not a Node.js service")),
        "{:?}",
        found.notes
    );
    write_and_load(&root, &found.services);
}

#[test]
fn go_services_build_their_main_package_and_libraries_are_no_service() {
    let (_t, root) = tmp();
    put(&root, "bank/go.mod", "module bank\n");
    put(
        &root,
        "bank/cmd/bank/main.go",
        "package main\nfunc main() {}\n",
    );
    put(
        &root,
        "bank/cmd/migrate/main.go",
        "package main\nfunc main() {}\n",
    );
    put(&root, "bank/go.sum", "");
    put(&root, "util/go.mod", "module util\n");
    put(&root, "util/util.go", "package util\n");
    let found = detect(&root);
    let names: Vec<&str> = found.services.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["bank"]);
    let bank = &found.services[0];
    assert_eq!(bank.build_local, ["go build -o bin/bank ./cmd/bank"]);
    assert_eq!(bank.run[0].trigger, ["**/*.go", "go.mod", "go.sum"]);
    assert!(
        bank.notes.iter().any(|n| n.contains("./cmd/migrate")),
        "{:?}",
        bank.notes
    );
    assert!(
        found
            .notes
            .iter()
            .any(|n| n.contains("util") && n.contains("library"))
    );
    write_and_load(&root, &found.services);
}

#[test]
fn python_apps_start_by_their_entry_file_and_pyproject_alone_gets_a_note() {
    let (_t, root) = tmp();
    put(&root, "site/pyproject.toml", "[project]\nname = \"site\"\n");
    put(&root, "site/manage.py", "");
    put(&root, "site/poetry.lock", "");
    let found = detect(&root);
    let site = &found.services[0];
    assert_eq!(
        site.command.as_ref().unwrap().value,
        ["python3", "manage.py", "runserver", "--noreload"]
    );
    assert!(site.build_local.is_empty() && site.run.is_empty());
    assert_eq!(site.fall_back_on, ["poetry.lock"]);
    assert!(site.notes.iter().any(|n| n.contains("pyproject.toml")));
    write_and_load(&root, &found.services);
}

#[test]
fn a_dockerfile_alone_makes_a_service_for_the_containers_with_its_workdir_ports_and_cmd() {
    let (_t, root) = tmp();
    put(
        &root,
        "proxy/Dockerfile",
        "FROM nginx\nWORKDIR /usr/share/nginx/html\nEXPOSE 8080\nCMD [\"nginx\", \"-g\", \"daemon off;\"]\n",
    );
    put(
        &root,
        "tool/Dockerfile",
        "FROM alpine\nCOPY run.sh .\nCMD [\"./run.sh\"]\n",
    );
    put(&root, "tool/run.sh", "");
    let found = detect(&root);
    let proxy = by_name(&found.services, "proxy");
    assert!(proxy.language.is_none() && proxy.command.is_none());
    assert_eq!(proxy.root.as_deref(), Some("/usr/share/nginx/html"));
    assert_eq!(proxy.ports[0].value, 8080);
    assert_eq!(proxy.fall_back_on, ["Dockerfile"]);
    assert!(proxy.notes.iter().any(|n| n.contains("no command")));
    // A CMD that runs the directory's own program runs on the host too.
    let tool = by_name(&found.services, "tool");
    assert_eq!(tool.command.as_ref().unwrap().value, ["./run.sh"]);
    let ws = write_and_load(&root, &found.services);
    assert_eq!(
        ws.services["proxy"].live_update.root,
        "/usr/share/nginx/html"
    );
    let unmet = crate::runtime::needs::unmet(&ws, crate::runtime::Kind::Local);
    assert_eq!(unmet.len(), 1, "{unmet:?}");
}

#[test]
fn names_are_valid_unique_and_a_port_belongs_to_one_service() {
    assert_eq!(sanitize("My_Service.v2"), "my-service-v2");
    assert_eq!(sanitize("--"), "app");
    assert_eq!(sanitize(&"x".repeat(80)).len(), 63);
    let (_t, root) = tmp();
    put(&root, "a/api/go.mod", "module a\n");
    put(&root, "a/api/main.go", "package main\n");
    put(&root, "a/api/Dockerfile", "FROM golang\nEXPOSE 8080\n");
    put(&root, "b/api/requirements.txt", "");
    put(&root, "b/api/app.py", "");
    put(&root, "b/api/Dockerfile", "FROM python\nEXPOSE 8080\n");
    let found = detect(&root);
    let names: Vec<&str> = found.services.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["api", "b-api"]);
    assert_eq!(found.services[0].ports.len(), 1);
    assert!(found.services[1].ports.is_empty());
    assert!(
        found.services[1]
            .notes
            .iter()
            .any(|n| n.contains("port 8080"))
    );
    let ws = write_and_load(&root, &found.services);
    let listed = std::fs::read_to_string(root.join("lks.yaml")).unwrap();
    assert!(listed.contains("a/api/lks.service.yaml") && listed.contains("b/api/lks.service.yaml"));
    assert_eq!(ws.services.len(), 2);
}

#[test]
fn a_service_at_the_root_leaves_the_services_beneath_it_out() {
    let (_t, root) = tmp();
    put(
        &root,
        "package.json",
        r#"{"scripts": {"start": "node server.js"}}"#,
    );
    put(&root, "tools/gen/go.mod", "module gen\n");
    put(&root, "tools/gen/main.go", "package main\n");
    let found = detect(&root);
    let top = &found.services[0];
    assert_eq!(
        top.name,
        sanitize(&root.file_name().unwrap().to_string_lossy())
    );
    assert_eq!(top.ignore, ["/tools/gen/"]);
    let ws = write_and_load(&root, &found.services);
    assert!(ws.services.contains_key("gen"));
}

#[test]
fn lks_init_replaces_nothing_without_force_and_a_dry_run_writes_nothing() {
    let (_t, root) = tmp();
    put(&root, "api/requirements.txt", "");
    put(&root, "api/app.py", "");
    let opts = |dry_run, force| InitOptions {
        dir: Some(root.clone()),
        dry_run,
        force,
    };
    command(&opts(true, false)).unwrap();
    assert!(!root.join("lks.yaml").exists() && !root.join("api/lks.service.yaml").exists());
    command(&opts(false, false)).unwrap();
    let written = std::fs::read_to_string(root.join("api/lks.service.yaml")).unwrap();
    std::fs::write(root.join("api/lks.service.yaml"), "name: mine\n").unwrap();
    let err = command(&opts(false, false)).unwrap_err().to_string();
    assert!(
        err.contains("lks.yaml and api/lks.service.yaml already exist") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("api/lks.service.yaml")).unwrap(),
        "name: mine\n"
    );
    command(&opts(false, true)).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("api/lks.service.yaml")).unwrap(),
        written
    );
}

#[test]
fn a_directory_without_services_is_an_error_that_says_what_lks_init_looks_for() {
    let (_t, root) = tmp();
    put(&root, "README.md", "");
    let err = command(&InitOptions {
        dir: Some(root.clone()),
        dry_run: false,
        force: false,
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("found no service") && err.contains("go.mod"),
        "{err}"
    );
    assert!(!root.join("lks.yaml").exists());
}

#[test]
fn manifests_env_naming_each_other_makes_one_dependency_not_a_cycle() {
    let (_t, root) = tmp();
    let deployment = |name: &str, other: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  template:\n    spec:\n      containers:\n        - name: {name}\n          image: {name}\n          env:\n            - {{name: PEER, value: \"http://{other}:80\"}}\n            - {{name: DB, value: \"postgres://db:5432\"}}\n"
        )
    };
    for (name, other) in [("a", "b"), ("b", "a")] {
        put(&root, &format!("{name}/app.py"), "");
        put(&root, &format!("{name}/requirements.txt"), "");
        put(
            &root,
            &format!("deploy/{name}.yaml"),
            &deployment(name, other),
        );
    }
    let found = detect(&root);
    let (a, b) = (&found.services[0], &found.services[1]);
    assert_eq!(a.deps, ["b"]);
    assert!(b.deps.is_empty());
    assert!(
        b.notes.iter().any(|n| n.contains("depends on it")),
        "{:?}",
        b.notes
    );
    assert!(
        a.notes.iter().any(|n| n.contains("DB") && n.contains("db")),
        "{:?}",
        a.notes
    );
    assert_eq!(a.k8s, ["../deploy/a.yaml"]);
    let ws = write_and_load(&root, &found.services);
    assert_eq!(ws.services["b"].env["PEER"], "http://${host:a}:80");
}

#[test]
fn the_service_file_says_where_each_guess_came_from() {
    let (_t, root) = tmp();
    examples_without_lks_files(&root);
    let found = detect(&root);
    let web = by_name(&found.services, "web");
    let text = write::files(&root, std::slice::from_ref(web)).remove(1).1;
    let expected = strings(&[
        "# Guessed by `lks init` from package.json, Dockerfile and k8s/*.yaml in web:",
        "# edit it as you see fit (`lks config check` checks it).",
        "name: web",
        "command: node server.js                 # package.json scripts.start",
        "env:",
        "  PORT: \"18080\"                         # manifest env",
        "  API_URL: \"http://${host:api}:18081\"   # manifest env",
        "deps: [api]                             # its env names them",
        "ports: [18080]                          # Dockerfile EXPOSE",
        "readiness:",
        "  http: \"http://127.0.0.1:18080/health\" # the manifest's readinessProbe",
        "k8s: [\"k8s/*.yaml\"]",
        "live_update:",
        "  restart: on-change",
        "  fall_back_on: [package.json, Dockerfile]",
    ]);
    assert_eq!(text.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn of_several_languages_the_dockerfile_s_wins_and_one_whose_rules_fail_gives_way() {
    let (_t, root) = tmp();
    // A Go library beside a Node.js app: the app is the service.
    put(&root, "app/go.mod", "module tools\n");
    put(&root, "app/tools.go", "package tools\n");
    put(&root, "app/package.json", r#"{"main": "server.js"}"#);
    put(&root, "app/server.js", "");
    // A Go program with a package.json for its front end's tooling, built
    // FROM node: the Dockerfile says which.
    put(&root, "ui/go.mod", "module ui\n");
    put(&root, "ui/main.go", "package main\n");
    put(&root, "ui/package.json", "{}");
    put(&root, "ui/index.js", "");
    put(&root, "ui/Dockerfile", "FROM node:20\n");
    let found = detect(&root);
    let app = by_name(&found.services, "app");
    assert_eq!(app.language.unwrap().1, "package.json");
    assert!(app.notes.is_empty(), "{:?}", app.notes);
    let ui = by_name(&found.services, "ui");
    assert_eq!(ui.command.as_ref().unwrap().value, ["node", "index.js"]);
}
