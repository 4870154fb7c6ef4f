//! The launch order of `lks up TARGETS`.

use super::Fixture;
use crate::config::Workspace;

/// web -> api -> (db, cache); api also -> queue via the alias `backing`.
fn bank() -> Workspace {
    let f = Fixture::new();
    f.file(
        "lks.yaml",
        &[
            "services:",
            "  - {name: web, deps: [api]}",
            "  - {name: api, deps: [db, backing]}",
            "  - {name: db}",
            "  - {name: cache}",
            "  - {name: queue}",
            "  - {name: price, deps: [db]}",
            "  - {name: lonely}",
            "aliases:",
            "  backing: [cache, queue]",
            "  appliances: [db, backing]",
            "  front: [web, price]",
        ],
    );
    f.ok()
}

fn resolve(ws: &Workspace, targets: &[&str]) -> Vec<String> {
    let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
    ws.resolve(&targets).unwrap()
}

#[test]
fn dependencies_come_first_transitively() {
    let ws = bank();
    assert_eq!(
        resolve(&ws, &["web"]),
        ["db", "cache", "queue", "api", "web"]
    );
    assert_eq!(resolve(&ws, &["db"]), ["db"]);
}

#[test]
fn aliases_expand_recursively_in_the_order_written() {
    let ws = bank();
    assert_eq!(resolve(&ws, &["appliances"]), ["db", "cache", "queue"]);
    assert_eq!(
        resolve(&ws, &["front"]),
        ["db", "cache", "queue", "api", "web", "price"]
    );
}

#[test]
fn each_service_is_launched_once_in_target_order() {
    let ws = bank();
    assert_eq!(
        resolve(&ws, &["price", "appliances", "web", "db"]),
        ["db", "price", "cache", "queue", "api", "web"]
    );
    // Deterministic: the same answer every time.
    assert_eq!(resolve(&ws, &["front"]), resolve(&ws, &["front"]));
}

#[test]
fn no_targets_means_every_service() {
    let ws = bank();
    assert_eq!(
        resolve(&ws, &[]),
        ["db", "cache", "queue", "api", "lonely", "price", "web"]
    );
}

#[test]
fn an_unknown_target_gets_a_did_you_mean() {
    let ws = bank();
    let err = ws.resolve(&["pricee".to_string()]).unwrap_err().to_string();
    assert_eq!(
        err,
        r#"unknown service or alias "pricee"; did you mean "price"?"#
    );
    let err = ws.resolve(&["zzz".to_string()]).unwrap_err().to_string();
    assert_eq!(err, r#"unknown service or alias "zzz""#);
}
