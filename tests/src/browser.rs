//! A real headless Chromium for the web page's tests and benchmark, driven
//! over WebDriver (Debian's `chromium` and `chromium-driver`; `tests/run.sh`
//! installs them). The browser reaches loopback only: every other address
//! goes to a proxy on a closed loopback port, and its background services
//! (updates, sync, safe browsing) are off. chromedriver runs in a process
//! group of its own with the browser it starts: the whole group is stopped
//! at the end, also when a test fails.

use crate::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// chromedriver and the browser session it runs; both stop when dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// Where the tests' screenshots go (kept after the run, to look at).
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots")
}

fn require(binary: &str, package: &str) -> PathBuf {
    which(binary).unwrap_or_else(|| {
        panic!(
            "the browser tests need `{binary}`: install Debian's {package} (as root: apt-get install chromium chromium-driver); tests/run.sh does"
        )
    })
}

fn which(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(binary))
            .find(|p| p.is_file())
    })
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session.
    pub async fn start() -> Browser {
        let chromium = require("chromium", "chromium");
        let chromedriver = require("chromedriver", "chromium-driver");
        let port = free_port();
        let profile = tempfile::tempdir().unwrap();
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                // The browser's own temporary files go with its profile.
                .env("TMPDIR", profile.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("start chromedriver")
        };
        let mut driver = DriverGuard(Some(driver));
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up,
            "chromedriver did not listen on 127.0.0.1:{port} within 20 s"
        );
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1400,1000".into(),
            format!(
                "--user-data-dir={}",
                profile.path().join("profile").display()
            ),
            // Loopback only: anything else goes to a closed port.
            "--proxy-server=http://127.0.0.1:9".into(),
            "--proxy-bypass-list=127.0.0.1;localhost".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-default-apps".into(),
            "--disable-domain-reliability".into(),
            "--disable-client-side-phishing-detection".into(),
            "--metrics-recording-only".into(),
        ];
        let caps = json!({
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "pageLoadStrategy": "normal",
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session from chromedriver");
        Browser {
            client,
            driver: driver.0.take().unwrap(),
            _profile: profile,
        }
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns something truthy; returns it. Panics
    /// with `what` and a screenshot named after it when it does not.
    pub async fn wait_js(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let v = self.js(script, vec![]).await;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if start.elapsed() > timeout {
                let shot = self.screenshot(&format!("failed-{}", slug(what))).await;
                let text = self.js("return document.body.innerText", vec![]).await;
                panic!(
                    "{what}: not within {timeout:?} (screenshot {})\npage text:\n{}",
                    shot.display(),
                    text.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Clicks the element `css` finds.
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Types `text` into the element `css` finds.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    /// Saves a screenshot of the page as `target/screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        match self.client.screenshot().await {
            Ok(png) => std::fs::write(&path, png).unwrap(),
            Err(e) => eprintln!("no screenshot {name}: {e}"),
        }
        path
    }

    /// Ends the session, then chromedriver and the browser.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    /// chromedriver's pid, which is its process group's (for a signal
    /// handler's clean-up: [`stop_group`]).
    pub fn group(&self) -> u32 {
        self.driver.id()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        stop_group(&mut self.driver);
    }
}

/// Stops chromedriver and its browser if the session never came.
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            stop_group(c);
        }
    }
}

/// Stops chromedriver's process group (it and the browser it started):
/// SIGTERM, up to 5 s, SIGKILL; reaps chromedriver.
fn stop_group(driver: &mut Child) {
    kill_group(driver.id());
    stop_child(driver, Duration::from_secs(1));
}

/// SIGTERM to the process group `pgid`, up to 5 s for it to end, SIGKILL.
pub fn kill_group(pgid: u32) {
    use rustix::process::{Pid, Signal, kill_process_group};
    let Some(pid) = Pid::from_raw(pgid as i32) else {
        return;
    };
    let _ = kill_process_group(pid, Signal::TERM);
    if !wait_until(Duration::from_secs(5), || {
        live_group_members(pgid).is_empty()
    }) {
        let _ = kill_process_group(pid, Signal::KILL);
    }
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The web page's address from a running `lks up`'s `lks: web UI at URL` line.
pub fn ui_url(up: &mut Up) -> String {
    let line = up.wait(
        &["lks: web UI at http://127.0.0.1:"],
        Duration::from_secs(30),
    );
    line.split("web UI at ")
        .nth(1)
        .expect("a URL")
        .trim()
        .to_string()
}
