//! The queue and topic operations as values: one type per [`crate::backend::Queue`] method,
//! holding its arguments, with its name and kind stated once (metrics, traces and the retry layer
//! read them from here). A backend destructures what it needs; wrappers pass the value on
//! untouched.

use exo_proto::queue::v1 as pb;
use exo_proxy_core::layers::{OpKind, Operation};

use crate::model::{QueueName, ReceiveParams, TopicName};

macro_rules! queue_op {
    ($op:ident $(<$a:lifetime>)?, $name:literal, $kind:expr $(, batch $batch:literal)?) => {
        impl$(<$a>)? Operation for $op$(<$a>)? {
            const SERVICE: &'static str = "queue";
            const NAME: &'static str = $name;
            $(
                fn name(&self) -> &'static str {
                    if self.messages.len() == 1 { Self::NAME } else { $batch }
                }
            )?
            fn kind(&self) -> OpKind {
                #[allow(clippy::redundant_closure_call)]
                ($kind)(self)
            }
        }
    };
}

/// Creates a queue with normalized options (defaults filled in); answers whether it was created
/// (false: it existed with the same options) and its info.
#[derive(Debug, Clone, Copy)]
pub struct CreateQueue<'a> {
    pub queue: &'a QueueName,
    pub options: &'a pb::QueueOptions,
}
queue_op!(CreateQueue<'a>, "create_queue", |_| OpKind::Write);

/// Deletes a queue and its messages.
#[derive(Debug, Clone, Copy)]
pub struct DeleteQueue<'a> {
    pub queue: &'a QueueName,
}
queue_op!(DeleteQueue<'a>, "delete_queue", |_| OpKind::Write);

/// Up to `limit` queue names with `prefix`, in lexical order, strictly after `start_after`.
#[derive(Debug, Clone, Copy)]
pub struct ListQueues<'a> {
    pub prefix: &'a str,
    pub start_after: Option<&'a str>,
    pub limit: usize,
}
queue_op!(ListQueues<'a>, "list_queues", |_| OpKind::Read);

/// A queue's options and approximate counts.
#[derive(Debug, Clone, Copy)]
pub struct QueueInfo<'a> {
    pub queue: &'a QueueName,
}
queue_op!(QueueInfo<'a>, "get_queue_info", |_| OpKind::Read);

/// Sends validated messages; one result (message id or error) per message, in order.
#[derive(Debug, Clone)]
pub struct Send<'a> {
    pub queue: &'a QueueName,
    pub messages: Vec<pb::OutgoingMessage>,
}
queue_op!(Send<'a>, "send", |_| OpKind::Write, batch "send_batch");

/// Receives up to `params.max_messages` messages, waiting up to `params.wait` for a first one.
/// Not repeated: a receive that answered late has hidden its messages for a visibility.
#[derive(Debug, Clone, Copy)]
pub struct Receive<'a> {
    pub queue: &'a QueueName,
    pub params: ReceiveParams,
}
queue_op!(Receive<'a>, "receive", |op: &Receive<'_>| OpKind::LongWait(op.params.wait));

/// Deletes a received message.
#[derive(Debug, Clone, Copy)]
pub struct Ack<'a> {
    pub queue: &'a QueueName,
    pub receipt: &'a str,
}
queue_op!(Ack<'a>, "ack", |_| OpKind::Write);

/// Sets a received message's remaining visibility.
#[derive(Debug, Clone, Copy)]
pub struct ChangeVisibility<'a> {
    pub queue: &'a QueueName,
    pub receipt: &'a str,
    pub seconds: u32,
}
queue_op!(ChangeVisibility<'a>, "change_visibility", |_| OpKind::Write);

/// Deletes every message of a queue.
#[derive(Debug, Clone, Copy)]
pub struct Purge<'a> {
    pub queue: &'a QueueName,
}
queue_op!(Purge<'a>, "purge", |_| OpKind::Write);

/// Creates a topic; false when it existed.
#[derive(Debug, Clone, Copy)]
pub struct CreateTopic<'a> {
    pub topic: &'a TopicName,
}
queue_op!(CreateTopic<'a>, "create_topic", |_| OpKind::Write);

/// Deletes a topic and its subscriptions (their queues stay).
#[derive(Debug, Clone, Copy)]
pub struct DeleteTopic<'a> {
    pub topic: &'a TopicName,
}
queue_op!(DeleteTopic<'a>, "delete_topic", |_| OpKind::Write);

/// Up to `limit` topic names with `prefix`, in lexical order, strictly after `start_after`.
#[derive(Debug, Clone, Copy)]
pub struct ListTopics<'a> {
    pub prefix: &'a str,
    pub start_after: Option<&'a str>,
    pub limit: usize,
}
queue_op!(ListTopics<'a>, "list_topics", |_| OpKind::Read);

/// A topic and its subscriptions (sorted by name).
#[derive(Debug, Clone, Copy)]
pub struct TopicInfo<'a> {
    pub topic: &'a TopicName,
}
queue_op!(TopicInfo<'a>, "get_topic_info", |_| OpKind::Read);

/// Adds a validated subscription (its queue exists, its filter parses); false when an identical
/// one existed, SUBSCRIPTION_ALREADY_EXISTS when a different one does.
#[derive(Debug, Clone, Copy)]
pub struct CreateSubscription<'a> {
    pub topic: &'a TopicName,
    pub subscription: &'a pb::Subscription,
}
queue_op!(CreateSubscription<'a>, "create_subscription", |_| OpKind::Write);

/// Deletes a subscription (SUBSCRIPTION_NOT_FOUND if absent).
#[derive(Debug, Clone, Copy)]
pub struct DeleteSubscription<'a> {
    pub topic: &'a TopicName,
    pub subscription: &'a TopicName,
}
queue_op!(DeleteSubscription<'a>, "delete_subscription", |_| OpKind::Write);

/// Publishes validated messages; one result per message, in order.
#[derive(Debug, Clone)]
pub struct Publish<'a> {
    pub topic: &'a TopicName,
    pub messages: Vec<pb::PublishedMessage>,
}
queue_op!(Publish<'a>, "publish", |_| OpKind::Write, batch "publish_batch");

exo_proxy_core::operations!(
    /// Every queue and topic operation.
    pub enum QueueOp {
    CreateQueue => CreateQueue<'static>,
    DeleteQueue => DeleteQueue<'static>,
    ListQueues => ListQueues<'static>,
    QueueInfo => QueueInfo<'static>,
    Send => Send<'static>,
    Receive => Receive<'static>,
    Ack => Ack<'static>,
    ChangeVisibility => ChangeVisibility<'static>,
    Purge => Purge<'static>,
    CreateTopic => CreateTopic<'static>,
    DeleteTopic => DeleteTopic<'static>,
    ListTopics => ListTopics<'static>,
    TopicInfo => TopicInfo<'static>,
    CreateSubscription => CreateSubscription<'static>,
    DeleteSubscription => DeleteSubscription<'static>,
    Publish => Publish<'static>,
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_a_name_of_its_own() {
        let names: std::collections::HashSet<_> = QueueOp::ALL.iter().map(|op| op.name()).collect();
        assert_eq!(names.len(), QueueOp::ALL.len(), "{names:?}");
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')), "{names:?}");
    }
}
