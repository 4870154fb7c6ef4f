//! Steering a running service's live updates by hand: manual trigger mode
//! (changes wait until triggered), "apply the waiting changes now" and
//! "restart the app only". One [`Steer`] per service outlives the service's
//! restarts (the fleet keeps it); the service's loop watches its [`Asks`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::watch;

/// What has been asked of a service so far. The counters only grow: a loop
/// that has seen `release` 2 acts when it becomes 3.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asks {
    /// Changes wait until triggered.
    pub manual: bool,
    /// How many times the waiting changes were asked to be applied.
    pub release: u64,
    /// How many times the app alone was asked to restart.
    pub restart: u64,
}

/// The hand on one service.
#[derive(Debug)]
pub struct Steer {
    asks: watch::Sender<Asks>,
    /// Whether its loop is live updating now (it can restart the app alone
    /// and hold changes).
    live: AtomicBool,
    /// How many changed paths wait for a trigger.
    held: AtomicUsize,
}

impl Default for Steer {
    fn default() -> Steer {
        Steer {
            asks: watch::channel(Asks::default()).0,
            live: AtomicBool::new(false),
            held: AtomicUsize::new(0),
        }
    }
}

impl Steer {
    /// What its loop watches.
    pub fn subscribe(&self) -> watch::Receiver<Asks> {
        self.asks.subscribe()
    }

    /// Switches manual trigger mode on or off (off applies what waits).
    pub fn set_manual(&self, manual: bool) {
        self.asks.send_modify(|a| {
            if a.manual && !manual {
                a.release += 1;
            }
            a.manual = manual;
        });
    }

    /// Asks for the waiting changes to be applied now.
    pub fn release(&self) {
        self.asks.send_modify(|a| a.release += 1);
    }

    /// Asks for the app alone to restart.
    pub fn restart_app(&self) {
        self.asks.send_modify(|a| a.restart += 1);
    }

    /// Said by the loop: it is live updating (or not any more).
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::SeqCst);
        if !live {
            self.held.store(0, Ordering::SeqCst);
        }
    }

    /// Whether the loop is live updating now.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    /// Said by the loop: this many changed paths wait.
    pub fn set_held(&self, paths: usize) {
        self.held.store(paths, Ordering::SeqCst);
    }

    /// How many changed paths wait for a trigger.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

/// Sets the loop's live flag back when the loop ends, however it ends.
pub struct LiveGuard<'a>(&'a Steer);

impl<'a> LiveGuard<'a> {
    /// Marks `steer` live until dropped.
    pub fn new(steer: &'a Steer) -> LiveGuard<'a> {
        steer.set_live(true);
        LiveGuard(steer)
    }
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0.set_live(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaving_manual_mode_releases_what_waits() {
        let s = Steer::default();
        let rx = s.subscribe();
        s.set_manual(true);
        assert_eq!(rx.borrow().release, 0);
        s.set_manual(false);
        assert_eq!(
            *rx.borrow(),
            Asks {
                manual: false,
                release: 1,
                restart: 0
            }
        );
        s.set_manual(false);
        assert_eq!(
            rx.borrow().release,
            1,
            "already automatic: nothing to release"
        );
    }

    #[test]
    fn the_live_flag_falls_with_its_guard() {
        let s = Steer::default();
        {
            let _g = LiveGuard::new(&s);
            s.set_held(3);
            assert!(s.is_live());
        }
        assert!(!s.is_live());
        assert_eq!(s.held(), 0);
    }
}
