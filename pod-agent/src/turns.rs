//! Whose turn it is to apply a batch. Batches are applied one at a time, in
//! the order they arrive, each with its follow-up (steps, restart). A batch
//! whose client has sent nothing for [`YIELD_AFTER`] while another batch
//! waits gives up its turn: its client is almost surely gone (a host that
//! reconnected after its tunnel froze sends the next batch), and a batch
//! without its commit applies nothing, so nothing is lost by ending it.
//! Otherwise one stalled stream would hold every other batch until the
//! idle timeout or the keepalive ended it.

use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard};

/// How long a receiving batch may be silent before a waiting batch takes
/// its turn.
pub const YIELD_AFTER: Duration = Duration::from_secs(3);

/// How often a waiting batch looks at the one receiving.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// The turns of one agent.
#[derive(Clone, Default)]
pub struct Turns {
    lock: Arc<Mutex<()>>,
    receiving: Arc<SyncMutex<Option<Arc<Receiving>>>>,
}

/// A batch still receiving its operations: when it last heard from its
/// client, and how it is asked to yield.
pub struct Receiving {
    last_message: SyncMutex<Instant>,
    yield_now: Notify,
}

impl Receiving {
    /// Its client sent a message.
    pub fn heard(&self) {
        *self.last_message.lock().unwrap() = Instant::now();
    }

    /// Resolves when a waiting batch asked this one to yield.
    pub async fn asked_to_yield(&self) {
        self.yield_now.notified().await;
    }

    fn silent_for(&self) -> Duration {
        self.last_message.lock().unwrap().elapsed()
    }
}

/// A batch's turn: held while it receives and through its follow-up.
pub struct Turn {
    guard: Option<OwnedMutexGuard<()>>,
    receiving: Arc<Receiving>,
    slot: Arc<SyncMutex<Option<Arc<Receiving>>>>,
}

impl Turn {
    /// How the batch reports its client's messages and hears a request to
    /// yield.
    pub fn receiving(&self) -> &Arc<Receiving> {
        &self.receiving
    }

    /// The batch has all its operations: from now on it is not asked to
    /// yield (its follow-up keeps the turn). The guard keeps the turn.
    pub fn received(mut self) -> OwnedMutexGuard<()> {
        self.clear();
        self.guard
            .take()
            .expect("a turn holds its guard until received")
    }

    fn clear(&self) {
        let mut slot = self.slot.lock().unwrap();
        if slot
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, &self.receiving))
        {
            *slot = None;
        }
    }
}

impl Turns {
    /// Waits for the turn; while waiting, asks a batch that is receiving but
    /// silent for [`YIELD_AFTER`] to yield.
    pub async fn take(&self) -> Turn {
        let lock = self.lock.clone().lock_owned();
        tokio::pin!(lock);
        let guard = loop {
            tokio::select! {
                guard = &mut lock => break guard,
                () = tokio::time::sleep(LOOK_EVERY) => self.nudge(),
            }
        };
        let receiving = Arc::new(Receiving {
            last_message: SyncMutex::new(Instant::now()),
            yield_now: Notify::new(),
        });
        *self.receiving.lock().unwrap() = Some(receiving.clone());
        Turn {
            guard: Some(guard),
            receiving,
            slot: self.receiving.clone(),
        }
    }

    /// Asks the receiving batch to yield if its client went silent.
    fn nudge(&self) {
        if let Some(r) = self.receiving.lock().unwrap().as_ref()
            && r.silent_for() >= YIELD_AFTER
        {
            r.yield_now.notify_one();
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.clear();
    }
}
