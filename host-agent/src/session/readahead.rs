//! The messages of a batch read ahead of the wire, kept to a byte budget.
//!
//! The producer thread reads files faster than a slow agent (a container's
//! overlay file system, a port-forward) takes them. A queue that counts
//! messages held all of a tree in memory: 512 messages of up to 1 MiB each,
//! so a 50 MB first sync peaked at 107 MiB and a tree of large files could
//! reach half a gigabyte. This queue counts bytes: the producer waits once
//! [`BUDGET`] bytes are read ahead and not yet taken by the wire, and goes
//! on as the wire takes them.

use crate::progress::Sent;
use lks_proto::v1::ApplyRequest;
use prost::Message;
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// Bytes read ahead of the wire at the most (one message larger than this
/// still goes, alone).
pub(super) const BUDGET: usize = 8 * 1024 * 1024;

/// The bytes read ahead and not yet taken, and whether the wire's end is
/// gone; the producer waits on `taken` for either to change.
struct Ahead {
    state: Mutex<State>,
    taken: Condvar,
}

#[derive(Default)]
struct State {
    bytes: usize,
    wire_gone: bool,
}

impl Ahead {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, n: usize) {
        self.state().bytes -= n;
        self.taken.notify_one();
    }
}

/// Held by the wire's end of the queue: when that end is dropped (the
/// request is over), a producer waiting for room is woken to stop.
struct WireEnd(Arc<Ahead>);

impl Drop for WireEnd {
    fn drop(&mut self) {
        self.0.state().wire_gone = true;
        self.0.taken.notify_all();
    }
}

/// The producer's end: blocks while the budget is spent.
pub(super) struct Sender {
    tx: mpsc::UnboundedSender<(ApplyRequest, usize)>,
    ahead: Arc<Ahead>,
    budget: usize,
}

impl Sender {
    /// Queues `req` once it fits in the budget (at once when nothing is
    /// ahead); false once the wire's end is gone.
    pub(super) fn blocking_send(&self, req: ApplyRequest) -> bool {
        let n = req.encoded_len();
        {
            // The wire's end takes, and goes, under the same lock: no
            // wake-up is lost.
            let mut state = self.ahead.state();
            while state.bytes > 0 && state.bytes + n > self.budget {
                if state.wire_gone {
                    return false;
                }
                state = self
                    .ahead
                    .taken
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            state.bytes += n;
        }
        self.tx.send((req, n)).is_ok()
    }
}

/// A queue of at most `budget` bytes: the producer's end, and the stream
/// the wire takes the messages from (counted in `sent`, if given, as it
/// takes them).
pub(super) fn channel(
    budget: usize,
    sent: Option<Arc<Sent>>,
) -> (Sender, impl Stream<Item = ApplyRequest> + Send + 'static) {
    let (tx, rx) = mpsc::unbounded_channel();
    let ahead = Arc::new(Ahead {
        state: Mutex::new(State::default()),
        taken: Condvar::new(),
    });
    let wire = WireEnd(ahead.clone());
    let stream = UnboundedReceiverStream::new(rx).map(move |(req, n)| {
        wire.0.take(n);
        if let Some(sent) = &sent {
            sent.count(&req);
        }
        req
    });
    (Sender { tx, ahead, budget }, stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lks_proto::v1::{Data, apply_request::Op};

    fn data(n: usize) -> ApplyRequest {
        ApplyRequest {
            op: Some(Op::Data(Data { bytes: vec![7; n] })),
        }
    }

    #[tokio::test]
    async fn the_producer_waits_once_the_budget_is_read_ahead_and_goes_on_as_it_is_taken() {
        let taken = Arc::new(Sent::default());
        let (tx, stream) = channel(10_000, Some(taken.clone()));
        let (sent, mut sent_rx) = mpsc::unbounded_channel();
        let producer = tokio::task::spawn_blocking(move || {
            for i in 0..10 {
                if !tx.blocking_send(data(3_000)) {
                    return;
                }
                sent.send(i).unwrap();
            }
        });
        // Three messages of ~3,000 bytes fit in 10,000; the fourth waits.
        for i in 0..3 {
            assert_eq!(sent_rx.recv().await, Some(i));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(sent_rx.try_recv().is_err(), "a fourth went past the budget");
        tokio::pin!(stream);
        // Each message taken lets one more in.
        assert!(stream.next().await.is_some());
        assert_eq!(sent_rx.recv().await, Some(3));
        let mut n = 1;
        while stream.next().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 10);
        producer.await.unwrap();
        // What the wire took is counted as it takes it.
        assert_eq!(taken.get(), (0, 30_000));
    }

    #[tokio::test]
    async fn a_message_over_the_budget_goes_alone_and_a_dropped_wire_stops_the_producer() {
        let (tx, stream) = channel(1_000, None);
        // A thread of its own, so a producer left waiting fails the test
        // instead of holding the runtime's shutdown.
        let (done, producer) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let big = tx.blocking_send(data(5_000));
            let blocked = tx.blocking_send(data(10));
            let _ = done.send((big, blocked));
        });
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        drop(stream);
        // Woken by the drop (nothing polls): without it, it waits forever.
        let (big, blocked) = producer
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the producer is woken when the wire's end goes");
        assert!(
            big,
            "a message larger than the budget is sent when nothing is ahead"
        );
        assert!(!blocked, "the producer stops once the wire's end is gone");
    }
}
