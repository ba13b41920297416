//! RabbitMQ for lookalike: the queue topology, confirmed publishing and consuming.
//!
//! Messages carry a job id and nothing else; Postgres holds the job. Three durable quorum queues:
//! - `<prefix>.jobs`: work. Workers consume it with manual acks and a prefetch equal to their
//!   parallelism.
//! - `<prefix>.retry`: jobs waiting for a retry. Each message carries its own expiration (the backoff
//!   delay); when it expires RabbitMQ dead-letters it back to `<prefix>.jobs`.
//! - `<prefix>.dead`: jobs that used up their attempts, kept for inspection.
//!
//! lapin does not reconnect by itself: [`Publisher`] reconnects lazily on the next publish after a
//! failure, and the worker's consume loop reconnects with backoff.

mod publisher;

use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use lapin;
pub use publisher::Publisher;

/// The only thing a queue message says.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobMessage {
    pub job_id: Uuid,
}

impl JobMessage {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a uuid always serialises")
    }
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// What the queues hold at one moment (RabbitMQ's counts; messages delivered but not yet acked are
/// in none of them).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct QueueDepth {
    /// Jobs waiting in the work queue for a worker.
    pub ready: u32,
    /// Jobs waiting out a retry delay.
    pub retrying: u32,
    /// Jobs that used up their attempts.
    pub dead: u32,
    /// Consumers (worker channels) on the work queue.
    pub consumers: u32,
}

/// Queue names derived from one prefix, so tests (and several deployments on one broker) never collide.
#[derive(Debug, Clone)]
pub struct Topology {
    pub jobs: String,
    pub retry: String,
    pub dead: String,
}

impl Topology {
    pub fn new(prefix: &str) -> Self {
        Topology {
            jobs: format!("{prefix}.jobs"),
            retry: format!("{prefix}.retry"),
            dead: format!("{prefix}.dead"),
        }
    }

    /// Declares all three queues (idempotent; safe on every connect).
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(self.jobs.as_str().into(), durable, quorum_args(None))
            .await?;
        channel
            .queue_declare(self.dead.as_str().into(), durable, quorum_args(None))
            .await?;
        // Expired retry messages go back to the work queue; at-least-once so none is dropped on the way.
        channel
            .queue_declare(
                self.retry.as_str().into(),
                durable,
                quorum_args(Some(&self.jobs)),
            )
            .await?;
        Ok(())
    }

    /// Messages waiting in each queue and the work queue's consumers, by passive declares (which
    /// fail, closing the channel, when a queue does not exist: use a channel of its own).
    pub async fn depth(&self, channel: &Channel) -> lapin::Result<QueueDepth> {
        let passive = QueueDeclareOptions {
            passive: true,
            durable: true,
            ..Default::default()
        };
        let mut counts = Vec::with_capacity(3);
        for queue in [&self.jobs, &self.retry, &self.dead] {
            counts.push(
                channel
                    .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                    .await?,
            );
        }
        Ok(QueueDepth {
            ready: counts[0].message_count(),
            consumers: counts[0].consumer_count(),
            retrying: counts[1].message_count(),
            dead: counts[2].message_count(),
        })
    }

    /// Deletes the queues (used by tests to clean up after themselves).
    pub async fn delete(&self, channel: &Channel) -> lapin::Result<()> {
        for q in [&self.jobs, &self.retry, &self.dead] {
            channel
                .queue_delete(q.as_str().into(), Default::default())
                .await?;
        }
        Ok(())
    }
}

fn quorum_args(dead_letter_to: Option<&str>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long("quorum"));
    if let Some(target) = dead_letter_to {
        args.insert("x-dead-letter-exchange".into(), long(""));
        args.insert("x-dead-letter-routing-key".into(), long(target));
        args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
        args.insert("x-overflow".into(), long("reject-publish"));
    }
    args
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, props).await
}

/// Opens a consuming channel: declares the topology, sets the prefetch, starts a consumer.
pub async fn consume(
    connection: &Connection,
    topology: &Topology,
    prefetch: u16,
    tag: &str,
) -> lapin::Result<(Channel, lapin::Consumer)> {
    let channel = connection.create_channel().await?;
    topology.declare(&channel).await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            ShortString::from(topology.jobs.as_str()),
            ShortString::from(tag),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}
