//! What `lookalike import` reads, as a list of entries in a stable order: a labelled folder
//! (`<category>/<image>`), a CSV file or a JSON-lines file.
//!
//! Everything is read and checked before anything is submitted, so a malformed line stops the import
//! before it has half happened.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use lookalike_api_types::UrlItem;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Where an entry's image is.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// Fetched by the service's workers.
    Url(String),
    /// A local file, uploaded (absolute, or relative to the working directory).
    File(PathBuf),
}

/// One image to import.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub origin: Origin,
    pub external_id: Option<String>,
    /// The product the image shows; several entries may name one.
    pub product_id: Option<String>,
    pub category: Option<String>,
    pub metadata: Map<String, Value>,
    /// Where it is in the source, for messages (`line 12`, `shoes/a.jpg`).
    pub at: String,
}

impl Entry {
    /// The entry as a line of the JSON-lines input format (local paths made absolute, so the line
    /// means the same wherever the file goes).
    pub fn to_json(&self) -> Value {
        let mut line = Map::new();
        match &self.origin {
            Origin::Url(url) => line.insert("url".into(), json!(url)),
            Origin::File(path) => {
                let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                line.insert("file".into(), json!(path))
            }
        };
        if let Some(id) = &self.external_id {
            line.insert("external_id".into(), json!(id));
        }
        if let Some(id) = &self.product_id {
            line.insert("product_id".into(), json!(id));
        }
        if let Some(c) = &self.category {
            line.insert("category".into(), json!(c));
        }
        if !self.metadata.is_empty() {
            line.insert("metadata".into(), Value::Object(self.metadata.clone()));
        }
        Value::Object(line)
    }

    /// The entry as an item of a `POST /v1/images` JSON body (what [`Entry::to_json`] says of a
    /// URL); `None` for a file, which is uploaded.
    pub fn url_item(&self) -> Option<UrlItem> {
        let Origin::Url(url) = &self.origin else {
            return None;
        };
        Some(UrlItem {
            url: url.clone(),
            external_id: self.external_id.clone(),
            product_id: self.product_id.clone(),
            category: self.category.clone(),
            metadata: (!self.metadata.is_empty()).then(|| Value::Object(self.metadata.clone())),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Folder,
    Csv,
    JsonLines,
}

/// An import source: its canonical path and how to read it.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub kind: Kind,
}

impl Source {
    pub fn open(path: &Path) -> Result<Source> {
        let path = path
            .canonicalize()
            .with_context(|| format!("{}", path.display()))?;
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        let kind = if path.is_dir() {
            Kind::Folder
        } else {
            match ext.as_deref() {
                Some("csv") => Kind::Csv,
                Some("jsonl" | "ndjson" | "json") => Kind::JsonLines,
                _ => bail!(
                    "{}: expected a folder of <category>/<image> files, a .csv or a .jsonl file",
                    path.display()
                ),
            }
        };
        Ok(Source { path, kind })
    }

    pub fn entries(&self) -> Result<Vec<Entry>> {
        let entries = match self.kind {
            Kind::Folder => folder_entries(&self.path)?,
            Kind::Csv | Kind::JsonLines => {
                let text = std::fs::read_to_string(&self.path)
                    .with_context(|| format!("reading {}", self.path.display()))?;
                let dir = self.path.parent().unwrap_or(Path::new("/"));
                if self.kind == Kind::Csv {
                    parse_csv(&text, dir)
                } else {
                    parse_jsonl(&text, dir)
                }
                .with_context(|| format!("{}", self.path.display()))?
            }
        };
        check_unique_external_ids(&entries).with_context(|| format!("{}", self.path.display()))?;
        Ok(entries)
    }

    /// `<source>.failures.jsonl`, beside the source.
    pub fn default_failures_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".failures.jsonl");
        self.path.with_file_name(name)
    }
}

/// Uploads: the category is the folder name, the external id the relative path.
fn folder_entries(folder: &Path) -> Result<Vec<Entry>> {
    Ok(crate::cli::folder::walk(folder, None)?
        .into_iter()
        .map(|image| Entry {
            origin: Origin::File(image.path),
            external_id: Some(image.rel.clone()),
            product_id: None,
            category: Some(image.category),
            metadata: Map::new(),
            at: image.rel,
        })
        .collect())
}

/// A header row naming `url` (or `file`), optionally `external_id`, `product_id` and `category`; every other
/// column goes into the metadata, as text (empty cells left out).
pub fn parse_csv(text: &str, base_dir: &Path) -> Result<Vec<Entry>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.strip_prefix('\u{feff}').unwrap_or(text).as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .context("reading the header row")?
        .iter()
        .map(str::to_string)
        .collect();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (url, file) = (column("url"), column("file"));
    if url.is_none() && file.is_none() {
        bail!("the header row names no `url` (or `file`) column: {headers:?}");
    }
    let (external_id, category) = (column("external_id"), column("category"));
    let product_id = column("product_id");
    let known = [url, file, external_id, product_id, category];
    let mut entries = Vec::new();
    for record in reader.records() {
        let record = record?;
        let line = record.position().map_or(0, |p| p.line());
        let at = format!("line {line}");
        let cell = |i: Option<usize>| {
            i.and_then(|i| record.get(i))
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let metadata: Map<String, Value> = headers
            .iter()
            .enumerate()
            .filter(|(i, _)| !known.contains(&Some(*i)))
            .filter_map(|(i, h)| Some((h.clone(), json!(cell(Some(i))?))))
            .collect();
        entries.push(Entry {
            origin: origin(cell(url), cell(file).map(PathBuf::from), base_dir)
                .with_context(|| at.clone())?,
            external_id: cell(external_id),
            product_id: cell(product_id),
            category: cell(category),
            metadata,
            at,
        });
    }
    Ok(entries)
}

/// CSV cells are text; where the service declares a field a number or a bool (`GET /v1/fields`),
/// a cell that reads as one becomes one, so `price,in_stock` columns filter as the catalogue means
/// them. A cell that does not read as its kind stays text, and the service refuses it with its
/// reason (`invalid_field_value`) rather than this tool guessing.
pub fn type_declared_fields(entries: &mut [Entry], declared: &lookalike_core::fields::Fields) {
    use lookalike_core::fields::FieldKind;
    for entry in entries {
        for (name, kind) in declared {
            let Some(Value::String(text)) = entry.metadata.get(name) else {
                continue;
            };
            let text = text.trim();
            let typed = match kind {
                FieldKind::Keyword => None,
                FieldKind::Number => text.parse::<i64>().ok().map(Value::from).or_else(|| {
                    text.parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                }),
                FieldKind::Bool => match text.to_ascii_lowercase().as_str() {
                    "true" => Some(Value::Bool(true)),
                    "false" => Some(Value::Bool(false)),
                    _ => None,
                },
            };
            if let Some(value) = typed {
                entry.metadata.insert(name.clone(), value);
            }
        }
    }
}

/// One line of a JSON-lines source. `error` is what a failures file adds: ignored, so that file can
/// be imported as it is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    url: Option<String>,
    file: Option<PathBuf>,
    external_id: Option<Value>,
    product_id: Option<Value>,
    category: Option<String>,
    metadata: Option<Map<String, Value>>,
    #[serde(rename = "error")]
    _error: Option<Value>,
}

/// One JSON object a line: `url` or `file` (a local path, relative to the file's folder), and
/// optionally `external_id` and `product_id` (text or a number), `category`, `metadata` (an object).
/// Blank lines
/// are skipped.
pub fn parse_jsonl(text: &str, base_dir: &Path) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let at = format!("line {}", i + 1);
        let line: Line = serde_json::from_str(raw).with_context(|| at.clone())?;
        let id = |value: Option<Value>, name: &str| match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s).filter(|s| !s.trim().is_empty())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => bail!("{at}: {name} must be text or a number, not {other}"),
        };
        entries.push(Entry {
            external_id: id(line.external_id, "external_id")?,
            product_id: id(line.product_id, "product_id")?,
            origin: origin(line.url, line.file, base_dir).with_context(|| at.clone())?,
            category: line.category.filter(|c| !c.trim().is_empty()),
            metadata: line.metadata.unwrap_or_default(),
            at,
        });
    }
    Ok(entries)
}

fn origin(url: Option<String>, file: Option<PathBuf>, base_dir: &Path) -> Result<Origin> {
    match (url.filter(|u| !u.trim().is_empty()), file) {
        (Some(url), None) => Ok(Origin::Url(url.trim().to_string())),
        (None, Some(file)) => Ok(Origin::File(base_dir.join(file))),
        (Some(_), Some(_)) => bail!("give `url` or `file`, not both"),
        (None, None) => bail!("no `url` (or `file`)"),
    }
}

/// Two entries naming one external id would make one item whose image depends on which job ran
/// last: refuse the source instead.
fn check_unique_external_ids(entries: &[Entry]) -> Result<()> {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for e in entries {
        if let Some(id) = e.external_id.as_deref()
            && let Some(first) = seen.insert(id, &e.at)
        {
            bail!("external_id `{id}` appears twice ({first} and {})", e.at);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> &'static Path {
        Path::new("/data/feed")
    }

    #[test]
    fn declared_number_and_bool_columns_become_numbers_and_bools() {
        use lookalike_core::fields::{FieldKind, Fields};
        let text = "url,brand,price,in_stock,note\nhttps://s.example/a.jpg,Acme,12.50,TRUE,7\nhttps://s.example/b.jpg,Zeta,cheap,maybe,x\n";
        let mut entries = parse_csv(text, Path::new("/")).unwrap();
        let declared: Fields = [
            ("brand".to_string(), FieldKind::Keyword),
            ("price".to_string(), FieldKind::Number),
            ("in_stock".to_string(), FieldKind::Bool),
        ]
        .into();
        type_declared_fields(&mut entries, &declared);
        assert_eq!(
            Value::Object(entries[0].metadata.clone()),
            json!({"brand": "Acme", "price": 12.5, "in_stock": true, "note": "7"}),
            "undeclared columns stay text"
        );
        assert_eq!(
            Value::Object(entries[1].metadata.clone()),
            json!({"brand": "Zeta", "price": "cheap", "in_stock": "maybe", "note": "x"}),
            "cells that do not read as their kind are left for the service to refuse"
        );
    }

    #[test]
    fn csv_columns_map_to_fields_and_the_rest_to_metadata() {
        let text = "\u{feff}url, external_id ,category,brand,price,Product_ID\n\
                    https://shop.example/a.jpg,sku-1,shoes,Acme,12.50,coat-7\n\
                    \"https://shop.example/b.jpg\",sku-2,,\"Acme, Inc.\",,\n";
        let entries = parse_csv(text, base()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0],
            Entry {
                origin: Origin::Url("https://shop.example/a.jpg".into()),
                external_id: Some("sku-1".into()),
                product_id: Some("coat-7".into()),
                category: Some("shoes".into()),
                metadata: json!({"brand": "Acme", "price": "12.50"})
                    .as_object()
                    .unwrap()
                    .clone(),
                at: "line 2".into(),
            }
        );
        // Quoted commas stay in their cell; empty cells are absent, not empty strings.
        assert_eq!(entries[1].category, None);
        assert_eq!(entries[1].product_id, None);
        assert_eq!(
            Value::Object(entries[1].metadata.clone()),
            json!({"brand": "Acme, Inc."})
        );
        assert_eq!(entries[1].at, "line 3");
    }

    #[test]
    fn csv_without_a_url_column_or_with_a_row_lacking_one_is_refused() {
        let e = parse_csv("external_id,category\nsku-1,shoes\n", base()).unwrap_err();
        assert!(e.to_string().contains("no `url`"), "{e}");
        let e = parse_csv("url,category\nhttps://x.example/a.jpg,a\n,b\n", base()).unwrap_err();
        assert_eq!(format!("{e:#}"), "line 3: no `url` (or `file`)");
        let e = parse_csv("url,category\nhttps://x.example/a.jpg,a,extra\n", base()).unwrap_err();
        assert!(format!("{e:#}").contains("fields"), "{e:#}");
    }

    #[test]
    fn csv_file_column_is_relative_to_the_csv() {
        let entries =
            parse_csv("file,category\nimg/a.jpg,shoes\n/abs/b.png,bags\n", base()).unwrap();
        assert_eq!(
            entries[0].origin,
            Origin::File("/data/feed/img/a.jpg".into())
        );
        assert_eq!(entries[1].origin, Origin::File("/abs/b.png".into()));
        assert_eq!(entries[0].external_id, None);
    }

    #[test]
    fn jsonl_reads_urls_files_numbers_and_ignores_the_error_a_failures_file_adds() {
        let text = r#"{"url": "https://shop.example/a.jpg", "external_id": "sku-1", "category": "shoes", "metadata": {"price": 12.5}}

{"file": "img/b.png", "external_id": 42, "product_id": 7, "error": {"code": "image_corrupt", "message": "bad"}}
"#;
        let entries = parse_jsonl(text, base()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0].origin,
            Origin::Url("https://shop.example/a.jpg".into())
        );
        assert_eq!(
            Value::Object(entries[0].metadata.clone()),
            json!({"price": 12.5})
        );
        assert_eq!(
            entries[1].origin,
            Origin::File("/data/feed/img/b.png".into())
        );
        assert_eq!(entries[1].external_id.as_deref(), Some("42"));
        assert_eq!(entries[1].product_id.as_deref(), Some("7"));
        assert_eq!(entries[0].product_id, None);
        assert_eq!(entries[1].at, "line 3");
    }

    #[test]
    fn jsonl_mistakes_name_their_line() {
        for (text, want) in [
            ("{\"url\": \"https://a.example/x.jpg\"}\n{nope}\n", "line 2"),
            ("{\"urls\": \"https://a.example/x.jpg\"}\n", "unknown field"),
            ("{\"url\": \"u\", \"file\": \"f\"}\n", "not both"),
            ("{\"category\": \"shoes\"}\n", "no `url`"),
            (
                "{\"url\": \"u\", \"external_id\": [1]}\n",
                "text or a number",
            ),
            ("{\"url\": \"u\", \"metadata\": \"x\"}\n", "line 1"),
        ] {
            let e = format!("{:#}", parse_jsonl(text, base()).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_failures_line_reads_back_as_the_same_entry() {
        let entry = Entry {
            origin: Origin::File("/data/feed/shoes/a.jpg".into()),
            external_id: Some("shoes/a.jpg".into()),
            product_id: Some("coat-7".into()),
            category: Some("shoes".into()),
            metadata: json!({"colour": "red"}).as_object().unwrap().clone(),
            at: "shoes/a.jpg".into(),
        };
        let mut line = entry.to_json();
        line["error"] = json!({"code": "image_corrupt", "message": "bad bytes"});
        let back = parse_jsonl(&line.to_string(), Path::new("/elsewhere")).unwrap();
        assert_eq!(
            back,
            vec![Entry {
                at: "line 1".into(),
                ..entry
            }]
        );
    }

    #[test]
    fn a_repeated_external_id_is_refused() {
        let entries = parse_csv(
            "url,external_id\nhttps://a.example/1.jpg,x\nhttps://a.example/2.jpg,y\nhttps://a.example/3.jpg,x\n",
            base(),
        )
        .unwrap();
        let e = check_unique_external_ids(&entries).unwrap_err().to_string();
        assert!(e.contains("line 2 and line 4"), "{e}");
    }

    #[test]
    fn the_source_kind_comes_from_what_the_path_is() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("feed.CSV");
        std::fs::write(&csv, "url\n").unwrap();
        std::fs::write(dir.path().join("feed.txt"), "").unwrap();
        assert_eq!(Source::open(dir.path()).unwrap().kind, Kind::Folder);
        let source = Source::open(&csv).unwrap();
        assert_eq!(source.kind, Kind::Csv);
        assert_eq!(
            source.default_failures_path(),
            source.path.with_file_name("feed.CSV.failures.jsonl")
        );
        assert!(Source::open(&dir.path().join("feed.txt")).is_err());
        assert!(Source::open(&dir.path().join("absent.csv")).is_err());
    }

    #[test]
    fn a_url_entry_is_sent_as_its_input_line_says() {
        let text = "{\"url\": \"https://a.example/x.jpg\", \"external_id\": 7, \"metadata\": {\"price\": 12.5}}\n\
                    {\"url\": \"https://a.example/y.jpg\", \"category\": \"shoes\"}\n\
                    {\"file\": \"shoes/a.jpg\"}\n";
        let entries = parse_jsonl(text, base()).unwrap();
        for e in &entries[..2] {
            assert_eq!(
                serde_json::to_value(e.url_item().unwrap()).unwrap(),
                e.to_json()
            );
        }
        assert!(entries[2].url_item().is_none());
    }
}
