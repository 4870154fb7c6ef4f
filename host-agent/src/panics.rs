//! A panic is a bug in lks. In `lks up` it must not leave a service's loop
//! dead while everything else runs on, nor stop lks without stopping what it
//! started: the hook says what happened, and `lks up` stops every service as
//! on Ctrl-C and exits with an error.

use std::sync::OnceLock;
use tokio::sync::Notify;

fn notify() -> &'static Notify {
    static PANICKED: OnceLock<Notify> = OnceLock::new();
    PANICKED.get_or_init(Notify::new)
}

/// Installs the hook (keeping the default one, which prints where).
pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        crate::console::say(
            "lks: internal error (a panic, above): this is a bug in lks; \
             stopping everything it started",
        );
        notify().notify_one();
    }));
}

/// Resolves once something panicked (also when it happened before).
pub async fn happened() {
    notify().notified().await;
}

/// For tests of the above (debug builds only): `LKS_TEST_PANIC=MS` makes a
/// task of `lks up` panic MS milliseconds after the services were launched.
pub fn test_trigger() {
    if !cfg!(debug_assertions) {
        return;
    }
    let Some(ms) = std::env::var("LKS_TEST_PANIC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        panic!("LKS_TEST_PANIC: a panic on purpose, {ms} ms after launch");
    });
}
