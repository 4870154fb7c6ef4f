//! The web page of `lks up`, in a real headless Chromium over WebDriver,
//! against the real `lks up` on the local runtime: the example services and
//! their status, an edit seen as an update within a second, a crash shown
//! as an error with its log, the buttons (trigger, restart, disable and
//! enable, manual mode), the log search, keyboard shortcuts, and actions
//! refused without the run's token. Screenshots go to target/screenshots/.

use lks_e2e::*;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const LONG: Duration = Duration::from_secs(60);

/// The web and api examples, and a service that crashes after a line.
fn workspace(ws: &std::path::Path) {
    copy_examples(ws, &["worker"]);
    write(
        ws,
        "lks.yaml",
        "services:\n  \
         - web/lks.service.yaml\n  \
         - api/lks.service.yaml\n  \
         - name: crasher\n    dir: crasher\n    command: sh -c \"echo about to crash, boom; exit 3\"\n    \
           live_update:\n      sync: [{local: ., remote: .}]\n\
         aliases:\n  frontend: [web]\n",
    );
    write(ws, "crasher/README", "crashes\n");
}

/// JS: the text of a service row's cell.
fn cell(service: &str, cell: &str) -> String {
    format!(
        "const r = document.querySelector('tr[data-service=\"{service}\"] td.{cell}'); return r ? r.textContent : null;"
    )
}

/// JS: whether a service row's badge in `cell` says `phase`.
fn badge_is(service: &str, cell: &str, phase: &str) -> String {
    format!(
        "const b = document.querySelector('tr[data-service=\"{service}\"] td.{cell} .badge'); return !!b && b.textContent === '{phase}';"
    )
}

/// JS: whether a service row's cell contains `text`.
fn cell_has(service: &str, cell: &str, text: &str) -> String {
    format!(
        "const r = document.querySelector('tr[data-service=\"{service}\"] td.{cell}'); return !!r && r.textContent.includes('{text}');"
    )
}

/// The app pid the page shows for `service`.
async fn page_pid(b: &Browser, service: &str) -> u32 {
    let text = b.js(&cell(service, "where"), vec![]).await;
    pids_said(text.as_str().unwrap_or(""))
        .last()
        .copied()
        .unwrap_or(0)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_and_steers_the_example_services() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    workspace(ws);
    let mut up = Up::start(ws, &["--runtime", "local"]);
    let url = ui_url(&mut up);
    let b = Browser::start().await;
    b.client.goto(&url).await.unwrap();

    // Listed, grouped, with their status.
    b.wait_js("api ready", &badge_is("api", "runtime", "ready"), LONG)
        .await;
    b.wait_js("web ready", &badge_is("web", "runtime", "ready"), LONG)
        .await;
    let groups = b
        .js(
            "return [...document.querySelectorAll('tr.group')].map(g => g.dataset.group)",
            vec![],
        )
        .await;
    assert_eq!(groups, json!(["services", "frontend"]), "grouped by alias");
    let endpoints = b.js(&cell("web", "endpoints"), vec![]).await;
    assert_eq!(endpoints, json!(":18080"));
    // A crash: an error with its log.
    b.wait_js(
        "crash loop",
        &badge_is("crasher", "runtime", "crash loop"),
        LONG,
    )
    .await;
    let errors = b
        .js(
            "return document.getElementById('errors').textContent",
            vec![],
        )
        .await;
    assert!(
        errors.as_str().unwrap().starts_with('1'),
        "header: {errors}"
    );
    b.click("tr[data-service=\"crasher\"] td.name").await;
    b.wait_js(
        "the crasher's log",
        "return document.getElementById('log').textContent.includes('about to crash, boom') && document.getElementById('log-title').textContent === 'crasher'",
        Duration::from_secs(10),
    )
    .await;
    b.screenshot("01-listed-with-a-crash").await;

    // An edit: seen as an update within a second.
    b.click("#all-logs").await;
    let server = ws.join("web/server.js");
    let text = std::fs::read_to_string(&server).unwrap();
    b.js(
        "window.seenAt = 0; const td = document.querySelector('tr[data-service=\"web\"] td.update'); \
         new MutationObserver(() => { if (!window.seenAt && td.textContent.includes('server.js')) window.seenAt = Date.now(); }) \
           .observe(td, {subtree: true, childList: true, characterData: true});",
        vec![],
    )
    .await;
    let written = now_ms();
    std::fs::write(
        &server,
        text.replace("hello from web", "hello from the edited web"),
    )
    .unwrap();
    let seen = b
        .wait_js(
            "the edit shown",
            "return window.seenAt",
            Duration::from_secs(10),
        )
        .await
        .as_u64()
        .unwrap();
    let ms = seen.saturating_sub(written);
    println!("edit -> shown in the page: {ms} ms");
    assert!(ms <= 1000, "the edit showed after {ms} ms");
    b.wait_js(
        "web ready again",
        &badge_is("web", "runtime", "ready"),
        LONG,
    )
    .await;
    b.screenshot("02-after-an-edit").await;

    // The log search: text, then a regular expression.
    b.type_into("#search", "listening on").await;
    b.wait_js(
        "search results",
        "return document.querySelectorAll('#log mark').length > 0 && /matching line/.test(document.getElementById('matches').textContent)",
        Duration::from_secs(5),
    )
    .await;
    let lines = b
        .js(
            "return [...document.querySelectorAll('#log .l')].map(l => l.textContent)",
            vec![],
        )
        .await;
    let lines: Vec<&str> = lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.contains("listening on")),
        "{lines:?}"
    );
    b.click("#regex").await;
    b.type_into("#search", "web listening on \\d+$").await;
    b.wait_js(
        "regex results",
        "const ls = [...document.querySelectorAll('#log .l')]; return ls.length > 0 && ls.every(l => /web listening on \\d+$/.test(l.textContent))",
        Duration::from_secs(5),
    )
    .await;
    b.screenshot("03-log-search").await;
    b.type_into("#search", "").await;

    // Trigger: api started anew (a new app pid).
    let before = page_pid(&b, "api").await;
    assert!(before > 0 && process_alive(before));
    b.click("tr[data-service=\"api\"] button[data-action=\"trigger\"]")
        .await;
    b.wait_js(
        "api started anew",
        &format!("const t = document.querySelector('tr[data-service=\"api\"] td.where').textContent; return !t.includes('pid {before}') && /pid \\d+/.test(t) && document.querySelector('tr[data-service=\"api\"] td.runtime .badge').textContent === 'ready'"),
        LONG,
    )
    .await;
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(before)),
        "the old api app still runs"
    );

    // Restart the app alone: a new pid, no sync.
    let before = page_pid(&b, "web").await;
    b.click("tr[data-service=\"web\"] button[data-action=\"restart\"]")
        .await;
    b.wait_js(
        "web's app restarted",
        &format!("const t = document.querySelector('tr[data-service=\"web\"] td.where').textContent; return !t.includes('pid {before}') && document.querySelector('tr[data-service=\"web\"] td.runtime').textContent.includes('ready')"),
        LONG,
    )
    .await;

    // Disable stops web (its app is gone); enable starts it again.
    let app = page_pid(&b, "web").await;
    b.click("tr[data-service=\"web\"] button[data-action=\"disable\"]")
        .await;
    b.wait_js(
        "web disabled",
        &badge_is("web", "runtime", "disabled"),
        LONG,
    )
    .await;
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(app)),
        "web's app {app} still runs"
    );
    assert!(http_get(18080, "/health").is_none(), "web still answers");
    b.screenshot("04-disabled").await;
    b.click("tr[data-service=\"web\"] button[data-action=\"enable\"]")
        .await;
    b.wait_js("web enabled", &badge_is("web", "runtime", "ready"), LONG)
        .await;
    assert!(
        http_get(18080, "/health").is_some(),
        "web does not answer after enable"
    );

    // Manual mode: an edit waits for the trigger.
    b.click("tr[data-service=\"web\"] button[data-action=\"manual\"]")
        .await;
    b.wait_js(
        "manual mode on",
        "return !!document.querySelector('tr[data-service=\"web\"] button[data-action=\"auto\"].on')",
        Duration::from_secs(10),
    )
    .await;
    std::fs::write(
        &server,
        text.replace("hello from web", "hello from the manual web"),
    )
    .unwrap();
    b.wait_js(
        "the change waits",
        &cell_has("web", "update", "wait for a trigger"),
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body = http_get(18080, "/").unwrap_or_default();
    assert!(
        body.contains("hello from the edited web"),
        "applied without a trigger: {body}"
    );
    b.screenshot("05-manual-mode-waiting").await;
    b.click("tr[data-service=\"web\"] button[data-action=\"trigger\"]")
        .await;
    assert!(
        wait_until(LONG, || http_get(18080, "/")
            .is_some_and(|b| b.contains("hello from the manual web"))),
        "the trigger did not apply the waiting change"
    );

    // Without the token, the page's origin cannot act.
    let refused = b
        .client
        .execute_async(
            "const done = arguments[0]; fetch('/api/disable?service=api', {method: 'POST'}).then(r => done(r.status));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(refused, json!(401));
    let wrong = b
        .client
        .execute_async(
            "const done = arguments[0]; fetch('/api/disable?service=api', {method: 'POST', headers: {Authorization: 'Bearer nope'}}).then(r => done(r.status));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(wrong, json!(401));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        b.js(&cell("api", "runtime"), vec![]).await,
        Value::String("ready".into()),
        "api was disabled without the token"
    );
    b.screenshot("06-end").await;
    b.close().await;
    assert!(up.terminate().success());
}

/// A page of its own for the keyboard and the run's end: two plain services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keyboard_steers_and_the_page_says_when_the_run_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    write(
        ws,
        "lks.yaml",
        "services:\n  \
         - name: one\n    command: sh -c \"echo one says hi; exec sleep 1000\"\n    live_update:\n      sync: [{local: ., remote: .}]\n  \
         - name: two\n    command: sh -c \"echo two says hi; exec sleep 1000\"\n    live_update:\n      sync: [{local: ., remote: .}]\n",
    );
    let port = free_port();
    let mut up = Up::start(ws, &["--runtime", "local", "--ui-port", &port.to_string()]);
    let url = ui_url(&mut up);
    assert_eq!(url, format!("http://127.0.0.1:{port}/"));
    let b = Browser::start().await;
    b.client.goto(&url).await.unwrap();
    b.wait_js("two ready", &badge_is("two", "runtime", "ready"), LONG)
        .await;
    b.wait_js("one ready", &badge_is("one", "runtime", "ready"), LONG)
        .await;
    let body = b
        .client
        .find(fantoccini::Locator::Css("body"))
        .await
        .unwrap();
    // j selects the first service, Enter shows its logs, m switches manual mode.
    body.send_keys("j").await.unwrap();
    body.send_keys("\u{E007}").await.unwrap();
    b.wait_js(
        "one's logs",
        "return document.getElementById('log-title').textContent === 'one' && document.getElementById('log').textContent.includes('one says hi') && !document.getElementById('log').textContent.includes('two says hi')",
        Duration::from_secs(10),
    )
    .await;
    body.send_keys("m").await.unwrap();
    b.wait_js(
        "manual mode by key",
        "return !!document.querySelector('tr[data-service=\"one\"] button[data-action=\"auto\"].on')",
        Duration::from_secs(10),
    )
    .await;
    let pid = page_pid(&b, "one").await;
    body.send_keys("r").await.unwrap();
    b.wait_js(
        "restart by key",
        &format!("const t = document.querySelector('tr[data-service=\"one\"] td.where').textContent; return !t.includes('pid {pid}') && /pid \\d+/.test(t)"),
        LONG,
    )
    .await;
    // / focuses the search.
    body.send_keys("/").await.unwrap();
    let focused = b.js("return document.activeElement.id", vec![]).await;
    assert_eq!(focused, json!("search"));
    b.screenshot("10-keyboard").await;
    assert!(up.terminate().success());
    b.wait_js(
        "the run's end said",
        "return document.getElementById('connection').textContent === 'the run ended'",
        Duration::from_secs(10),
    )
    .await;
    b.close().await;
}
