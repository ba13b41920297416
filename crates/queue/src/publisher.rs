//! Publishing with publisher confirms: a message counts as enqueued only once the broker confirms it.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::{JobMessage, Topology};

/// Why a publish did not succeed. Always transient from the caller's point of view: the API answers
/// 503 and the worker retries the job later.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("message broker unavailable: {0}")]
    Unavailable(#[from] lapin::Error),
    #[error("message broker did not confirm within {0:?}")]
    Timeout(Duration),
    #[error("message broker refused the message")]
    Nacked,
}

/// A shared confirm-mode channel, opened on first use and re-opened after any failure.
pub struct Publisher {
    url: String,
    topology: Topology,
    timeout: Duration,
    state: Mutex<Option<(Connection, Channel)>>,
}

impl Publisher {
    pub fn new(url: &str, topology: Topology, timeout: Duration) -> Self {
        Publisher {
            url: url.to_string(),
            topology,
            timeout,
            state: Mutex::new(None),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Publishes one message per job to the work queue and waits until the broker confirmed all.
    pub async fn publish_jobs(&self, ids: &[Uuid]) -> Result<(), PublishError> {
        let queue = self.topology.jobs.clone();
        self.publish(&queue, ids, None).await
    }

    /// Publishes a job to the retry queue; it reappears on the work queue after `delay`.
    pub async fn publish_retry(&self, id: Uuid, delay: Duration) -> Result<(), PublishError> {
        let queue = self.topology.retry.clone();
        self.publish(&queue, &[id], Some(delay)).await
    }

    /// Publishes a job to the dead-letter queue (attempts exhausted), for inspection.
    pub async fn publish_dead(&self, id: Uuid) -> Result<(), PublishError> {
        let queue = self.topology.dead.clone();
        self.publish(&queue, &[id], None).await
    }

    /// True when a channel is open (for readiness); does not connect.
    pub async fn is_connected(&self) -> bool {
        let state = self.state.lock().await;
        state
            .as_ref()
            .is_some_and(|(conn, ch)| conn.status().connected() && ch.status().connected())
    }

    /// Connects if needed (for readiness checks and at startup).
    pub async fn ensure_connected(&self) -> Result<(), PublishError> {
        tokio::time::timeout(self.timeout, self.channel())
            .await
            .map_err(|_| PublishError::Timeout(self.timeout))?
            .map(|_| ())
    }

    async fn publish(
        &self,
        queue: &str,
        ids: &[Uuid],
        delay: Option<Duration>,
    ) -> Result<(), PublishError> {
        let result =
            tokio::time::timeout(self.timeout, self.publish_inner(queue, ids, delay)).await;
        let result = result.unwrap_or(Err(PublishError::Timeout(self.timeout)));
        if result.is_err() {
            // Whatever went wrong, start from a fresh connection next time.
            self.reset().await;
        }
        result
    }

    async fn publish_inner(
        &self,
        queue: &str,
        ids: &[Uuid],
        delay: Option<Duration>,
    ) -> Result<(), PublishError> {
        let channel = self.channel().await?;
        let mut confirms = Vec::with_capacity(ids.len());
        for id in ids {
            let mut props = BasicProperties::default()
                .with_delivery_mode(2) // persistent
                .with_content_type("application/json".into())
                .with_message_id(id.to_string().into());
            if let Some(delay) = delay {
                props = props.with_expiration(delay.as_millis().max(1).to_string().into());
            }
            let payload = JobMessage { job_id: *id }.encode();
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &payload,
                    props,
                )
                .await?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            let confirmation = confirm.await?;
            // A mandatory message that no queue took comes back as an ack with the message attached.
            if !confirmation.is_ack() || confirmation.take_message().is_some() {
                return Err(PublishError::Nacked);
            }
        }
        Ok(())
    }

    /// The queues' message counts, for status pages. Read on a short-lived channel of the same
    /// connection, so a refused declare cannot close the confirm channel that submissions use.
    pub async fn depth(&self) -> Result<crate::QueueDepth, PublishError> {
        let read = async {
            let channel = {
                let mut state = self.state.lock().await;
                Self::connected(&self.url, &self.topology, &mut state).await?;
                let (conn, _) = state.as_ref().expect("connected() leaves a connection");
                conn.create_channel().await?
            };
            let depth = self.topology.depth(&channel).await;
            let _ = channel.close(200, "status read".into()).await;
            Ok(depth?)
        };
        tokio::time::timeout(self.timeout, read)
            .await
            .unwrap_or(Err(PublishError::Timeout(self.timeout)))
    }

    async fn channel(&self) -> Result<Channel, PublishError> {
        let mut state = self.state.lock().await;
        Self::connected(&self.url, &self.topology, &mut state).await
    }

    /// The open confirm channel, connecting first when there is none.
    async fn connected(
        url: &str,
        topology: &Topology,
        state: &mut Option<(Connection, Channel)>,
    ) -> Result<Channel, PublishError> {
        if let Some((conn, ch)) = state.as_ref()
            && conn.status().connected()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        let conn = crate::connect(url, "lookalike-publisher").await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        topology.declare(&ch).await?;
        *state = Some((conn, ch.clone()));
        Ok(ch)
    }

    async fn reset(&self) {
        if let Some((conn, _)) = self.state.lock().await.take() {
            // The broker may be gone: do not wait long for a polite close.
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                conn.close(200, "reconnecting".into()),
            )
            .await;
        }
    }
}
