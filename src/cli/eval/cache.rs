//! The eval's vectors, kept so the cross-validation and the tuning can run again in process without
//! embedding anything (`--save-vectors FILE` writes them after a run against the service;
//! `--from-vectors FILE` runs from them).
//!
//! The vectors are the ones the service stored (the real pipeline made them), with the item ids it
//! gave (the folds order training items by id, so a run from the file matches the run that wrote it).
//! Each image is recorded with the SHA-256 of its bytes: a file changed since is refused, not
//! silently evaluated with an old vector.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Sample;

#[derive(Serialize, Deserialize)]
pub struct VectorFile {
    /// `model.id` of the service that made the vectors.
    pub model: String,
    pub folder: String,
    pub made: String,
    pub images: Vec<CachedImage>,
}

#[derive(Serialize, Deserialize)]
pub struct CachedImage {
    pub file: String,
    pub category: String,
    pub sha256: String,
    pub item_id: String,
    /// L2-normalised.
    pub vector: Vec<f32>,
    /// The model's pooled tokens (what the classifier head reads), when the service keeps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<f32>>,
}

fn digest(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

pub fn save(
    path: &Path,
    model: &str,
    folder: &str,
    samples: &[&Sample],
    item_ids: &[String],
    vectors: &[Vec<f32>],
    features: Option<&[Vec<f32>]>,
) -> Result<()> {
    let images = samples
        .iter()
        .zip(item_ids)
        .zip(vectors)
        .enumerate()
        .map(|(i, ((s, id), v))| {
            Ok(CachedImage {
                file: s.rel.clone(),
                category: s.category.clone(),
                sha256: digest(&s.path)?,
                item_id: id.clone(),
                vector: v.clone(),
                features: features.map(|f| f[i].clone()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let file = VectorFile {
        model: model.to_string(),
        folder: folder.to_string(),
        made: chrono::Utc::now().to_rfc3339(),
        images,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    // Written whole, then renamed: an interrupted run never leaves half a file to be trusted later.
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, serde_json::to_vec(&file)?).with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, path).with_context(|| path.display().to_string())?;
    Ok(())
}

/// What a vector file holds for the evaluated images, in sample order.
#[derive(Debug)]
pub struct Loaded {
    pub item_ids: Vec<String>,
    pub vectors: Vec<Vec<f32>>,
    /// Every image's features, or `None` when the file has none (or not for every image).
    pub features: Option<Vec<Vec<f32>>>,
}

/// The cached vector of every sample, in sample order (with the item ids), after checking that the
/// file was made by one of `models` from exactly these images.
pub fn load(path: &Path, models: &[String], samples: &[Sample]) -> Result<Loaded> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let file: VectorFile = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a vector file of lookalike eval", path.display()))?;
    if !models.contains(&file.model) {
        bail!(
            "{} holds vectors of model {}, but this configuration's model is {}: run the eval against the service with --save-vectors again",
            path.display(),
            file.model,
            models.join(" or ")
        );
    }
    let by_file: std::collections::HashMap<&str, &CachedImage> =
        file.images.iter().map(|i| (i.file.as_str(), i)).collect();
    if by_file.len() != samples.len() {
        bail!(
            "{} holds {} images, the folder {}: they must be the same images",
            path.display(),
            by_file.len(),
            samples.len()
        );
    }
    let mut ids = Vec::with_capacity(samples.len());
    let mut vectors = Vec::with_capacity(samples.len());
    let mut features = Vec::with_capacity(samples.len());
    for s in samples {
        let cached = by_file
            .get(s.rel.as_str())
            .with_context(|| format!("{} has no vector for {}", path.display(), s.rel))?;
        if cached.category != s.category || cached.sha256 != digest(&s.path)? {
            bail!(
                "{} changed since {} was written (category or bytes): run the eval against the service with --save-vectors again",
                s.rel,
                path.display()
            );
        }
        ids.push(cached.item_id.clone());
        vectors.push(cached.vector.clone());
        features.push(cached.features.clone());
    }
    Ok(Loaded {
        item_ids: ids,
        vectors,
        features: features.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path, rel: &str, category: &str, bytes: &[u8]) -> Sample {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        Sample {
            rel: rel.into(),
            category: category.into(),
            path,
            product: None,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let a = sample(dir.path(), "a/1.png", "a", b"one");
        let b = sample(dir.path(), "b/2.png", "b", b"two");
        let file = dir.path().join("cache/v.json");
        let ids = vec!["id-1".to_string(), "id-2".to_string()];
        let vectors = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let features = vec![vec![0.5; 3], vec![-0.5; 3]];
        save(
            &file,
            "m1",
            "set",
            &[&a, &b],
            &ids,
            &vectors,
            Some(&features),
        )
        .unwrap();
        let m1 = ["m0".to_string(), "m1".to_string()];

        // Read back in a different sample order: matched by file, answered in sample order.
        let got = load(&file, &m1, &[b.clone(), a.clone()]).unwrap();
        assert_eq!(got.item_ids, ["id-2", "id-1"]);
        assert_eq!(got.vectors, [vec![0.0, 1.0], vec![1.0, 0.0]]);
        assert_eq!(got.features, Some(vec![vec![-0.5; 3], vec![0.5; 3]]));

        // A file kept without features answers none.
        let plain = dir.path().join("cache/plain.json");
        save(&plain, "m1", "set", &[&a, &b], &ids, &vectors, None).unwrap();
        assert_eq!(
            load(&plain, &m1, &[a.clone(), b.clone()]).unwrap().features,
            None
        );

        let err = load(&file, &["m2".to_string()], &[a.clone(), b.clone()]).unwrap_err();
        assert!(err.to_string().contains("model m1"), "{err}");
        assert!(
            load(&file, &m1, std::slice::from_ref(&a)).is_err(),
            "an image fewer"
        );
        std::fs::write(&b.path, b"changed").unwrap();
        let err = load(&file, &m1, &[a, b]).unwrap_err();
        assert!(err.to_string().contains("changed since"), "{err}");
    }
}
