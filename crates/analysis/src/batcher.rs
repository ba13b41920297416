//! Runs the model for every job and search of a process, on all its cores.
//!
//! A pool of *lanes*: each lane is a thread that owns a model session of one ONNX thread, and takes
//! work from one queue shared by the process. With two or more images waiting, every lane runs one
//! (on a 2-core machine two single-threaded runs side by side do ~25% more images/s than one run
//! split over two threads: `cargo bench --bench ingest`, model grid). An image that finds the whole
//! pool idle instead runs on the *solo* session, one session of `model.intra_threads` threads, so a
//! lone search gets every core (about half the latency of a one-thread run on 2 cores). One queue
//! for all lanes means no lane idles while another has work piled up, as separate per-lane queues
//! would at the end of a batch.
//!
//! Searches go before ingest: a shopper's query never waits behind the catalogue's backlog, only
//! behind the runs already started. A lane takes up to `max_batch` images at once when more are
//! waiting or arrive within `wait` (1 by default: the int8 model's vectors depend on their batch).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lookalike_vision::{Embedder, Output};
use ndarray::Array3;
use tokio::sync::oneshot;

type Reply = oneshot::Sender<Result<Output, String>>;

/// Who waits for an embedding: a search (a person waiting) goes before ingest (a queue waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Search,
    Ingest,
}

/// A tensor to embed, where to send its embedding, and the caller's span (a job's, or a search
/// request's), so that what the inference thread logs about it is tied to that job or request.
struct Request {
    tensor: Array3<f32>,
    reply: Reply,
    span: tracing::Span,
}

#[derive(Default)]
struct Queues {
    search: VecDeque<Request>,
    ingest: VecDeque<Request>,
    /// Lanes running the model right now.
    busy: usize,
    /// Set when the last [`Batcher`] handle is dropped: lanes finish what is queued and stop.
    closed: bool,
}

impl Queues {
    fn pop(&mut self) -> Option<Request> {
        self.search.pop_front().or_else(|| self.ingest.pop_front())
    }

    fn is_empty(&self) -> bool {
        self.search.is_empty() && self.ingest.is_empty()
    }
}

struct Shared {
    queues: Mutex<Queues>,
    work: Condvar,
    /// The multi-threaded session for an image that finds every lane idle (none when it would
    /// have one thread: a lane's session does the same).
    solo: Option<Arc<Embedder>>,
    max_batch: usize,
    wait: Duration,
}

/// Closes the queue when the last handle goes, so the lane threads end.
struct Handle(Arc<Shared>);

impl Drop for Handle {
    fn drop(&mut self) {
        lock(&self.0.queues).closed = true;
        self.0.work.notify_all();
    }
}

#[derive(Clone)]
pub struct Batcher {
    handle: Arc<Handle>,
    embedder: Arc<Embedder>,
}

/// The sessions a [`Batcher`] runs on.
pub struct Sessions {
    /// One per lane, each with its own thread (normally of one ONNX thread).
    pub lanes: Vec<Arc<Embedder>>,
    /// Runs a lone image with several threads; `None` to run every image on a lane.
    pub solo: Option<Arc<Embedder>>,
}

impl Batcher {
    pub fn start(sessions: Sessions, max_batch: usize, wait: Duration) -> Self {
        let Sessions { lanes, solo } = sessions;
        let embedder = lanes
            .first()
            .or(solo.as_ref())
            .expect("at least one model session")
            .clone();
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            work: Condvar::new(),
            solo,
            max_batch: max_batch.max(1),
            wait,
        });
        for (i, model) in lanes.into_iter().enumerate() {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("inference-{i}"))
                .spawn(move || run_lane(&shared, &model))
                .expect("spawning an inference thread");
        }
        Batcher {
            handle: Arc::new(Handle(shared)),
            embedder,
        }
    }

    /// The model's description (every session runs the same model).
    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// Embeds one preprocessed image, sharing a model run with whatever else is waiting.
    pub async fn embed(&self, tensor: Array3<f32>, priority: Priority) -> Result<Output, String> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            tensor,
            reply,
            span: tracing::Span::current(),
        };
        {
            let shared = &self.handle.0;
            let mut queues = lock(&shared.queues);
            match priority {
                Priority::Search => queues.search.push_back(request),
                Priority::Ingest => queues.ingest.push_back(request),
            }
            shared.work.notify_one();
        }
        answer
            .await
            .map_err(|_| "inference thread stopped".to_string())?
    }
}

fn lock(queues: &Mutex<Queues>) -> std::sync::MutexGuard<'_, Queues> {
    queues.lock().unwrap_or_else(PoisonError::into_inner)
}

fn run_lane(shared: &Shared, own: &Embedder) {
    loop {
        let mut queues = lock(&shared.queues);
        let first = loop {
            if let Some(request) = queues.pop() {
                break request;
            }
            if queues.closed {
                return;
            }
            queues = shared
                .work
                .wait(queues)
                .unwrap_or_else(PoisonError::into_inner);
        };
        let mut batch = vec![first];
        if shared.max_batch > 1 {
            let deadline = Instant::now() + shared.wait;
            while batch.len() < shared.max_batch {
                if let Some(request) = queues.pop() {
                    batch.push(request);
                    continue;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || queues.closed {
                    break;
                }
                queues = shared
                    .work
                    .wait_timeout(queues, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        // Alone: nothing else waits and no other lane runs, so this run may use every core.
        let alone = queues.is_empty() && queues.busy == 0;
        queues.busy += 1;
        drop(queues);
        let (model, solo) = match &shared.solo {
            Some(solo) if alone => (solo.as_ref(), true),
            _ => (own, false),
        };
        run_batch(model, solo, batch, || lock(&shared.queues).busy -= 1);
    }
}

/// Runs one batch and answers its callers; `done` marks the lane free first, so that a caller
/// sending its next image at once finds the pool as it really is.
fn run_batch(model: &Embedder, solo: bool, batch: Vec<Request>, done: impl FnOnce()) {
    let n = batch.len();
    let mut tensors = Vec::with_capacity(n);
    let mut callers = Vec::with_capacity(n);
    for Request {
        tensor,
        reply,
        span,
    } in batch
    {
        tensors.push(tensor);
        callers.push((reply, span));
    }
    let started = Instant::now();
    let result = model.embed_batch(&tensors);
    let elapsed = started.elapsed();
    done();
    lookalike_telemetry::inference_batch(n, solo, elapsed);
    match result {
        Ok(outputs) => {
            for ((reply, span), output) in callers.into_iter().zip(outputs) {
                span.in_scope(|| {
                    tracing::debug!(batch = n, ms = elapsed.as_millis() as u64, "inference")
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
