//! One decision from all the evidence: the service's classifier and `lookalike eval`'s in-process folds
//! both call [`decide`], so what eval measures is what the service does.

use std::collections::{HashMap, HashSet};

use crate::head::Head;
use crate::vote::{Prediction, calibrate, fuse, prototype_scores, rank, vote};

/// The classifier's settings (`classify.*` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Temperature of the neighbours' similarity weights.
    pub neighbour_temperature: f32,
    /// Temperature of the softmax over prototype similarities.
    pub prototype_temperature: f32,
    /// Share of the prototypes in the untrained mixture (the neighbours have the rest).
    pub prototype_weight: f32,
    /// Temperature scaling of the final mixture (calibration).
    pub confidence_temperature: f32,
    /// Labelled items per category at which the trained head and the untrained mixture weigh the
    /// same: the head's share is `m / (m + head_takeover)` for a head trained on `m` labels per
    /// category. 0 lets the head decide alone.
    pub head_takeover: f32,
}

/// A trained head as the decision uses it.
#[derive(Debug, Clone, Copy)]
pub struct HeadInput<'a> {
    pub head: &'a Head,
    /// Its stored version, recorded with the prediction.
    pub version: i32,
    /// Labelled items per category it was trained on.
    pub labels_per_category: f32,
}

/// What the classifier knows about one image.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    pub embedding: &'a [f32],
    /// The model's pooled tokens, when it has a token output: what a head that
    /// [`Reads::Features`](crate::Reads::Features) is given. Without them such a head stays silent.
    pub features: Option<&'a [f32]>,
    /// Labelled neighbours as `(similarity, category)`, nearest first, already cut to the number that
    /// votes.
    pub voters: &'a [(f32, String)],
    /// Each labelled category's embedding sum.
    pub prototypes: &'a [(String, Vec<f32>)],
    /// The trained head, when there is one and it may be used (not for an image it was trained on).
    pub head: Option<HeadInput<'a>>,
}

/// The head's share of the decision for a head trained on `labels_per_category`.
pub fn head_weight(labels_per_category: f32, takeover: f32) -> f32 {
    if takeover <= 0.0 {
        1.0
    } else {
        labels_per_category / (labels_per_category + takeover)
    }
}

/// The untrained mixture (neighbours + prototypes), mixed with the trained head by its share, then
/// calibrated. `None` when nothing is labelled.
pub fn decide(e: &Evidence, s: &Settings) -> Option<Prediction> {
    let untrained = fuse(
        vote(e.voters, s.neighbour_temperature),
        prototype_scores(e.embedding, e.prototypes, s.prototype_temperature),
        s.prototype_weight,
    );
    let mixed = match e
        .head
        .and_then(|h| Some((h, h.head.reads.pick(e.embedding, e.features)?)))
    {
        Some((h, input)) => match (rank(h.head.predict(input)), untrained) {
            (Some(trained), untrained) => {
                let weight = head_weight(h.labels_per_category, s.head_takeover);
                mix(trained, untrained, weight).map(|p| Prediction {
                    head_version: Some(h.version),
                    ..p
                })
            }
            (None, untrained) => untrained,
        },
        None => untrained,
    };
    calibrate(mixed, s.confidence_temperature)
}

/// `weight` of the head and the rest of the untrained mixture, over the categories the head knows;
/// a category labelled since the head was trained keeps the untrained mixture's probability (so its
/// first labels count before the next training, even when the head decides alone).
fn mix(trained: Prediction, untrained: Option<Prediction>, weight: f32) -> Option<Prediction> {
    let Some(untrained) = untrained else {
        return Some(trained);
    };
    let known: HashSet<&str> = trained.ranking.iter().map(|(c, _)| c.as_str()).collect();
    let new_mass: f32 = untrained
        .ranking
        .iter()
        .filter(|(c, _)| !known.contains(c.as_str()))
        .map(|(_, p)| p)
        .sum();
    let mut mixed: HashMap<String, f32> = HashMap::new();
    for (c, p) in &trained.ranking {
        *mixed.entry(c.clone()).or_default() += weight * (1.0 - new_mass) * p;
    }
    for (c, p) in &untrained.ranking {
        let share = if known.contains(c.as_str()) {
            1.0 - weight
        } else {
            1.0
        };
        *mixed.entry(c.clone()).or_default() += share * p;
    }
    rank(mixed.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::{TrainSettings, train};

    const SETTINGS: Settings = Settings {
        neighbour_temperature: 0.02,
        prototype_temperature: 0.02,
        prototype_weight: 0.3,
        confidence_temperature: 1.0,
        head_takeover: 10.0,
    };

    /// A head that calls everything near the first axis "coat" and near the second "dress".
    fn head() -> Head {
        let a = [1.0f32, 0.0, 0.1];
        let b = [0.0f32, 1.0, 0.1];
        let a2 = [0.9f32, 0.1, 0.0];
        let b2 = [0.1f32, 0.9, 0.0];
        train(
            &[(&a, "coat"), (&b, "dress"), (&a2, "coat"), (&b2, "dress")],
            &TrainSettings::default(),
        )
        .unwrap()
        .head
    }

    #[test]
    fn without_a_head_the_decision_is_the_untrained_mixture() {
        let voters = vec![(0.9, "coat".to_string()), (0.5, "dress".to_string())];
        let e = Evidence {
            embedding: &[1.0, 0.0, 0.0],
            features: None,
            voters: &voters,
            prototypes: &[],
            head: None,
        };
        let p = decide(&e, &SETTINGS).unwrap();
        assert_eq!(p.category, "coat");
        assert_eq!(p.head_version, None);
        assert_eq!(Some(p), vote(&voters, 0.02));
    }

    #[test]
    fn the_head_takes_over_as_its_labels_grow() {
        let h = head();
        // The neighbours say dress; the head says coat.
        let voters = vec![(0.9, "dress".to_string())];
        let with = |labels| Evidence {
            embedding: &[1.0, 0.0, 0.0],
            features: None,
            voters: &voters,
            prototypes: &[],
            head: Some(HeadInput {
                head: &h,
                version: 3,
                labels_per_category: labels,
            }),
        };
        let few = decide(&with(1.0), &SETTINGS).unwrap();
        assert_eq!(few.category, "dress", "{few:?}");
        let many = decide(&with(1000.0), &SETTINGS).unwrap();
        assert_eq!(many.category, "coat", "{many:?}");
        assert_eq!(many.head_version, Some(3));
        assert_eq!(head_weight(10.0, 10.0), 0.5);
        assert_eq!(head_weight(3.0, 0.0), 1.0);
    }

    use crate::head::Reads;

    #[test]
    fn a_head_on_features_reads_the_features_and_is_silent_without_them() {
        let h = Head {
            reads: Reads::Features,
            ..head()
        };
        let voters = vec![(0.9, "dress".to_string())];
        let with = |features| Evidence {
            // The embedding points at dress: only the features may make the head say coat.
            embedding: &[0.0, 1.0, 0.0],
            features,
            voters: &voters,
            prototypes: &[],
            head: Some(HeadInput {
                head: &h,
                version: 4,
                labels_per_category: 1000.0,
            }),
        };
        let p = decide(&with(Some(&[1.0, 0.0, 0.0])), &SETTINGS).unwrap();
        assert_eq!((p.category.as_str(), p.head_version), ("coat", Some(4)));
        let p = decide(&with(None), &SETTINGS).unwrap();
        assert_eq!((p.category.as_str(), p.head_version), ("dress", None));
    }

    #[test]
    fn a_category_the_head_has_not_seen_still_gets_its_votes() {
        let h = head();
        let voters = vec![(0.95, "scarf".to_string())];
        let e = Evidence {
            embedding: &[0.0, 0.0, 1.0],
            features: None,
            voters: &voters,
            prototypes: &[],
            head: Some(HeadInput {
                head: &h,
                version: 1,
                labels_per_category: 2.0,
            }),
        };
        let p = decide(&e, &SETTINGS).unwrap();
        assert!(p.ranking.iter().any(|(c, _)| c == "scarf"), "{p:?}");
        let total: f32 = p.ranking.iter().map(|(_, w)| w).sum();
        assert!((total - 1.0).abs() < 1e-5);
        // Even when the head decides alone among the categories it knows.
        let alone = Settings {
            head_takeover: 0.0,
            ..SETTINGS
        };
        let p = decide(&e, &alone).unwrap();
        assert_eq!(
            p.category, "scarf",
            "only the neighbours know scarves: {p:?}"
        );
        let total: f32 = p.ranking.iter().map(|(_, w)| w).sum();
        assert!((total - 1.0).abs() < 1e-5);
    }
}
