//! Category prediction from labelled items (those whose category a submitter provided).
//!
//! Three views of the same labels (Alibaba 2018 and eBay 2017 classify with a trained model and a
//! vote of neighbours):
//! - [`vote`]: the nearest labelled items vote, and each category's prototype (mean direction) is
//!   compared with the image. Both work from a category's first label.
//! - [`head`]: a softmax head trained on the labelled embeddings; better once there are enough labels.
//! - [`decide`]: mixes them by how many labels the head learnt from, then calibrates.
//!
//! Everything here is a pure function of vectors and labels: the service gathers the evidence (index
//! search, Postgres) and `lookalike eval` gathers it from cached vectors, and both call [`decide`].

pub mod decide;
pub mod head;
mod lbfgs;
pub mod vote;

pub use decide::{Evidence, HeadInput, Settings, decide, head_weight};
pub use head::{
    Example, Fitted, Head, Labelled, Reads, TrainSettings, Trained, fit, fit_labelled, train,
};
pub use vote::{
    Prediction, calibrate, categories_to_search, fuse, labelled, prototype_scores, rank, vote,
};
