//! Each kind of mistake, with the full message the user sees.

use super::Fixture;

/// A workspace whose only service is the file `services/web/lks.service.yaml`
/// with `lines`.
fn web(lines: &[&str]) -> Fixture {
    let f = Fixture::new();
    f.file(
        "lks.yaml",
        &["services:", "  - services/*/lks.service.yaml"],
    );
    f.file("services/web/lks.service.yaml", lines);
    f
}

#[test]
fn an_unknown_key_is_reported_with_a_did_you_mean() {
    let f = web(&["name: web", "command: node server.js", "dep: [db]"]);
    assert_eq!(
        f.errors(),
        [
            r#"services/web/lks.service.yaml:3:1: unknown key "dep" in service "web"; did you mean "deps"?"#
        ]
    );
}

#[test]
fn an_unknown_key_far_from_any_lists_the_known_ones() {
    let f = web(&[
        "name: web",
        "build:",
        "  dockerfile: Dockerfile",
        "  platform: linux/amd64",
    ]);
    f.file("services/web/Dockerfile", &["FROM scratch"]);
    assert_eq!(
        f.errors(),
        [
            r#"services/web/lks.service.yaml:4:3: unknown key "platform" in build of service "web"; expected one of: context, dockerfile, args, target, local"#
        ]
    );
}

#[test]
fn unknown_keys_are_caught_at_every_level() {
    let f = Fixture::new();
    f.file(
        "lks.yaml",
        &[
            "servics: []",
            "cluster: {name: dev, kubernetes_versions: '1.31'}",
            "services:",
            "  - name: web",
            "    live_update:",
            "      sync: [{local: ., remot: .}]",
            "      run: [{cmd: make, triggers: ['*.c']}]",
        ],
    );
    assert_eq!(
        f.errors(),
        [
            r#"lks.yaml:1:1: unknown key "servics" in the workspace; did you mean "services"?"#,
            r#"lks.yaml:2:22: unknown key "kubernetes_versions" in cluster; did you mean "kubernetes_version"?"#,
            r#"lks.yaml:6:15: live_update.sync[0] of service "web" has no "remote" (required)"#,
            r#"lks.yaml:6:25: unknown key "remot" in live_update.sync[0] of service "web"; did you mean "remote"?"#,
            r#"lks.yaml:7:25: unknown key "triggers" in live_update.run[0] of service "web"; did you mean "trigger"?"#,
        ]
    );
}

#[test]
fn a_string_where_a_list_is_expected_is_a_wrong_type() {
    let f = web(&["name: web", "ports: \"8080\"", "deps: db"]);
    assert_eq!(
        f.errors(),
        [
            r#"services/web/lks.service.yaml:2:8: ports of service "web": expected a list of ports, found "8080""#,
            r#"services/web/lks.service.yaml:3:7: deps of service "web": expected a list of strings, found "db""#,
        ]
    );
}

#[test]
fn an_unknown_restart_policy_is_a_wrong_type() {
    let f = web(&["name: web", "live_update:", "  restart: yes"]);
    assert_eq!(
        f.errors(),
        [
            r#"services/web/lks.service.yaml:3:12: live_update.restart of service "web": expected "on-change", "never" or {on-change: [globs]}, found "yes""#
        ]
    );
}

#[test]
fn bad_values_are_named_with_what_is_wrong() {
    let f = web(&[
        "name: Web",
        "ports: [0, 8080, '8080', http]",
        "command: \"node 'server.js\"",
        "env: {PORT: 8080, DEBUG: true, EMPTY: }",
        "readiness: {http: 'localhost:8080', timeout: 30}",
    ]);
    assert_eq!(
        f.errors(),
        [
            r#"services/web/lks.service.yaml:1:7: name of the service: "Web" is not a valid name (use lowercase letters, digits and '-')"#,
            r#"services/web/lks.service.yaml:2:9: ports[0] of the service: port 0 is out of range (1 to 65535)"#,
            r#"services/web/lks.service.yaml:2:18: ports of the service: port 8080 is listed twice"#,
            r#"services/web/lks.service.yaml:2:26: ports[3] of the service: "http" is not a port number"#,
            r#"services/web/lks.service.yaml:3:10: command of the service: cannot split into words: missing closing quote"#,
            r#"services/web/lks.service.yaml:4:32: env.EMPTY of the service: no value (write "" for an empty string)"#,
            r#"services/web/lks.service.yaml:5:19: readiness.http of the service: "localhost:8080" is not an http:// or https:// URL"#,
            r#"services/web/lks.service.yaml:5:46: readiness.timeout of the service: "30" has no unit (write e.g. "30s" or "30ms")"#,
        ]
    );
}

#[test]
fn a_bad_glob_is_pointed_at() {
    let f = web(&[
        "name: web",
        "live_update:",
        "  fall_back_on: [go.mod, 'src/[a-']",
        "  ignore: ['*.tmp', 'src/{a,b']",
        "  run:",
        "    - cmd: go build ./...",
        "      trigger: ['**/*.go', ./go.sum]",
    ]);
    assert_eq!(
        f.errors(),
        [
            r#"services/web/lks.service.yaml:3:26: live_update.fall_back_on of service "web": bad glob "src/[a-": unclosed character class; missing ']'"#,
            r#"services/web/lks.service.yaml:4:21: live_update.ignore of service "web": bad glob "src/{a,b": unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?)"#,
            r#"services/web/lks.service.yaml:7:28: live_update.run[0].trigger of service "web": bad glob "./go.sum": globs are relative paths: write it without a leading '/', './' or '../'"#,
        ]
    );
}

#[test]
fn missing_files_and_directories_are_reported_where_they_are_named() {
    let f = Fixture::new();
    f.file(
        "lks.yaml",
        &[
            "services:",
            "  - services/api/lks.service.yaml",
            "  - plugins/*/lks.service.yaml",
            "  - services/web/lks.service.yaml",
        ],
    );
    f.file(
        "services/web/lks.service.yaml",
        &[
            "name: web",
            "dir: app",
            "build: {context: docker}",
            "live_update:",
            "  sync: [{local: ../src, remote: src}]",
        ],
    );
    assert_eq!(
        f.errors(),
        [
            r#"lks.yaml:2:5: services[0]: "services/api/lks.service.yaml" does not exist"#,
            r#"lks.yaml:3:5: "plugins/*/lks.service.yaml" matches no file"#,
            r#"services/web/lks.service.yaml:2:6: dir of service "web": "app" does not exist (looked for services/web/app)"#,
            r#"services/web/lks.service.yaml:3:18: build.context of service "web": "docker" does not exist (looked for services/web/docker)"#,
            // A sync folder may be missing: a host-side build makes it later.
        ]
    );
}

#[test]
fn a_dockerfile_must_exist_only_for_a_docker_build() {
    // No build: nothing to check (the service may only ever be pulled).
    let f = web(&["name: web"]);
    f.ok();
    // A local-only build needs no Dockerfile.
    let f = web(&["name: web", "build:", "  local: [npm install]"]);
    assert_eq!(f.ok().services["web"].build.local, [["npm", "install"]]);
    // A docker build does: the default one, or the one named.
    let f = web(&["name: web", "build:", "  target: dev"]);
    assert_eq!(
        f.errors(),
        [
            r#"services/web/lks.service.yaml:2:1: build.dockerfile of service "web": "Dockerfile" does not exist (looked for services/web/Dockerfile)"#
        ]
    );
    let f = web(&["name: web", "build: {dockerfile: docker/Dockerfile.dev}"]);
    assert_eq!(
        f.errors(),
        [
            r#"services/web/lks.service.yaml:2:21: build.dockerfile of service "web": "docker/Dockerfile.dev" does not exist (looked for services/web/docker/Dockerfile.dev)"#
        ]
    );
}

#[test]
fn a_dependency_cycle_is_named() {
    let f = Fixture::new();
    f.file(
        "lks.yaml",
        &[
            "services:",
            "  - {name: a, deps: [b]}",
            "  - {name: b, deps: [c]}",
            "  - {name: c, deps: [a]}",
            "  - {name: d, deps: [d]}",
        ],
    );
    assert_eq!(
        f.errors(),
        [
            "lks.yaml:2:22: dependency cycle: a -> b -> c -> a",
            "lks.yaml:5:22: dependency cycle: d -> d",
        ]
    );
}

#[test]
fn a_cycle_through_an_alias_is_a_dependency_cycle() {
    let f = Fixture::new();
    f.file(
        "lks.yaml",
        &[
            "services:",
            "  - {name: api, deps: [backing]}",
            "  - {name: db, deps: [api]}",
            "aliases:",
            "  backing: [db]",
            "  loop-a: [loop-b]",
            "  loop-b: [loop-a]",
        ],
    );
    assert_eq!(
        f.errors(),
        [
            "lks.yaml:2:24: dependency cycle: api -> db -> api",
            "lks.yaml:6:12: alias cycle: loop-a -> loop-b -> loop-a",
        ]
    );
}

#[test]
fn an_unknown_dependency_or_alias_member_gets_a_did_you_mean() {
    let f = Fixture::new();
    f.file(
        "lks.yaml",
        &[
            "services:",
            "  - {name: price, deps: [postgress, redis]}",
            "  - {name: postgres}",
            "aliases:",
            "  appliances: [postgres, kafka]",
            "  all: [price, appliance]",
        ],
    );
    assert_eq!(
        f.errors(),
        [
            r#"lks.yaml:2:26: deps of service "price": "postgress" is not a service or alias; did you mean "postgres"?"#,
            r#"lks.yaml:2:37: deps of service "price": "redis" is not a service or alias"#,
            r#"lks.yaml:5:26: alias "appliances": "kafka" is not a service or alias"#,
            r#"lks.yaml:6:16: alias "all": "appliance" is not a service or alias; did you mean "appliances"?"#,
        ]
    );
}

#[test]
fn a_service_defined_twice_names_both_places() {
    let f = Fixture::new();
    f.file(
        "lks.yaml",
        &[
            "services:",
            "  - name: web",
            "  - services/web/lks.service.yaml",
        ],
    );
    f.file(
        "services/web/lks.service.yaml",
        &["# the web front", "name: web"],
    );
    assert_eq!(
        f.errors(),
        [
            r#"services/web/lks.service.yaml:2:7: service "web" is defined twice (first at lks.yaml:2:11)"#
        ]
    );
}

#[test]
fn an_alias_may_not_shadow_a_service() {
    let f = Fixture::new();
    f.file(
        "lks.yaml",
        &["services: [{name: db}]", "aliases:", "  db: [db]"],
    );
    assert_eq!(
        f.errors(),
        [r#"lks.yaml:3:3: alias "db" has the name of a service (defined at lks.yaml:1:19)"#]
    );
}

#[test]
fn a_remote_outside_the_root_is_refused() {
    let f = web(&[
        "name: web",
        "live_update:",
        "  root: /app",
        "  sync:",
        "    - {local: ., remote: /application}",
        "    - {local: ., remote: ../etc}",
        "    - {local: ., remote: /app/../etc}",
    ]);
    assert_eq!(
        f.errors(),
        [
            r#"services/web/lks.service.yaml:5:26: live_update.sync[0].remote of service "web": "/application" is outside the root "/app""#,
            r#"services/web/lks.service.yaml:6:26: live_update.sync[1].remote of service "web": "../etc" is outside the root "/app""#,
            r#"services/web/lks.service.yaml:7:26: live_update.sync[2].remote of service "web": "/app/../etc" is outside the root "/app""#,
        ]
    );
}

#[test]
fn yaml_syntax_errors_duplicate_keys_and_second_documents_are_positioned() {
    let f = web(&["name: web", "ports: [80", "deps: []"]);
    assert_eq!(
        f.errors(),
        ["services/web/lks.service.yaml:3:5: illegal placement of ':' indicator"]
    );
    let f = web(&["name: web", "ports: [80]", "name: api"]);
    assert_eq!(
        f.errors(),
        [r#"services/web/lks.service.yaml:3:1: duplicate key "name""#]
    );
    // A colon and a space in an unquoted value: how to write it is said.
    let f = web(&["name: web", r#"command: sh -c "echo a: b""#]);
    let errors = f.errors();
    assert!(
        errors.len() == 1
            && errors[0].starts_with("services/web/lks.service.yaml:2:")
            && errors[0].contains("must be quoted"),
        "{errors:?}"
    );
    let f = web(&["---", "name: web", "---", "name: api"]);
    assert_eq!(
        f.errors(),
        [
            "services/web/lks.service.yaml:3:1: a second YAML document: lks reads one document a file"
        ]
    );
    let f = web(&["name: &n web", "command: *n"]);
    assert_eq!(
        f.errors(),
        ["services/web/lks.service.yaml:1:10: anchors and aliases are not supported"]
    );
}

#[test]
fn every_error_of_every_file_is_reported_file_by_file() {
    let f = Fixture::new();
    f.file(
        "lks.yaml",
        &[
            "services:",
            "  - services/*.yaml",
            "  - {name: db, ports: [99999]}",
            "registry: http://localhost:5000",
        ],
    );
    f.file(
        "services/a.yaml",
        &["name: a", "deps: [b, cache]", "envv: {}"],
    );
    f.file("services/b.yaml", &["name: b", "deps: [a]", "ports: 80"]);
    assert_eq!(
        f.errors(),
        [
            r#"lks.yaml:3:24: ports[0] of service "db": port 99999 is out of range (1 to 65535)"#,
            r#"lks.yaml:4:11: registry: "http://localhost:5000" is not host:port (e.g. "localhost:5000")"#,
            "services/a.yaml:2:8: dependency cycle: a -> b -> a",
            r#"services/a.yaml:2:11: deps of service "a": "cache" is not a service or alias"#,
            r#"services/a.yaml:3:1: unknown key "envv" in service "a"; did you mean "env"?"#,
            r#"services/b.yaml:3:8: ports of service "b": expected a list of ports, found "80""#,
        ]
    );
    // And they print one a line.
    let shown = f.load().unwrap_err().to_string();
    assert_eq!(shown.lines().count(), 6, "{shown}");
}

#[test]
fn required_keys_are_required() {
    let f = Fixture::new();
    f.file(
        "lks.yaml",
        &["aliases: {}", "cluster: {kubernetes_version: 1.31.0}"],
    );
    assert_eq!(
        f.errors(),
        [
            r#"lks.yaml:1:1: the workspace has no "services" (required)"#,
            r#"lks.yaml:2:11: cluster has no "name" (required)"#,
        ]
    );
    let f = web(&["command: [node, server.js]"]);
    assert_eq!(
        f.errors(),
        [r#"services/web/lks.service.yaml:1:1: the service has no "name" (required)"#]
    );
}

#[test]
fn readiness_takes_exactly_one_check() {
    let f = web(&[
        "name: web",
        "readiness: {http: 'http://localhost/', tcp: 'localhost:80'}",
    ]);
    assert_eq!(
        f.errors(),
        [
            r#"services/web/lks.service.yaml:2:40: readiness of service "web": only one of http, tcp and exec may be given"#
        ]
    );
    let f = web(&["name: web", "readiness: {period: 1s}"]);
    assert_eq!(
        f.errors(),
        [
            r#"services/web/lks.service.yaml:2:12: readiness of service "web": needs one of http, tcp or exec"#
        ]
    );
}

#[test]
fn a_host_reference_to_an_unknown_service_gets_a_did_you_mean() {
    let f = web(&[
        "name: web",
        "command: node server.js",
        "env:",
        "  API_URL: http://${host:webb}:8080",
    ]);
    assert_eq!(
        f.errors(),
        [
            r#"services/web/lks.service.yaml:4:12: ${host:...} in the env of service "web": "webb" is not a service or alias; did you mean "web"?"#
        ]
    );
}

#[test]
fn host_references_are_substituted_per_runtime() {
    let sub = |v: &str| crate::config::substitute_hosts(v, |n| format!("<{n}>"));
    assert_eq!(
        sub("http://${host:api}:80/${host:db}"),
        "http://<api>:80/<db>"
    );
    assert_eq!(sub("no refs"), "no refs");
    assert_eq!(sub("broken ${host:api"), "broken ${host:api");
    assert_eq!(crate::config::host_refs("${host:a}${host:b}"), ["a", "b"]);
}

#[test]
fn kube_settings_are_checked_with_their_positions() {
    let f = Fixture::new();
    f.file(
        "lks.yaml",
        &[
            "services: []",
            "kube:",
            "  namespace: Pr_42",
            "  allow_context: [staging]",
            "  context: ''",
        ],
    );
    let errors = f.errors();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].starts_with("lks.yaml:3:14: ") && errors[0].contains("lowercase"),
        "{errors:#?}"
    );
    assert_eq!(
        errors[1],
        r#"lks.yaml:4:3: unknown key "allow_context" in kube; did you mean "allow_contexts"?"#
    );
    assert!(errors[2].starts_with("lks.yaml:5:12: "), "{errors:#?}");
}

#[test]
fn sync_mappings_whose_remotes_nest_are_refused_at_the_later_one() {
    let f = web(&[
        "name: web",
        "live_update:",
        "  sync:",
        "    - {local: ., remote: app}",
        "    - {local: ., remote: other}",
        "    - {local: ., remote: /app/app/static}",
    ]);
    assert_eq!(
        f.errors(),
        [
            r#"services/web/lks.service.yaml:6:7: live_update.sync[2] of service "web": its remote "app/static" and the remote "app" of mapping 0 overlap on the agent; give each mapping its own remote directory (one mirror would delete the other's files)"#
        ]
    );
}
