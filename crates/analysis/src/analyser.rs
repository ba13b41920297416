//! What an image is: decoded and cleaned, embedded, and given a category. Ingest jobs and searches
//! by image both ask an [`Analyser`]; neither the queue nor HTTP is known here.

use std::collections::HashSet;
use std::sync::Arc;

use lookalike_core::codes::job as code;
use lookalike_index::{CategoryFilter, SearchRequest, VectorIndex};
use lookalike_store::{CategorySource, NewItem, Store};
use lookalike_telemetry::{Stage, time_stage};
use lookalike_vision::{DecodeLimits, Region};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::batcher::{Batcher, Priority};
use crate::classify;
use crate::failure::Failure;
use crate::fetch::Fetcher;
use crate::heads::Heads;
use crate::prior::{self, Masses, Prior};

/// Everything analysing an image needs, shared by every job and search of a process.
pub struct Analyser {
    /// Read for classification: the labelled neighbours' categories and the prototypes.
    pub store: Store,
    /// Searched for classification: the labelled neighbours.
    pub index: Arc<dyn VectorIndex>,
    pub batcher: Batcher,
    pub fetcher: Fetcher,
    pub limits: DecodeLimits,
    /// Bounds CPU-heavy decode and resize work so it never starves inference or the runtime.
    pub decode_permits: Arc<Semaphore>,
    pub thumbnail_size: u32,
    pub classify: lookalike_core::config::Classify,
    /// Cold-start prior for categories without labelled items (`classify.categories` in config).
    pub prior: Option<Arc<Prior>>,
    /// The trained classifier head in use (shared with the rest of the process, kept current by
    /// [`crate::heads::maintain`]).
    pub heads: Arc<Heads>,
}

/// How an item got its category.
#[derive(Debug, Clone, PartialEq)]
pub enum CategoryDecision {
    Provided(String),
    Predicted(classify::Prediction),
    None,
}

/// An item to leave out of a classification (leave-one-out evaluation, or re-classifying the item itself).
#[derive(Debug, Clone)]
pub struct Exclude {
    pub id: Uuid,
    /// Its provided category and vector, to take it back out of that category's prototype.
    pub labelled: Option<(String, Vec<f32>)>,
}

/// The result of analysing one image: what both ingest and search need.
pub struct Analysis {
    pub format: String,
    pub width: u32,
    pub height: u32,
    pub embedding: Vec<f32>,
    /// The model's pooled tokens, what the classifier head reads (none for a model without a token
    /// output).
    pub features: Option<Vec<f32>>,
    pub thumbnail_jpeg: Vec<u8>,
    /// What the cold-start prior says, when some configured category has no labelled items yet.
    pub prior: Option<Masses>,
}

impl Analysis {
    /// The item this analysis makes, with its category decision and the bytes' hash and size.
    pub fn into_item(
        self,
        decision: &CategoryDecision,
        content_sha256: String,
        byte_size: usize,
        model_id: &str,
    ) -> NewItem {
        let (category, source) = decision.parts();
        let (confidence, head_version) = match decision {
            CategoryDecision::Predicted(p) => (Some(p.confidence), p.head_version),
            _ => (None, None),
        };
        NewItem {
            content_sha256,
            byte_size: byte_size as i64,
            format: self.format,
            width: self.width as i32,
            height: self.height as i32,
            category,
            category_source: source,
            category_confidence: confidence,
            head_version,
            model_id: model_id.to_string(),
            thumbnail_jpeg: self.thumbnail_jpeg,
            vector: self.embedding,
            features: self.features,
            // The catalogue decides this when it commits the item.
            duplicate: None,
        }
    }
}

impl Analyser {
    pub fn model_id(&self) -> &str {
        &self.batcher.embedder().spec().id
    }

    /// Whether the model makes features for the classifier head (a token output), which every item
    /// then keeps.
    pub fn makes_features(&self) -> bool {
        self.batcher.embedder().spec().features_output.is_some()
    }

    /// Decode, clean, thumbnail and embed one image. Used for ingest and for search queries; a query
    /// that is not kept skips the thumbnail (a third of the image work around the model).
    pub async fn analyse(
        &self,
        bytes: Vec<u8>,
        thumbnail: bool,
        priority: Priority,
    ) -> Result<Analysis, Failure> {
        self.analyse_region(bytes, thumbnail, None, priority).await
    }

    /// [`Analyser::analyse`] of one region of the image (a search on part of a photo): the image is
    /// decoded at a size that leaves the region's shorter side at the model's input size or more,
    /// cleaned (orientation first: the region is of the upright image), then only the region is
    /// embedded. `width` and `height` stay the whole image's.
    pub async fn analyse_region(
        &self,
        bytes: Vec<u8>,
        thumbnail: bool,
        region: Option<Region>,
        priority: Priority,
    ) -> Result<Analysis, Failure> {
        let permit = self
            .decode_permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let limits = self.limits.clone();
        let spec = self.batcher.embedder().spec().clone();
        let thumb = self.thumbnail_size;
        // The prior model runs only while it has something to say: some category is still cold.
        let prior = match &self.prior {
            Some(p) if !self.cold_categories(p, None).await?.is_empty() => Some(p.clone()),
            _ => None,
        };
        let (image, tensor, thumbnail_jpeg, prior) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let decoding = time_stage(Stage::Decode);
            // In draft when the model's recipe says so: the DCT-scaled decode of a large JPEG
            // is the cheapest way to the pixels the model (and the thumbnail) needs.
            let draft = match (spec.draft_size(), region) {
                (Some(size), Some(r)) => Some(r.draft_size(size)),
                (draft, _) => draft,
            };
            let image = lookalike_vision::clean_for(&bytes, &limits, draft)?;
            let cropped = match region {
                Some(r) => {
                    r.check_size(image.width, image.height).map_err(|e| {
                        Failure::permanent(lookalike_core::codes::search::BOX_TOO_SMALL, e)
                    })?;
                    Some(r.crop(&image.rgb))
                }
                None => None,
            };
            let pixels = cropped.as_ref().unwrap_or(&image.rgb);
            let tensor = lookalike_vision::to_tensor(pixels, &spec);
            let thumbnail = if thumbnail {
                lookalike_vision::thumbnail_jpeg(pixels, thumb)
            } else {
                Vec::new()
            };
            drop(decoding);
            let prior = match prior {
                Some(p) => Some(p.masses(pixels).map_err(|e| {
                    Failure::transient(code::INFERENCE_FAILED, format!("prior model: {e:#}"))
                })?),
                None => None,
            };
            Ok::<_, Failure>((image, tensor, thumbnail, prior))
        })
        .await
        .map_err(|e| {
            Failure::permanent(code::INFERENCE_FAILED, format!("image worker crashed: {e}"))
        })??;
        let output = self
            .batcher
            .embed(tensor, priority)
            .await
            .map_err(|e| Failure::transient(code::INFERENCE_FAILED, e))?;
        tracing::debug!(
            format = image.format,
            width = image.width,
            height = image.height,
            "image decoded and embedded"
        );
        Ok(Analysis {
            format: image.format.to_string(),
            width: image.width,
            height: image.height,
            embedding: output.embedding,
            features: output.features,
            thumbnail_jpeg,
            prior,
        })
    }

    /// The configured categories that have no labelled item yet (leaving out `exclude`'s label).
    pub async fn cold_categories(
        &self,
        prior: &Prior,
        exclude: Option<&Exclude>,
    ) -> Result<HashSet<String>, Failure> {
        let warm: HashSet<String> = self
            .labelled_prototypes(exclude)
            .await?
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        Ok(prior
            .categories()
            .iter()
            .filter(|c| !warm.contains(*c))
            .cloned()
            .collect())
    }

    /// Each labelled category's embedding sum, without `exclude`'s own contribution.
    async fn labelled_prototypes(
        &self,
        exclude: Option<&Exclude>,
    ) -> Result<Vec<(String, Vec<f32>)>, Failure> {
        let mut prototypes = Vec::new();
        for p in self.store.prototypes(self.model_id()).await? {
            let mut sum = p.vector_sum;
            let mut items = p.items;
            if let Some((category, vector)) = exclude.and_then(|e| e.labelled.as_ref())
                && *category == p.category
            {
                sum.iter_mut().zip(vector).for_each(|(s, v)| *s -= v);
                items -= 1;
            }
            if items > 0 {
                prototypes.push((p.category, sum));
            }
        }
        Ok(prototypes)
    }

    /// [`Analyser::classify`], timed as the `classify` stage.
    pub async fn timed_classify(
        &self,
        embedding: &[f32],
        features: Option<&[f32]>,
        prior_masses: Option<&Masses>,
        exclude: Option<&Exclude>,
    ) -> Result<Option<classify::Prediction>, Failure> {
        let _timed = time_stage(Stage::Classify);
        self.classify(embedding, features, prior_masses, exclude)
            .await
    }

    /// Predicts a category from the labelled items: neighbours' vote and category prototypes mixed
    /// with the trained head (see [`classify::decide`]), plus the cold-start prior (see [`prior`]) for
    /// configured categories that have no labels yet. `None` when nothing is labelled and there is no
    /// prior. `features` are the image's pooled tokens, which a head trained on them reads (without
    /// them such a head stays out of the decision).
    pub async fn classify(
        &self,
        embedding: &[f32],
        features: Option<&[f32]>,
        prior_masses: Option<&Masses>,
        exclude: Option<&Exclude>,
    ) -> Result<Option<classify::Prediction>, Failure> {
        let c = &self.classify;
        // Ask for more than needed: neighbours with predicted categories do not vote.
        let hits = self
            .index
            .search(SearchRequest {
                vector: embedding.to_vec(),
                filter: CategoryFilter::Any,
                limit: c.neighbours * 3,
                offset: 0,
                exclude: exclude.map(|e| e.id).into_iter().collect(),
                min_score: None,
                model_id: Some(self.model_id().to_string()),
                fields: Vec::new(),
                exact: false,
                recommend: None,
            })
            .await?;
        let hit_scores: Vec<(Uuid, f32)> = hits.iter().map(|h| (h.id, h.score)).collect();
        let ids: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
        let provided = self.store.provided_categories(&ids).await?;
        let mut voters = classify::labelled(&hit_scores, &provided);
        voters.truncate(c.neighbours);

        let prototypes = self.labelled_prototypes(exclude).await?;
        let warm: HashSet<&str> = prototypes.iter().map(|(c, _)| c.as_str()).collect();
        // A head cannot forget an item it was trained on: leaving a labelled item out (a
        // leave-one-out check) leaves the head out too.
        let head = self
            .heads
            .current()
            .filter(|_| c.head && exclude.is_none_or(|e| e.labelled.is_none()));
        let labelled = classify::decide(
            &classify::Evidence {
                embedding,
                features,
                voters: &voters,
                prototypes: &prototypes,
                head: head.as_deref().map(|h| h.input()),
            },
            &decision_settings(c),
        );
        Ok(match (&self.prior, prior_masses) {
            (Some(p), Some(masses)) => {
                let cold = p
                    .categories()
                    .iter()
                    .filter(|c| !warm.contains(c.as_str()))
                    .cloned()
                    .collect();
                prior::with_prior(labelled, masses, &cold)
            }
            _ => labelled,
        })
    }
}

/// The classifier settings of the configuration, as [`classify::decide`] takes them.
pub fn decision_settings(c: &lookalike_core::config::Classify) -> classify::Settings {
    classify::Settings {
        neighbour_temperature: c.neighbour_temperature,
        prototype_temperature: c.prototype_temperature,
        prototype_weight: c.prototype_weight,
        confidence_temperature: c.confidence_temperature,
        head_takeover: c.head_takeover,
    }
}

impl CategoryDecision {
    /// The stored category and its source.
    pub fn parts(&self) -> (Option<String>, CategorySource) {
        match self {
            CategoryDecision::Provided(c) => (Some(c.clone()), CategorySource::Provided),
            CategoryDecision::Predicted(p) => (Some(p.category.clone()), CategorySource::Predicted),
            CategoryDecision::None => (None, CategorySource::Unassigned),
        }
    }
}
