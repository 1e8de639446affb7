//! The writer's queue: std's unbounded channel, bounded by a count of the
//! records in it. A bounded std channel (`sync_channel`) allocates and
//! writes every slot when it is made: 1.5 MiB of the idle sidecar's
//! memory at the default capacity of 65,536, for a queue that is empty
//! unless the disk falls behind. The unbounded one takes its slots in
//! small blocks as messages arrive and frees them as they are taken.

use super::writer::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError, TrySendError};
use std::time::Duration;

/// A queue that holds at most `capacity` records; flush markers are not
/// counted (they hold no record, and must not be lost to a full queue).
pub(super) fn bounded(capacity: usize) -> (QueueSender, QueueReceiver) {
    let (sender, receiver) = mpsc::channel();
    let records = Arc::new(AtomicUsize::new(0));
    (
        QueueSender {
            sender,
            records: Arc::clone(&records),
            capacity,
        },
        QueueReceiver { receiver, records },
    )
}

/// The sending side, one per handle; cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct QueueSender {
    sender: mpsc::Sender<Message>,
    /// Records sent and not yet received.
    records: Arc<AtomicUsize>,
    /// Most records waiting at once.
    capacity: usize,
}

impl QueueSender {
    /// Queues `message` without waiting: `Full` when it is a record and
    /// `capacity` records wait already, `Disconnected` once the writer is
    /// gone.
    pub(super) fn try_send(&self, message: Message) -> Result<(), TrySendError<Message>> {
        let record = message.is_record();
        if record && self.records.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.records.fetch_sub(1, Ordering::Relaxed);
            return Err(TrySendError::Full(message));
        }
        self.sender.send(message).map_err(|refused| {
            if record {
                self.records.fetch_sub(1, Ordering::Relaxed);
            }
            TrySendError::Disconnected(refused.0)
        })
    }
}

/// The writer's side.
#[derive(Debug)]
pub(super) struct QueueReceiver {
    receiver: mpsc::Receiver<Message>,
    records: Arc<AtomicUsize>,
}

impl QueueReceiver {
    /// The next message, waiting at most `timeout`.
    pub(super) fn recv_timeout(&self, timeout: Duration) -> Result<Message, RecvTimeoutError> {
        self.receiver.recv_timeout(timeout).map(|m| self.taken(m))
    }

    /// The next message, if one waits.
    pub(super) fn try_recv(&self) -> Result<Message, TryRecvError> {
        self.receiver.try_recv().map(|m| self.taken(m))
    }

    fn taken(&self, message: Message) -> Message {
        if message.is_record() {
            self.records.fetch_sub(1, Ordering::Relaxed);
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn record() -> Message {
        Message::Record(Box::new(crate::ledger::tests::record_at(0, 0)))
    }

    #[test]
    fn records_past_the_capacity_are_refused_until_one_is_taken() {
        let (sender, receiver) = bounded(2);
        assert!(sender.try_send(record()).is_ok());
        assert!(sender.try_send(record()).is_ok());
        assert!(matches!(
            sender.try_send(record()),
            Err(TrySendError::Full(_))
        ));
        assert!(receiver.try_recv().is_ok());
        assert!(sender.try_send(record()).is_ok());
    }

    #[test]
    fn a_flush_marker_is_queued_whatever_the_records() {
        let (sender, receiver) = bounded(1);
        assert!(sender.try_send(record()).is_ok());
        let (done, _committed) = oneshot::channel();
        assert!(sender.try_send(Message::Flush(done)).is_ok());
        assert!(receiver.try_recv().unwrap().is_record());
        assert!(!receiver.try_recv().unwrap().is_record());
    }

    #[test]
    fn a_gone_writer_disconnects_and_frees_the_count() {
        let (sender, receiver) = bounded(1);
        drop(receiver);
        assert!(matches!(
            sender.try_send(record()),
            Err(TrySendError::Disconnected(_))
        ));
        assert_eq!(sender.records.load(Ordering::Relaxed), 0);
    }
}
