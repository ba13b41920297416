//! Cold start: a prior over catalogue categories from an ImageNet classifier, for categories that have
//! no labelled items yet.
//!
//! ImageNet already knows "cardigan", "trench coat" and "running shoe"; a hand-written map from those
//! classes to catalogue categories turns the classifier's softmax into category probabilities. The
//! prior only speaks for *cold* categories (listed in config, no labelled item yet): once a category has
//! labels, the labelled classifier in [`crate::classify`] is better and takes over.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use image::RgbImage;
use lookalike_vision::{Embedder, ModelSpec};

use crate::classify::{Prediction, rank};

/// The ImageNet classifier and the class -> category map.
pub struct Prior {
    embedder: Arc<Embedder>,
    /// Per ImageNet class: the categories it maps to, each with its share of the class's probability.
    shares: ClassShares,
    categories: Vec<String>,
}

/// Probability per category, as the prior sees one image.
pub type Masses = Vec<(String, f32)>;

impl Prior {
    /// Loads the model and the map, keeping only the categories in `wanted`. Categories in `wanted`
    /// that the map never names are reported: they will not get a prior.
    pub fn load(
        ort_library: &Path,
        model: &Path,
        map: &Path,
        wanted: &[String],
        threads: usize,
    ) -> anyhow::Result<Prior> {
        let text = std::fs::read_to_string(map)
            .with_context(|| format!("reading the prior map {}", map.display()))?;
        let (shares, categories) = parse_map(&text, wanted)?;
        let missing: Vec<&String> = wanted.iter().filter(|c| !categories.contains(c)).collect();
        if !missing.is_empty() {
            tracing::warn!(?missing, map = %map.display(), "categories without any ImageNet class in the prior map get no cold-start prior");
        }
        let spec = ModelSpec::efficientnet_lite0(model);
        let embedder = Embedder::load(ort_library, spec, threads)
            .with_context(|| format!("loading the prior model {}", model.display()))?;
        tracing::info!(categories = categories.len(), "cold-start prior loaded");
        Ok(Prior {
            embedder: Arc::new(embedder),
            shares,
            categories,
        })
    }

    pub fn categories(&self) -> &[String] {
        &self.categories
    }

    /// Runs the classifier on a cleaned image (blocking: call from a blocking thread).
    pub fn masses(&self, rgb: &RgbImage) -> anyhow::Result<Masses> {
        let output = self.embedder.embed_image(rgb)?;
        let logits = output
            .logits
            .context("the prior model has no logits output")?;
        Ok(masses(&logits, &self.shares, &self.categories))
    }
}

/// For each ImageNet class, the categories it is shared between: (category index, share).
type ClassShares = Vec<Vec<(usize, f32)>>;

/// Parses `{"<class index>": {"categories": [..]}, ..}` into per-class shares over the kept categories.
fn parse_map(text: &str, wanted: &[String]) -> anyhow::Result<(ClassShares, Vec<String>)> {
    #[derive(serde::Deserialize)]
    struct Entry {
        categories: Vec<String>,
    }
    let map: BTreeMap<String, Entry> =
        serde_json::from_str(text).context("parsing the prior map")?;
    let wanted: HashSet<&str> = wanted.iter().map(String::as_str).collect();
    let mut categories: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut shares = vec![Vec::new(); 1000];
    for (class, entry) in map {
        let class: usize = class
            .parse()
            .ok()
            .filter(|c| *c < 1000)
            .with_context(|| format!("prior map: `{class}` is not an ImageNet class index"))?;
        let kept: Vec<&String> = entry
            .categories
            .iter()
            .filter(|c| wanted.contains(c.as_str()))
            .collect();
        for category in &kept {
            let next = categories.len();
            let i = *index.entry((*category).clone()).or_insert_with(|| {
                categories.push((*category).clone());
                next
            });
            shares[class].push((i, 1.0 / kept.len() as f32));
        }
    }
    Ok((shares, categories))
}

/// Softmax over the logits, then each class's probability handed to its categories.
fn masses(logits: &[f32], shares: &[Vec<(usize, f32)>], categories: &[String]) -> Masses {
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let total: f32 = exps.iter().sum();
    let mut mass = vec![0.0f32; categories.len()];
    for (class, p) in exps.iter().enumerate() {
        for (category, share) in shares.get(class).into_iter().flatten() {
            mass[*category] += share * p / total;
        }
    }
    categories.iter().cloned().zip(mass).collect()
}

/// Below this the prior's belief is noise (the mass ImageNet spreads over a thousand classes), not
/// evidence: a cat photo must not become a "shoe" at 0.2%.
const MIN_PRIOR_MASS: f32 = 0.01;

/// Adds the prior for the `cold` categories to what the labels say about the others.
///
/// The prior's mass on a cold category is taken as that category's probability; the labelled
/// prediction shares what is left. So with no labels at all the prediction is the prior alone, and its
/// confidence is low when the image looks like nothing the map knows (a sofa in a fashion catalogue).
pub fn with_prior(
    labelled: Option<Prediction>,
    prior: &Masses,
    cold: &HashSet<String>,
) -> Option<Prediction> {
    let cold_mass: Vec<(String, f32)> = prior
        .iter()
        .filter(|(c, m)| cold.contains(c) && *m >= MIN_PRIOR_MASS)
        .cloned()
        .collect();
    if cold_mass.is_empty() {
        return labelled;
    }
    let taken: f32 = cold_mass.iter().map(|(_, m)| m).sum();
    let head_version = labelled.as_ref().and_then(|l| l.head_version);
    let mut ranking = cold_mass;
    if let Some(labelled) = labelled {
        ranking.extend(
            labelled
                .ranking
                .into_iter()
                .filter(|(c, _)| !cold.contains(c))
                .map(|(c, p)| (c, p * (1.0 - taken))),
        );
    }
    rank(ranking).map(|p| Prediction {
        used_prior: true,
        head_version,
        ..p
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const MAP: &str = r#"{"1": {"categories": ["coats"]}, "2": {"categories": ["coats", "tops"]},
                         "3": {"categories": ["sofas"]}}"#;

    #[test]
    fn class_probability_is_split_evenly_and_unwanted_categories_are_dropped() {
        let (shares, categories) = parse_map(MAP, &names(&["coats", "tops", "shoes"])).unwrap();
        assert_eq!(categories, names(&["coats", "tops"]));
        let mut logits = vec![f32::MIN / 2.0; 1000];
        logits[1] = 0.0; // half the probability on class 1
        logits[2] = 0.0; // half on class 2, shared by coats and tops
        let m = masses(&logits, &shares, &categories);
        assert!((m[0].1 - 0.75).abs() < 1e-5, "{m:?}");
        assert!((m[1].1 - 0.25).abs() < 1e-5, "{m:?}");
    }

    #[test]
    fn a_map_with_a_bad_class_index_is_refused() {
        assert!(parse_map(r#"{"1000": {"categories": ["x"]}}"#, &names(&["x"])).is_err());
        assert!(parse_map(r#"{"coat": {"categories": ["x"]}}"#, &names(&["x"])).is_err());
    }

    #[test]
    fn without_labels_the_prior_decides_and_keeps_its_own_confidence() {
        let prior = vec![("coats".to_string(), 0.3), ("tops".to_string(), 0.1)];
        let cold: HashSet<String> = names(&["coats", "tops"]).into_iter().collect();
        let p = with_prior(None, &prior, &cold).unwrap();
        assert_eq!(p.category, "coats");
        assert!(
            (p.confidence - 0.3).abs() < 1e-6,
            "unmapped mass is not made up"
        );
    }

    #[test]
    fn warm_categories_share_what_the_cold_ones_leave() {
        let labelled = rank(vec![("shoes".into(), 0.8), ("coats".into(), 0.2)]);
        let prior = vec![("coats".to_string(), 0.5), ("tops".to_string(), 0.2)];
        // coats has labels now: only tops is cold, and the prior's belief in coats is ignored.
        let cold: HashSet<String> = names(&["tops"]).into_iter().collect();
        let p = with_prior(labelled, &prior, &cold).unwrap();
        let got: HashMap<String, f32> = p.ranking.into_iter().collect();
        assert!((got["tops"] - 0.2).abs() < 1e-6);
        assert!((got["shoes"] - 0.8 * 0.8).abs() < 1e-6);
        assert!((got["coats"] - 0.2 * 0.8).abs() < 1e-6);
        assert_eq!(p.category, "shoes");
    }

    #[test]
    fn a_negligible_prior_predicts_nothing() {
        let prior = vec![("coats".to_string(), 0.002)];
        let cold: HashSet<String> = names(&["coats"]).into_iter().collect();
        assert_eq!(with_prior(None, &prior, &cold), None);
    }

    #[test]
    fn no_cold_categories_leave_the_labelled_prediction_alone() {
        let labelled = rank(vec![("shoes".into(), 1.0)]);
        let prior = vec![("coats".to_string(), 0.9)];
        assert_eq!(
            with_prior(labelled.clone(), &prior, &HashSet::new()),
            labelled
        );
    }
}
