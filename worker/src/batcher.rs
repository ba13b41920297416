//! Batches inference across the jobs in flight.
//!
//! Running the model on 8 images at once is cheaper per image than 8 single runs, and jobs arrive
//! concurrently anyway. One dedicated thread owns the model calls: it takes the first waiting tensor,
//! gathers more for up to `wait` (or until `max_batch`), runs one batch and answers each caller.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lookalike_vision::{Embedder, Output};
use ndarray::Array3;
use tokio::sync::oneshot;

type Reply = oneshot::Sender<Result<Output, String>>;

/// A tensor to embed, where to send its embedding, and the caller's span (a job's, or a search
/// request's), so that what the inference thread logs about it is tied to that job or request.
type Request = (Array3<f32>, Reply, tracing::Span);

#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Request>,
    embedder: Arc<Embedder>,
}

impl Batcher {
    pub fn start(embedder: Arc<Embedder>, max_batch: usize, wait: Duration) -> Self {
        let (tx, rx) = mpsc::channel::<Request>();
        let model = embedder.clone();
        std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || run(&model, rx, max_batch.max(1), wait))
            .expect("spawning the inference thread");
        Batcher { tx, embedder }
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// Embeds one preprocessed image, sharing a model run with whatever else is waiting.
    pub async fn embed(&self, tensor: Array3<f32>) -> Result<Output, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((tensor, reply, tracing::Span::current()))
            .map_err(|_| "inference thread stopped".to_string())?;
        answer
            .await
            .map_err(|_| "inference thread stopped".to_string())?
    }
}

fn run(model: &Embedder, rx: mpsc::Receiver<Request>, max_batch: usize, wait: Duration) {
    // Ends when every Batcher (every sender) is dropped.
    while let Ok(first) = rx.recv() {
        let mut pending = vec![first];
        let deadline = Instant::now() + wait;
        while pending.len() < max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(next) => pending.push(next),
                Err(_) => break,
            }
        }
        let mut tensors = Vec::with_capacity(pending.len());
        let mut callers = Vec::with_capacity(pending.len());
        for (tensor, reply, span) in pending {
            tensors.push(tensor);
            callers.push((reply, span));
        }
        let started = Instant::now();
        let result = model.embed_batch(&tensors);
        let elapsed = started.elapsed();
        lookalike_telemetry::inference_batch(tensors.len(), elapsed);
        match result {
            Ok(outputs) => {
                for ((reply, span), output) in callers.into_iter().zip(outputs) {
                    span.in_scope(|| {
                        tracing::debug!(
                            batch = tensors.len(),
                            ms = elapsed.as_millis() as u64,
                            "inference"
                        )
                    });
                    let _ = reply.send(Ok(output));
                }
            }
            Err(e) => {
                let message = format!("{e:#}");
                for (reply, _) in callers {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}
