//! The staging of small files on every core. A batch of many small files
//! (a first sync of a `node_modules`) is mostly the kernel's work of
//! writing each file, setting its times, stating and closing it; done on
//! the one thread that receives the batch, that thread was the whole sync's
//! bottleneck while the other core idled. The receiving thread still opens
//! each file (so where and under which name a file is staged is decided in
//! the order the operations came, as before) and hands the rest to a few
//! writers; the commit waits for all of them and takes their results in
//! the order of the operations.

use super::errors::root_error;
use super::stage::{PendingPut, StagedPut, finish_put};
use crate::root::RootError;
use lks_proto::v1::OpError;
use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

/// Whole puts a batch stages on its own thread before it starts writers:
/// an edit's batch never pays for threads.
const INLINE_FIRST: usize = 32;

/// Jobs queued per writer (each holds its file's bytes).
const QUEUED: usize = 64;

/// What a writer made of a put: its place among the batch's writes, the
/// staged file or why not, and the bytes written.
pub(super) type Written = (usize, Result<StagedPut, OpError>, u64);

/// A put whose file is open and whose bytes all arrived.
struct Job {
    ticket: usize,
    put: PendingPut,
    data: Vec<u8>,
}

/// The writers of one batch (none until it has enough small files).
#[derive(Default)]
pub(super) struct Writers {
    seen: usize,
    tickets: usize,
    queues: Vec<SyncSender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// What the writers made, as they make it: taken by the batch as it
    /// goes, so a large batch holds each result once.
    done: Option<Receiver<Written>>,
}

impl Writers {
    /// Takes `put` (open, all of whose `data` arrived) to a writer, and
    /// returns its ticket (numbered from 0 in the order taken); or gives it
    /// back while the batch is small or this machine has one core.
    pub(super) fn take(
        &mut self,
        put: PendingPut,
        data: Vec<u8>,
    ) -> Result<usize, Box<(PendingPut, Vec<u8>)>> {
        self.seen += 1;
        if self.seen <= INLINE_FIRST || !self.started() {
            return Err(Box::new((put, data)));
        }
        let ticket = self.tickets;
        // Consecutive puts are mostly in one directory: each writer takes
        // its own run of them, so two rarely add to one directory at once.
        let queue = (ticket / 8) % self.queues.len();
        match self.queues[queue].send(Job { ticket, put, data }) {
            Ok(()) => {
                self.tickets += 1;
                Ok(ticket)
            }
            // A writer panicked: `finish` says so.
            Err(e) => {
                let job = e.0;
                Err(Box::new((job.put, job.data)))
            }
        }
    }

    /// What the writers made since the last call, without waiting.
    pub(super) fn ready(&mut self) -> Vec<Written> {
        self.done
            .as_ref()
            .map(|done| done.try_iter().collect())
            .unwrap_or_default()
    }

    /// Starts the writers the first time; false on a machine of one core.
    fn started(&mut self) -> bool {
        if !self.threads.is_empty() {
            return true;
        }
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4);
        if n < 2 {
            return false;
        }
        let (made, done) = channel::<Written>();
        for i in 0..n {
            let (tx, rx) = sync_channel::<Job>(QUEUED);
            let made = made.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("stage-{i}"))
                .spawn(move || {
                    for job in rx {
                        if made.send(write(job)).is_err() {
                            return;
                        }
                    }
                });
            match spawned {
                Ok(thread) => {
                    self.queues.push(tx);
                    self.threads.push(thread);
                }
                Err(e) => {
                    tracing::debug!("cannot start a writer: {e}");
                    break;
                }
            }
        }
        self.done = Some(done);
        tracing::debug!(
            writers = self.threads.len(),
            "a large batch: staging on writers"
        );
        !self.threads.is_empty()
    }

    /// Waits for every write taken so far; what was not taken with
    /// [`Writers::ready`] yet.
    pub(super) fn finish(&mut self) -> Vec<Written> {
        self.queues.clear();
        for thread in self.threads.drain(..) {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        self.ready()
    }
}

impl Drop for Writers {
    /// A batch that ends early still waits for its writers: nothing is
    /// written into its staging directory once it is removed.
    fn drop(&mut self) {
        self.queues.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Writes a job's bytes, checks them and gives the file its mode and times.
fn write(job: Job) -> Written {
    let Job {
        ticket,
        mut put,
        data,
    } = job;
    if let Err(e) = put.file.write_all(&data) {
        // Dropping the put removes its staging file.
        return (
            ticket,
            Err(root_error(put.index, &RootError::io(&put.path, e))),
            0,
        );
    }
    put.hasher.update(&data);
    put.written += data.len() as u64;
    (ticket, finish_put(put), data.len() as u64)
}
