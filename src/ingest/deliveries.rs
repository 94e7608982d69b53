//! Group commit for webhook deliveries: requests hand their verified event to a few writers,
//! and a writer commits everything waiting at that moment in one transaction. Under a burst
//! the cost of a transaction (BEGIN, locks, COMMIT and its WAL flush) is shared by the events
//! that arrived together; a lone event is written at once, as before.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::flow::DeliveryRecord;
use crate::store::{Store, StoreError};

use crate::clerk::ClerkEvent;
use crate::sync::{DeleteMode, Outcome};

/// A verified delivery, owned, on its way to a writer.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub event: ClerkEvent,
    pub svix_id: String,
    pub svix_timestamp: i64,
    /// The raw body, kept in the inbox for inspection and replay.
    pub payload: String,
}

type Job = (Delivery, oneshot::Sender<Result<Outcome, StoreError>>);

/// How deliveries are written (`CLERK_SYNC_WRITERS`, and the largest batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriterSettings {
    /// Transactions writing deliveries at the same time.
    pub writers: usize,
    /// Most deliveries one transaction takes.
    pub max_batch: usize,
    /// Longest a batch may take (`CLERK_SYNC_DB_TIMEOUT`); then its transaction is abandoned
    /// (the server rolls it back) and its deliveries get an error, so the sender retries.
    pub timeout: Duration,
}

impl WriterSettings {
    /// SQLite has one writer at a time whatever we do; PostgreSQL gains from a few
    /// transactions in flight (one waits on the network or the WAL flush while another runs)
    /// but not from many on a small machine, and every writer not busy leaves events to batch.
    /// A PostgreSQL writer holds a connection while it writes: at least one of the pool's
    /// `max_connections` stays for everything else.
    pub(crate) fn default_for(store: &Store, max_connections: u32) -> WriterSettings {
        let postgres = (max_connections.saturating_sub(1) as usize).clamp(1, 3);
        WriterSettings {
            writers: if store.backend() == "sqlite" {
                1
            } else {
                postgres
            },
            max_batch: 64,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The handle requests use; cloning it is cheap. [`DeliveryQueue::shutdown`] stops the
/// writers; until then they run as long as any handle does, so nothing accepted is left
/// unwritten.
#[derive(Clone, Debug)]
pub struct DeliveryQueue {
    sender: mpsc::Sender<Job>,
    writers: Arc<Writers>,
}

#[derive(Debug)]
struct Writers {
    /// Set by `shutdown`: the writers close the queue, write what it holds, and end.
    closing: watch::Sender<bool>,
    /// Awaited by `shutdown`; a tokio mutex, so a second caller waits for the first.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl DeliveryQueue {
    /// Starts the writers on the current Tokio runtime.
    pub(crate) fn start(store: Store, mode: DeleteMode, settings: WriterSettings) -> DeliveryQueue {
        let (sender, receiver) = mpsc::channel::<Job>(1024);
        let receiver = Arc::new(Mutex::new(receiver));
        let (closing, _) = watch::channel(false);
        let max_batch = settings.max_batch.max(1);
        let timeout = settings.timeout;
        let store = Arc::new(store);
        let mut tasks = Vec::new();
        for _ in 0..settings.writers.max(1) {
            let store = store.clone();
            let receiver = receiver.clone();
            let mut closing = closing.subscribe();
            tasks.push(tokio::spawn(async move {
                let mut batch = Vec::with_capacity(max_batch);
                loop {
                    {
                        let mut receiver = receiver.lock().await;
                        // A closed queue hands out what it holds, then reports 0.
                        let received = tokio::select! {
                            biased;
                            received = receiver.recv_many(&mut batch, max_batch) => received,
                            () = async {
                                // The `Ref` it returns must not be held across an await.
                                let _ = closing.wait_for(|closing| *closing).await;
                            } => {
                                receiver.close();
                                receiver.recv_many(&mut batch, max_batch).await
                            }
                        };
                        if received == 0 {
                            return;
                        }
                    }
                    // Each batch in a task of its own: a panic while writing would otherwise
                    // end this writer for good, where it used to cost one request. The
                    // batch's requests then get 503 (their replies are dropped) and Svix
                    // retries them; the writer goes on.
                    let shared = store.clone();
                    let written = tokio::spawn(async move {
                        write(&shared, mode, timeout, &mut batch).await;
                        batch
                    });
                    batch = match written.await {
                        Ok(kept) => kept,
                        Err(error) => {
                            tracing::error!(%error, "writing a batch of webhook events failed");
                            Vec::with_capacity(max_batch)
                        }
                    };
                }
            }));
        }
        DeliveryQueue {
            sender,
            writers: Arc::new(Writers {
                closing,
                tasks: Mutex::new(tasks),
            }),
        }
    }

    /// Stops the writers: deliveries offered from now on are refused (the webhook answers 503,
    /// so Svix delivers them again later), those already queued are written, and each writer
    /// then ends. Returns once all have ended; bound it with a timeout of your own if need be
    /// (each batch takes at most the database timeout, `CLERK_SYNC_DB_TIMEOUT`).
    ///
    /// An app embedding clerk-sync calls this before `Store::close`, so that the events
    /// already accepted are written before the pool goes; `App::run_until` does so on
    /// shutdown. Calling it again waits for the same end.
    pub async fn shutdown(&self) {
        self.writers.closing.send_replace(true);
        let mut tasks = self.writers.tasks.lock().await;
        // One at a time, dropped only once finished: if this call is abandoned (a timeout),
        // a later call still waits for the writers left.
        while let Some(task) = tasks.last_mut() {
            if let Err(error) = task.await
                && error.is_panic()
            {
                tracing::error!(%error, "a webhook writer failed while stopping");
            }
            tasks.pop();
        }
    }

    /// Writes one delivery (with whatever else is waiting) and returns its outcome.
    pub(crate) async fn record(&self, delivery: Delivery) -> Result<Outcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        if self.sender.send((delivery, reply)).await.is_err() {
            return Err(StoreError::Setup("clerk-sync is shutting down".into()));
        }
        outcome.await.unwrap_or_else(|_| {
            Err(StoreError::Setup(
                "the event was not written (see the log); the sender will retry".into(),
            ))
        })
    }
}

async fn write(store: &Store, mode: DeleteMode, timeout: Duration, batch: &mut Vec<Job>) {
    let records: Vec<(&ClerkEvent, DeliveryRecord<'_>)> = batch
        .iter()
        .map(|(delivery, _)| {
            (
                &delivery.event,
                DeliveryRecord {
                    svix_id: &delivery.svix_id,
                    svix_timestamp: delivery.svix_timestamp,
                    payload: &delivery.payload,
                },
            )
        })
        .collect();
    crate::metrics::webhook_batch(records.len());
    let started = std::time::Instant::now();
    let results = match tokio::time::timeout(timeout, store.record_deliveries(&records, mode)).await
    {
        Ok(results) => results,
        // Its connection, somewhere inside a transaction, is closed, never reused (see
        // `postgres::Transaction`).
        Err(_) => records
            .iter()
            .map(|_| Err(StoreError::TimedOut(timeout)))
            .collect(),
    };
    tracing::debug!(
        events = records.len(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "batch written"
    );
    drop(records);
    for ((_, reply), result) in batch.drain(..).zip(results) {
        // The request may have timed out and gone; the event is stored all the same.
        let _ = reply.send(result);
    }
}
