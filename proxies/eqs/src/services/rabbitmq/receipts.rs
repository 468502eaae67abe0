//! Deliveries held for their visibility: receipts, the per-queue receivers that hold them, and
//! the task that gives back those whose visibility ended.

use super::*;

/// How often held deliveries are checked for an ended visibility.
pub(super) const TICK: Duration = Duration::from_millis(50);

/// Acked delivery tags remembered per channel, so a repeated ack succeeds.
pub(super) const REMEMBERED_ACKS: usize = 4096;

/// The deliveries one queue's channel holds for this proxy.
pub(super) struct Receiver {
    pub(super) id: u64,
    pub(super) channel: Channel,
    /// Delivery tag → when its visibility ends.
    pub(super) held: Mutex<HashMap<u64, Instant>>,
    pub(super) acked: Mutex<(VecDeque<u64>, HashSet<u64>)>,
}

impl Receiver {
    pub(super) fn remember_ack(&self, tag: u64) {
        if let Ok(mut acked) = self.acked.lock() {
            let (order, set) = &mut *acked;
            if set.insert(tag) {
                order.push_back(tag);
            }
            while order.len() > REMEMBERED_ACKS {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }

    pub(super) fn was_acked(&self, tag: u64) -> bool {
        self.acked.lock().map(|a| a.1.contains(&tag)).unwrap_or(false)
    }

    pub(super) fn take(&self, tag: u64) -> bool {
        self.held.lock().map(|mut h| h.remove(&tag).is_some()).unwrap_or(false)
    }
}

pub(super) type Receivers = Mutex<HashMap<String, Arc<Receiver>>>;

/// A receipt: this process, the channel, the delivery tag, the queue.
pub(super) struct Receipt {
    pub(super) instance: u64,
    pub(super) receiver: u64,
    pub(super) tag: u64,
}

impl Receipt {
    pub(super) fn encode(&self, queue: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!("r1.{:x}.{}.{}.{queue}", self.instance, self.receiver, self.tag))
    }

    pub(super) fn decode(token: &str, queue: &QueueName) -> ExoResult<Self> {
        let invalid = |why: &str| {
            ExoError::new(ErrorReason::InvalidReceipt, format!("receipt is not valid: {why}"))
                .with_field("receipt")
                .with_resource(queue.as_str())
        };
        let raw = URL_SAFE_NO_PAD.decode(token.as_bytes()).map_err(|_| invalid("not a receipt token"))?;
        let text = String::from_utf8(raw).map_err(|_| invalid("not a receipt token"))?;
        let mut parts = text.splitn(5, '.');
        let (Some("r1"), Some(instance), Some(receiver), Some(tag), Some(owner)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a receipt token"));
        };
        let parsed = (u64::from_str_radix(instance, 16), receiver.parse(), tag.parse());
        let (Ok(instance), Ok(receiver), Ok(tag)) = parsed else {
            return Err(invalid("not a receipt token"));
        };
        if owner != queue.as_str() {
            return Err(invalid(&format!("it was issued by queue '{owner}', not '{queue}'")));
        }
        Ok(Self { instance, receiver, tag })
    }
}

/// Gives back every held delivery whose visibility has ended, until the backend is dropped.
pub(super) async fn give_back_expired(receivers: Weak<Receivers>) {
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let Some(receivers) = receivers.upgrade() else { return };
        let all: Vec<Arc<Receiver>> =
            receivers.lock().map(|r| r.values().cloned().collect()).unwrap_or_default();
        drop(receivers);
        let now = Instant::now();
        for receiver in all {
            let due: Vec<u64> = receiver
                .held
                .lock()
                .map(|mut held| {
                    let due: Vec<u64> =
                        held.iter().filter(|(_, at)| **at <= now).map(|(tag, _)| *tag).collect();
                    for tag in &due {
                        held.remove(tag);
                    }
                    due
                })
                .unwrap_or_default();
            for tag in due {
                let options = BasicNackOptions { requeue: true, multiple: false };
                if let Err(err) = receiver.channel.basic_nack(tag, options).await {
                    // The channel is gone, and with it the delivery: the broker has requeued it.
                    tracing::debug!(error = %err, "rabbitmq: give back after visibility");
                }
            }
        }
    }
}
