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

/// The bytes read ahead and not yet taken.
struct Ahead {
    bytes: Mutex<usize>,
    taken: Condvar,
}

impl Ahead {
    fn take(&self, n: usize) {
        let mut bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        *bytes -= n;
        self.taken.notify_one();
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
            let mut bytes = self.ahead.bytes.lock().unwrap_or_else(|e| e.into_inner());
            while *bytes > 0 && *bytes + n > self.budget {
                if self.tx.is_closed() {
                    return false;
                }
                // The wire's end takes under the same lock, so no wake-up is
                // lost; the timeout only notices a wire end dropped while
                // this waits.
                bytes = self
                    .ahead
                    .taken
                    .wait_timeout(bytes, std::time::Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            *bytes += n;
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
        bytes: Mutex::new(0),
        taken: Condvar::new(),
    });
    let taken = ahead.clone();
    let stream = UnboundedReceiverStream::new(rx).map(move |(req, n)| {
        taken.take(n);
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
        let producer = tokio::task::spawn_blocking(move || {
            let big = tx.blocking_send(data(5_000));
            let blocked = tx.blocking_send(data(10));
            (big, blocked)
        });
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        drop(stream);
        let (big, blocked) = producer.await.unwrap();
        assert!(
            big,
            "a message larger than the budget is sent when nothing is ahead"
        );
        assert!(!blocked, "the producer stops once the wire's end is gone");
    }
}
