//! Labelled folders, `FOLDER/<category>/<image>`: the layout `scripts/fetch-datasets.sh` writes, which
//! `lookalike import` and `lookalike eval` read.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// What counts as an image file, by extension (the formats the service decodes).
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "gif", "webp", "bmp", "tif", "tiff", "ico", "pnm", "ppm", "pgm", "avif",
];

/// One image of a labelled folder.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledImage {
    /// `<category>/<file name>`.
    pub rel: String,
    pub category: String,
    pub path: PathBuf,
}

/// Every image one level down, sorted by category then file name (so the same folder always gives
/// the same order); hidden files and folders, files directly in FOLDER, deeper folders and files
/// without an image extension are left out. `limit` keeps the first N of each category.
pub fn walk(folder: &Path, limit: Option<usize>) -> Result<Vec<LabelledImage>> {
    let mut images = Vec::new();
    for category in sorted_entries(folder)?.into_iter().filter(|p| p.is_dir()) {
        let cat = file_name(&category);
        if cat.starts_with('.') {
            continue;
        }
        let files = sorted_entries(&category)?.into_iter().filter(|p| {
            let ext = p
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase());
            p.is_file()
                && !file_name(p).starts_with('.')
                && ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
        });
        for path in files.take(limit.unwrap_or(usize::MAX)) {
            images.push(LabelledImage {
                rel: format!("{cat}/{}", file_name(&path)),
                category: cat.clone(),
                path,
            });
        }
    }
    Ok(images)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    entries.sort();
    Ok(entries)
}

pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_category_folders_in_order_and_skips_what_is_not_a_labelled_image() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (rel, body) in [
            ("shoes/b.JPG", "x"),
            ("shoes/a.png", "x"),
            ("shoes/notes.txt", "x"),
            ("shoes/.hidden.jpg", "x"),
            ("bags/c.webp", "x"),
            (".cache/d.jpg", "x"),
            ("shoes/deeper/e.jpg", "x"),
            ("top.jpg", "x"),
        ] {
            std::fs::create_dir_all(root.join(rel).parent().unwrap()).unwrap();
            std::fs::write(root.join(rel), body).unwrap();
        }
        let rels: Vec<String> = walk(root, None)
            .unwrap()
            .into_iter()
            .map(|i| i.rel)
            .collect();
        assert_eq!(rels, ["bags/c.webp", "shoes/a.png", "shoes/b.JPG"]);
        let first = walk(root, Some(1)).unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[1].category, "shoes");
        assert_eq!(first[1].path, root.join("shoes/a.png"));
    }
}
