//! Query benchmark: the API's similarity endpoints against the index's own speed, measured in one run.
//!
//!   cargo bench --bench query                               # 10,000 and 100,000 items
//!   cargo bench --bench query -- --items 10000 --secs 5 --rounds 2 --recall 500
//!
//! For each catalogue size:
//! 1. Synthetic catalogue: clustered unit vectors (see [`Catalogue::generate`]) written through the
//!    library crates: item rows (with their jobs and category prototypes) in a fresh Postgres database,
//!    points with the worker's payload (category, model id) in an index directory. Then one explicit
//!    optimize builds the HNSW graphs, timed, so every query below runs on a fully indexed shard.
//! 2. The index's own speed: the exact filtered top-10 request `GET /v1/items/{id}/similar` makes
//!    (item's vector, its category, itself excluded, model id), in process through `EdgeIndex`, with 1
//!    and 16 concurrent callers; recall@10 of those answers against exact search within the category.
//! 3. The real `lookalike serve` on the same data (its own copy of the optimized index, so both can be
//!    open at once and the two measurements alternate, round by round, on this noisy machine):
//!    `GET /v1/items/{id}/similar?k=10` with 1 and 16 keep-alive clients, same items.
//! 4. `POST /v1/search` with real images against the model's own time for those images (the vision
//!    crate's `Embedder`, same model and threads as the service, in this process), alternating too;
//!    the service's own stage timings over the one-client uploads say where the rest goes (see
//!    `stages.rs`).
//! 5. Grouped similarity (`group=product`, `collapse=true`) against the plain top-10, one query at a
//!    time, on the embedded index, on a Qdrant server this benchmark starts with the same points, and
//!    through the API, with recall against exact grouping (see `grouped.rs`). The catalogue has
//!    products of 1–6 images and near-copies of listed images (see [`Catalogue::generate`]).
//! 6. Filters on declared metadata fields at 50 %, 5 % and 0.5 % of the catalogue (a number range and
//!    a keyword): recall@10 of the index's and the API's answers against exact search done here, and
//!    p50 latency of the index, of the index searching exactly, and of the API (see `measure_filters`).
//!
//! The figures that matter are the ratios measured side by side; absolute numbers move with the load.
//! CPU time per query of this process, the service and its Postgres backends is reported beside them,
//! to show where the API's time goes. Results also go to `bench-results/query-<date>.json` with the
//! date, the machine and the command.

#[path = "../../tests/support/mod.rs"]
mod support;

#[path = "../common/mod.rs"]
mod common;
mod grouped;
mod stages;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use lookalike_core::Config;
use lookalike_index::{CategoryFilter, EdgeIndex, EdgeOptions, Point, SearchRequest, VectorIndex};
use lookalike_store::Store;
use lookalike_vision::Embedder;
use serde_json::{Value, json};
use uuid::Uuid;

const K: usize = 10;
/// Real catalogues are uneven; category `i` gets a share proportional to `1/sqrt(i+1)`, so at 100k
/// the largest holds ~15k items (searched through its graph) and the smallest ~3.7k (small enough
/// for the engine to scan exactly).
const CATEGORIES: [&str; 16] = [
    "tops",
    "dresses",
    "coats",
    "jeans",
    "skirts",
    "shoes",
    "sneakers",
    "boots",
    "bags",
    "hats",
    "scarves",
    "watches",
    "sunglasses",
    "jewellery",
    "belts",
    "socks",
];

struct Args {
    items: Vec<usize>,
    secs: f64,
    rounds: usize,
    recall: usize,
    seed: u64,
}

impl Args {
    fn parse() -> anyhow::Result<Self> {
        let argv: Vec<String> = std::env::args().collect();
        let value = |name: &str| {
            argv.iter()
                .position(|a| a == name)
                .and_then(|i| argv.get(i + 1))
                .cloned()
        };
        let items = match value("--items") {
            Some(list) => list
                .split(',')
                .map(|s| s.trim().replace('_', "").parse())
                .collect::<Result<Vec<usize>, _>>()?,
            None => vec![10_000, 100_000],
        };
        Ok(Args {
            items,
            secs: value("--secs")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(5.0),
            rounds: value("--rounds")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(2),
            recall: value("--recall")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(500),
            seed: value("--seed").map(|s| s.parse()).transpose()?.unwrap_or(7),
        })
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` also runs bench targets; the benchmark only runs under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("query benchmark: run it with `cargo bench --bench query`");
        return Ok(());
    }
    let args = Args::parse()?;
    // Settings given as LOOKALIKE_<SECTION>__<KEY> apply to the service and to the in-process runs.
    let overrides: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("LOOKALIKE_") && k.contains("__"))
        .collect();
    let config = Config::load_from(None, overrides.clone())?;
    let images = query_images()?;
    println!(
        "query images: {}",
        images
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let root = support::repo_root().join(".lookalike");
    let mut spec = lookalike::model_spec(&config);
    spec.path = root.join("models/clip_vitb16_visual_int8.onnx");
    let embedder = Arc::new(Embedder::load(
        &root.join("lib/libonnxruntime.so.1.31.1"),
        spec,
        // The session a lone search runs on (the pool is idle between searches).
        lookalike::pool_shape(&config).1,
    )?);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut reports = Vec::new();
    for &n in &args.items {
        let report = rt.block_on(run_size(
            n,
            &args,
            &config,
            &overrides,
            embedder.clone(),
            &images,
        ))?;
        print_report(&report);
        reports.push(report);
    }
    let given: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let command = if given.is_empty() {
        "cargo bench --bench query".to_string()
    } else {
        format!("cargo bench --bench query -- {}", given.join(" "))
    };
    let figures = json!({
        "args": {"items": args.items, "secs": args.secs, "rounds": args.rounds, "recall_queries": args.recall, "seed": args.seed},
        "sizes": reports,
    });
    let out = common::write_result("query", &command, figures)?;
    println!("\nresults written to {}", out.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Synthetic catalogue

/// SplitMix64: deterministic across platforms and crate versions, so a seed always means the same
/// catalogue.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n - 1)
    }
    fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
    fn unit(&mut self, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| self.normal()).collect();
        normalise(&mut v);
        v
    }
    fn uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

struct Catalogue {
    dim: usize,
    ids: Vec<Uuid>,
    category: Vec<u16>,
    vectors: Vec<f32>,
    /// Item positions per category, for exact search and prototypes.
    members: Vec<Vec<u32>>,
    /// Each item's product (an index into `products`).
    product: Vec<u32>,
    /// Item positions per product.
    products: Vec<Vec<u32>>,
    /// Each item's near-duplicate group (named by the first item's id, as ingest names it).
    duplicate_group: Vec<Option<Uuid>>,
    /// Item positions per duplicate group.
    duplicates: HashMap<Uuid, Vec<u32>>,
}

/// How a price-comparison catalogue is made of products and listings: half the images are further
/// views of a product of 1–6 images (cosine ~0.94 to its first view), and 5 % are another seller's
/// near-copy of an image already listed (cosine ~0.995), under a product of their own.
const VIEW_SHARE: f64 = 0.5;
const MAX_VIEWS: usize = 6;
const VIEW_NOISE: f32 = 0.35;
const COPY_SHARE: f64 = 0.05;
const COPY_NOISE: f32 = 0.1;

impl Catalogue {
    /// Shaped like CLIP embeddings of a product catalogue rather than uniform noise, because HNSW
    /// recall and speed depend on the shape: a direction shared by every image (CLIP similarities
    /// rarely drop below ~0.3), one per category, one per style within the category (32 each), a
    /// few attribute directions drawn from a shared pool (colour, material...) and isotropic noise.
    /// Cosine similarity comes out ~0.85 within a style, ~0.7 within a category, ~0.35 across.
    /// Products and near-copies as [`VIEW_SHARE`] and [`COPY_SHARE`] say.
    fn generate(n: usize, dim: usize, seed: u64) -> Self {
        let mut rng = Rng(seed);
        let global = rng.unit(dim);
        let centres: Vec<Vec<f32>> = CATEGORIES.iter().map(|_| rng.unit(dim)).collect();
        let styles: Vec<Vec<Vec<f32>>> = CATEGORIES
            .iter()
            .map(|_| (0..32).map(|_| rng.unit(dim)).collect())
            .collect();
        let attributes: Vec<Vec<f32>> = (0..64).map(|_| rng.unit(dim)).collect();
        let weights: Vec<f64> = (0..CATEGORIES.len())
            .map(|i| 1.0 / ((i + 1) as f64).sqrt())
            .collect();
        let total: f64 = weights.iter().sum();

        let mut cat = Catalogue {
            dim,
            ids: Vec::with_capacity(n),
            category: Vec::with_capacity(n),
            vectors: Vec::with_capacity(n * dim),
            members: vec![Vec::new(); CATEGORIES.len()],
            product: Vec::with_capacity(n),
            products: Vec::new(),
            duplicate_group: Vec::with_capacity(n),
            duplicates: HashMap::new(),
        };
        // Per category, the product still taking views: (product, its first view, views left).
        let mut open: Vec<Option<(u32, usize, usize)>> = vec![None; CATEGORIES.len()];
        // `base + noise` of norm ~`norm`, normalised.
        let near = |rng: &mut Rng, base: &[f32], norm: f32| {
            let scale = norm / (base.len() as f32).sqrt();
            let mut v: Vec<f32> = base.iter().map(|x| x + scale * rng.normal()).collect();
            normalise(&mut v);
            v
        };
        // Isotropic noise of norm ~0.35 whatever the dimension.
        let noise = 0.35 / (dim as f32).sqrt();
        for i in 0..n {
            let mut pick = rng.uniform() * total;
            let mut c = 0;
            while c + 1 < weights.len() && pick >= weights[c] {
                pick -= weights[c];
                c += 1;
            }
            let style = &styles[c][rng.below(32)];
            let mut v: Vec<f32> = (0..dim)
                .map(|d| global[d] + centres[c][d] + 0.7 * style[d] + noise * rng.normal())
                .collect();
            for _ in 0..3 {
                let a = &attributes[rng.below(attributes.len())];
                let w = 0.6 * rng.uniform() as f32;
                v.iter_mut().zip(a).for_each(|(x, y)| *x += w * y);
            }
            normalise(&mut v);
            let (mut product, mut group) = (None, None);
            let draw = rng.uniform();
            if draw < VIEW_SHARE
                && let Some((p, first, left)) = open[c]
            {
                v = near(
                    &mut rng,
                    &cat.vectors[first * dim..(first + 1) * dim],
                    VIEW_NOISE,
                );
                product = Some(p);
                open[c] = (left > 1).then_some((p, first, left - 1));
            } else if draw < VIEW_SHARE + COPY_SHARE && !cat.members[c].is_empty() {
                let of = cat.members[c][rng.below(cat.members[c].len())] as usize;
                v = near(&mut rng, &cat.vectors[of * dim..(of + 1) * dim], COPY_NOISE);
                let g = *cat.duplicate_group[of].get_or_insert(cat.ids[of]);
                cat.duplicates.entry(g).or_insert_with(|| vec![of as u32]);
                group = Some(g);
            }
            let product = product.unwrap_or_else(|| {
                let p = cat.products.len() as u32;
                cat.products.push(Vec::new());
                let views = 1 + rng.below(MAX_VIEWS);
                if group.is_none() {
                    open[c] = (views > 1).then_some((p, i, views - 1));
                }
                p
            });
            cat.ids.push(rng.uuid());
            cat.category.push(c as u16);
            cat.vectors.extend_from_slice(&v);
            cat.members[c].push(i as u32);
            cat.product.push(product);
            cat.products[product as usize].push(i as u32);
            if let Some(g) = group {
                cat.duplicates
                    .get_mut(&g)
                    .expect("made above")
                    .push(i as u32);
            }
            cat.duplicate_group.push(group);
        }
        cat
    }

    /// The product id item `i` is stored with.
    fn product_id(&self, i: usize) -> String {
        format!("prod-{:07}", self.product[i])
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn vector(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }

    fn category_name(&self, i: usize) -> &'static str {
        CATEGORIES[self.category[i] as usize]
    }

    /// Exact cosine top-k within item `i`'s category, itself excluded.
    fn exact_neighbours(&self, i: usize, k: usize) -> Vec<Uuid> {
        let q = self.vector(i);
        let mut scored: Vec<(f32, u32)> = self.members[self.category[i] as usize]
            .iter()
            .filter(|&&j| j as usize != i)
            .map(|&j| (dot(q, self.vector(j as usize)), j))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored
            .iter()
            .take(k)
            .map(|&(_, j)| self.ids[j as usize])
            .collect()
    }
}

/// Item rows as the worker leaves them (each with its succeeded job), plus the category prototypes
/// that search-by-upload classifies with. Bulk inserts: the rows, not the insert path, are measured.
fn synthetic_metadata(i: usize) -> Value {
    json!({
        "title": format!("synthetic item {i}"),
        "price_cents": 1000 + i % 9000,
        "price": price_of(i),
        "brand": brand_of(i),
    })
}

/// The declared filter fields of the synthetic catalogue: a price spread evenly over 0..1000
/// (so `price_lt=x` keeps x/10 % of the items, whatever their category or vector) and one of 200
/// brands (so one brand is 0.5 %).
fn price_of(i: usize) -> u64 {
    ((i as u64).wrapping_mul(7919) ^ 0x5bd1) % 1000
}

fn brand_of(i: usize) -> String {
    format!(
        "b{:03}",
        ((i as u64).wrapping_mul(2_654_435_761) >> 7) % 200
    )
}

/// A measured filter: its share of the catalogue, its query parameter, and which synthetic items
/// (by index) it keeps.
type FilterCase = (
    &'static str,
    (&'static str, String),
    Box<dyn Fn(usize) -> bool + Send + Sync>,
);

/// The filters measured, by the share of the catalogue they keep: the query parameters the API
/// gets and the predicate exact search applies.
fn filter_cases() -> Vec<FilterCase> {
    vec![
        (
            "50%",
            ("price_lt", "500".into()),
            Box::new(|i| price_of(i) < 500),
        ),
        (
            "5%",
            ("price_lt", "50".into()),
            Box::new(|i| price_of(i) < 50),
        ),
        (
            "0.5%",
            ("price_lt", "5".into()),
            Box::new(|i| price_of(i) < 5),
        ),
        (
            "0.5% (keyword)",
            ("brand", "b007".into()),
            Box::new(|i| brand_of(i) == "b007"),
        ),
    ]
}

fn declared_fields() -> lookalike_core::fields::Fields {
    [
        (
            "brand".to_string(),
            lookalike_core::fields::FieldKind::Keyword,
        ),
        (
            "price".to_string(),
            lookalike_core::fields::FieldKind::Number,
        ),
    ]
    .into()
}

async fn populate_database(store: &Store, cat: &Catalogue, model_id: &str) -> anyhow::Result<()> {
    let pool = store.pool();
    for chunk in (0..cat.len()).collect::<Vec<_>>().chunks(5000) {
        let ids: Vec<Uuid> = chunk.iter().map(|&i| cat.ids[i]).collect();
        let urls: Vec<String> = chunk
            .iter()
            .map(|&i| format!("https://images.example/catalogue/{i}.jpg"))
            .collect();
        let external: Vec<String> = chunk.iter().map(|&i| format!("sku-{i:07}")).collect();
        let categories: Vec<String> = chunk
            .iter()
            .map(|&i| cat.category_name(i).to_string())
            .collect();
        let metadata: Vec<String> = chunk
            .iter()
            .map(|&i| synthetic_metadata(i).to_string())
            .collect();
        let sha: Vec<String> = chunk
            .iter()
            .map(|&i| format!("{:064x}", cat.ids[i].as_u128()))
            .collect();
        // Each item keeps its embedding, as the worker stores it: the classifier head trains on them.
        let embeddings: Vec<String> = chunk
            .iter()
            .map(|&i| {
                let v: Vec<String> = cat.vector(i).iter().map(f32::to_string).collect();
                format!("{{{}}}", v.join(","))
            })
            .collect();
        sqlx::query(
            "INSERT INTO jobs (id, status, source_kind, source_url, external_id, category, metadata,
                 attempts, item_id, started_at, finished_at)
             SELECT id, 'succeeded', 'url', url, ext, cat, meta::jsonb, 1, id, now(), now()
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])
                 AS t(id, url, ext, cat, meta)",
        )
        .bind(&ids)
        .bind(&urls)
        .bind(&external)
        .bind(&categories)
        .bind(&metadata)
        .execute(pool)
        .await?;
        let products: Vec<String> = chunk.iter().map(|&i| cat.product_id(i)).collect();
        let groups: Vec<Option<Uuid>> = chunk.iter().map(|&i| cat.duplicate_group[i]).collect();
        sqlx::query(
            "INSERT INTO items (id, job_id, external_id, source_kind, source_url, content_sha256,
                 byte_size, format, width, height, category, category_source, model_id, metadata,
                 embedding, product_id, duplicate_group)
             SELECT id, id, ext, 'url', url, sha, 150000, 'jpeg', 1600, 1067, cat, 'provided', $7,
                 meta::jsonb, emb::real[], product, dup
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                 $8::text[], $9::text[], $10::uuid[])
                 AS t(id, url, ext, cat, meta, sha, emb, product, dup)",
        )
        .bind(&ids)
        .bind(&urls)
        .bind(&external)
        .bind(&categories)
        .bind(&metadata)
        .bind(&sha)
        .bind(model_id)
        .bind(&embeddings)
        .bind(&products)
        .bind(&groups)
        .execute(pool)
        .await?;
    }
    for (c, members) in cat.members.iter().enumerate() {
        let mut sum = vec![0f32; cat.dim];
        for &i in members {
            sum.iter_mut()
                .zip(cat.vector(i as usize))
                .for_each(|(s, v)| *s += v);
        }
        sqlx::query(
            "INSERT INTO category_prototypes (model_id, category, vector_sum, items)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(model_id)
        .bind(CATEGORIES[c])
        .bind(&sum)
        .bind(members.len() as i32)
        .execute(pool)
        .await?;
    }
    // Autovacuum would get there eventually; a catalogue that has been live a while has statistics.
    sqlx::query("ANALYZE").execute(pool).await?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Load generation and accounting

/// CPU time (ms) of one process, from /proc.
fn process_cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks * 1000.0 / hz)
}

/// Postgres backends serving one database (their process title names it).
fn postgres_backends(db_name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let title = String::from_utf8_lossy(&c);
                    title.starts_with("postgres:") && title.contains(db_name)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[derive(Clone)]
struct CpuProbe {
    service_pid: Option<u32>,
    db_name: String,
}

struct CpuSnapshot {
    bench: f64,
    service: f64,
    postgres: HashMap<u32, f64>,
}

/// CPU milliseconds spent during a phase by this process, the service and its Postgres backends.
#[derive(Clone, Copy, Default)]
struct CpuSpent {
    bench: f64,
    service: f64,
    postgres: f64,
}

impl CpuProbe {
    fn snapshot(&self) -> CpuSnapshot {
        CpuSnapshot {
            bench: process_cpu_ms(std::process::id()).unwrap_or(0.0),
            service: self.service_pid.and_then(process_cpu_ms).unwrap_or(0.0),
            postgres: postgres_backends(&self.db_name)
                .into_iter()
                .filter_map(|pid| Some((pid, process_cpu_ms(pid)?)))
                .collect(),
        }
    }
    fn since(&self, start: &CpuSnapshot) -> CpuSpent {
        let end = self.snapshot();
        CpuSpent {
            bench: end.bench - start.bench,
            service: end.service - start.service,
            // A backend that started during the phase started from zero.
            postgres: end
                .postgres
                .iter()
                .map(|(pid, ms)| ms - start.postgres.get(pid).copied().unwrap_or(0.0))
                .sum(),
        }
    }
}

/// Latencies (ms) and throughput of one measured phase, pooled over rounds.
#[derive(Default)]
struct Phase {
    latencies: Vec<f64>,
    requests: usize,
    secs: f64,
    cpu: CpuSpent,
    per_round_qps: Vec<f64>,
}

impl Phase {
    fn add(&mut self, latencies: Vec<f64>, secs: f64, cpu: CpuSpent) {
        self.per_round_qps.push(latencies.len() as f64 / secs);
        self.requests += latencies.len();
        self.secs += secs;
        self.cpu.bench += cpu.bench;
        self.cpu.service += cpu.service;
        self.cpu.postgres += cpu.postgres;
        self.latencies.extend(latencies);
    }
    fn qps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
    fn mean(&self) -> f64 {
        self.latencies.iter().sum::<f64>() / self.latencies.len().max(1) as f64
    }
    fn percentile(&self, p: f64) -> f64 {
        let mut v = self.latencies.clone();
        v.sort_by(f64::total_cmp);
        percentile(&v, p)
    }
    fn json(&self) -> Value {
        let per = |ms: f64| ms / self.requests.max(1) as f64;
        json!({
            "requests": self.requests,
            "qps": self.qps(),
            "p50_ms": self.percentile(0.5),
            "p99_ms": self.percentile(0.99),
            "mean_ms": self.mean(),
            "qps_per_round": self.per_round_qps,
            "cpu_ms_per_request": {
                "bench_process": per(self.cpu.bench),
                "service": per(self.cpu.service),
                "postgres_backends": per(self.cpu.postgres),
            },
        })
    }
}

/// `sorted` ascending; nearest-rank percentile.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// `clients` tasks call `f(i)` back to back (i = 0, 1, 2, ... shared between them) for `warmup`
/// unrecorded, then for `measure`; returns each measured call's latency (ms) and the measured span.
async fn drive<F, Fut>(
    clients: usize,
    warmup: Duration,
    measure: Duration,
    probe: &CpuProbe,
    f: F,
) -> anyhow::Result<(Vec<f64>, f64, CpuSpent)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let run = |span: Duration| {
        let deadline = Instant::now() + span;
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (f, next) = (f.clone(), next.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let started = Instant::now();
                        f(i).await?;
                        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok::<_, anyhow::Error>(latencies)
                })
            })
            .collect();
        async move {
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await??);
            }
            Ok::<_, anyhow::Error>(all)
        }
    };
    run(warmup).await?;
    let cpu = probe.snapshot();
    let started = Instant::now();
    let latencies = run(measure).await?;
    // The span ends when the last call in flight at the deadline returned.
    Ok((
        latencies,
        started.elapsed().as_secs_f64(),
        probe.since(&cpu),
    ))
}

// ---------------------------------------------------------------------------------------------
// Query images

#[derive(Clone)]
struct QueryImage {
    name: String,
    bytes: Vec<u8>,
}

/// The real product photos when fetched (`scripts/fetch-datasets.sh`), else the reference images.
fn query_images() -> anyhow::Result<Vec<QueryImage>> {
    let datasets = support::repo_root().join(".lookalike/datasets");
    let mut dirs: Vec<PathBuf> = ["vendure", "saleor"]
        .iter()
        .map(|s| datasets.join(s))
        .filter(|p| p.exists())
        .collect();
    if dirs.is_empty() {
        dirs.push(support::reference_dir());
    }
    let mut files = Vec::new();
    for dir in dirs {
        support::images::collect_images(&dir, &mut files);
    }
    // A handful, spread over the set: enough to vary size and format, few enough to repeat often.
    let step = (files.len() / 8).max(1);
    let picked: Vec<QueryImage> = files
        .iter()
        .step_by(step)
        .take(8)
        .map(|p| QueryImage {
            name: p.file_name().unwrap().to_string_lossy().into_owned(),
            bytes: support::read(p),
        })
        .collect();
    anyhow::ensure!(!picked.is_empty(), "no query images found");
    Ok(picked)
}

/// What one image costs in process, step by step, as `Analyser::analyse` does them.
#[derive(Default)]
struct ModelTimes {
    decode: Vec<f64>,
    preprocess: Vec<f64>,
    thumbnail: Vec<f64>,
    model: Vec<f64>,
}

fn time_model(
    embedder: &Embedder,
    config: &Config,
    images: &[QueryImage],
    reps: usize,
    out: &mut ModelTimes,
) -> anyhow::Result<()> {
    let limits = lookalike::decode_limits(config);
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    for _ in 0..reps {
        for image in images {
            let t = Instant::now();
            // As the service decodes for a new catalogue (JPEGs in draft, `model.reduced_decode`).
            let clean =
                lookalike_vision::clean_for(&image.bytes, &limits, embedder.spec().draft_size())?;
            out.decode.push(ms(t));
            let t = Instant::now();
            let tensor = lookalike_vision::to_tensor(&clean.rgb, embedder.spec());
            out.preprocess.push(ms(t));
            let t = Instant::now();
            let _ = lookalike_vision::thumbnail_jpeg(&clean.rgb, config.worker.thumbnail_size);
            out.thumbnail.push(ms(t));
            let t = Instant::now();
            embedder.embed_batch(std::slice::from_ref(&tensor))?;
            out.model.push(ms(t));
        }
    }
    Ok(())
}

/// One `POST /v1/search` with an image, its answer read.
async fn upload(
    client: &reqwest::Client,
    base: &str,
    name: String,
    bytes: Vec<u8>,
) -> anyhow::Result<()> {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name(name),
    );
    client
        .post(format!("{base}/v1/search"))
        .multipart(form)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    Ok(())
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn p50(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

// ---------------------------------------------------------------------------------------------
// One catalogue size

async fn run_size(
    n: usize,
    args: &Args,
    config: &Config,
    overrides: &[(String, String)],
    embedder: Arc<Embedder>,
    images: &[QueryImage],
) -> anyhow::Result<Value> {
    println!("\n== {n} items ==");
    let model_id = config.model.id.clone();
    let dim = config.model.dim;
    let mut env = support::TestEnv::new().await;
    for (key, value) in overrides {
        env.set(key.trim_start_matches("LOOKALIKE_"), value);
    }
    // The production log level: per-request debug output would cost the service CPU.
    env.extra_env.push(("RUST_LOG".into(), "info".into()));
    env.set("FIELDS__BRAND", "keyword")
        .set("FIELDS__PRICE", "number");

    let t = Instant::now();
    let cat = Arc::new(Catalogue::generate(n, dim, args.seed));
    let sizes: Vec<usize> = cat.members.iter().map(Vec::len).collect();
    println!(
        "catalogue generated in {:.1}s; category sizes {:?}",
        t.elapsed().as_secs_f64(),
        sizes
    );

    let store = Store::connect_lazy(&env.db_url, 4, Duration::from_secs(10))?;
    lookalike::migrate(&store, &env.db_url).await?;
    let t = Instant::now();
    populate_database(&store, &cat, &model_id).await?;
    let db_secs = t.elapsed().as_secs_f64();
    println!("postgres: {n} items in {db_secs:.1}s");

    // No automatic optimize while loading: one explicit build afterwards, timed on its own.
    let index_dir = env.dir.path().join("index");
    let dir = index_dir.clone();
    let index = tokio::task::spawn_blocking(move || {
        EdgeIndex::open(
            &dir,
            dim,
            EdgeOptions {
                optimize_after_points: 0,
                ..EdgeOptions::default()
            },
        )
    })
    .await??;
    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let points = chunk.iter().map(|&i| point(&cat, i, &model_id)).collect();
        index.upsert(points).await?;
    }
    let upsert_secs = t.elapsed().as_secs_f64();
    // As the service does at start, so the optimize below builds the payload indexes too.
    let fields: Vec<_> = declared_fields().into_iter().collect();
    index.index_fields(&fields).await?;
    println!("index: {n} points upserted in {upsert_secs:.1}s; building HNSW...");
    let t = Instant::now();
    index.optimize_now().await?;
    let optimize_secs = t.elapsed().as_secs_f64();
    let stats = index.stats().await?;
    println!(
        "index: optimize took {optimize_secs:.1}s; {} segments, {} of {} vectors in an HNSW graph",
        stats.segments, stats.indexed_vectors, stats.points
    );
    index.close().await?;

    // The service gets the optimized directory, this process a copy: both open at once, so the
    // in-process and HTTP measurements can alternate.
    let bench_dir = env.dir.path().join("index-bench");
    copy_dir(&index_dir, &bench_dir)?;
    let index = Arc::new(
        tokio::task::spawn_blocking(move || {
            EdgeIndex::open(&bench_dir, dim, EdgeOptions::default())
        })
        .await??,
    );
    let copy_stats = index.stats().await?;
    anyhow::ensure!(
        copy_stats.points == stats.points && copy_stats.indexed_vectors == stats.indexed_vectors,
        "the copied index differs: {copy_stats:?} vs {stats:?}"
    );

    // The same catalogue on a Qdrant server, for the grouped rows.
    let server = grouped::load_server(&cat, &model_id).await?;

    // The same query items for every measurement, drawn like traffic (big categories more often).
    let mut rng = Rng(args.seed ^ 0x5eed);
    let queries: Arc<Vec<usize>> = Arc::new(
        (0..4000usize.max(args.recall))
            .map(|_| rng.below(n))
            .collect(),
    );

    // Recall of the index's answers (the ones the API returns) against exact search.
    let t = Instant::now();
    let mut found = 0usize;
    let mut expected = 0usize;
    for &i in queries.iter().take(args.recall) {
        let exact = cat.exact_neighbours(i, K);
        let hits = index.search(similar_request(&cat, i, &model_id)).await?;
        expected += exact.len();
        found += hits.iter().filter(|h| exact.contains(&h.id)).count();
        anyhow::ensure!(
            hits.iter()
                .all(|h| h.category.as_deref() == Some(cat.category_name(i))),
            "a hit outside the query's category"
        );
    }
    let recall = found as f64 / expected as f64;
    println!(
        "recall@{K}: {recall:.4} over {} queries ({:.1}s)",
        args.recall.min(queries.len()),
        t.elapsed().as_secs_f64()
    );

    let service = env.start().await;
    let base = service.base.clone();
    let (status, body) = service.get("/v1/status").await;
    anyhow::ensure!(
        status == 200 && body["index"]["points"] == n as u64,
        "service does not see the catalogue: {body}"
    );
    // The catalogue is labelled, so the service trains its classifier head a few seconds after it
    // starts (seconds of CPU at this size): measure once that is done, as a running service is.
    let started = Instant::now();
    loop {
        let (_, body) = service.get("/v1/status").await;
        let c = &body["classifier"];
        if c["head_enabled"] != true || !c["head"].is_null() {
            println!(
                "classifier head: {} (waited {:.1}s)",
                c["head"],
                started.elapsed().as_secs_f64()
            );
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the service trained no classifier head within 5 minutes: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let probe = CpuProbe {
        service_pid: Some(service.child.id()),
        db_name: env.db_name.clone(),
    };
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
        .build()?;
    // The service must see the catalogue and keep to the item's category.
    let first = queries[0];
    let (status, body) = service
        .get(&format!("/v1/items/{}/similar?k={K}", cat.ids[first]))
        .await;
    let results = body["results"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(
        status == 200
            && results.len() == K
            && results
                .iter()
                .all(|r| r["category"] == cat.category_name(first)),
        "unexpected similar answer: {body}"
    );
    let filtered = measure_filters(
        &cat,
        &index,
        &client,
        &base,
        &queries,
        &model_id,
        args.recall,
    )
    .await?;

    let grouped = grouped::measure(
        &cat,
        &index,
        &server,
        &client,
        &base,
        &queries[..args.recall.min(queries.len())],
        &model_id,
    )
    .await?;
    drop(server);

    let secs = Duration::from_secs_f64(args.secs);
    let warmup = Duration::from_secs_f64((args.secs / 5.0).clamp(0.5, 2.0));
    let mut phases: HashMap<&str, Phase> = HashMap::new();
    let mut model = ModelTimes::default();
    // The service's own stage timings over the one-client upload phases (warm-ups included).
    let mut upload_stages = stages::Totals::default();
    for round in 0..args.rounds {
        println!("round {}/{}", round + 1, args.rounds);
        for clients in [1, 16] {
            let (idx, c, q, m) = (
                index.clone(),
                cat.clone(),
                queries.clone(),
                model_id.clone(),
            );
            let (lat, span, cpu) = drive(clients, warmup, secs, &probe, move |k| {
                let (index, req) = (idx.clone(), similar_request(&c, q[k % q.len()], &m));
                async move {
                    index.search(req).await?;
                    Ok(())
                }
            })
            .await?;
            phases
                .entry(if clients == 1 { "index_1" } else { "index_16" })
                .or_default()
                .add(lat, span, cpu);

            let (http, c, q, b) = (client.clone(), cat.clone(), queries.clone(), base.clone());
            let (lat, span, cpu) = drive(clients, warmup, secs, &probe, move |k| {
                let url = format!("{b}/v1/items/{}/similar?k={K}", c.ids[q[k % q.len()]]);
                let client = http.clone();
                async move {
                    client
                        .get(url)
                        .send()
                        .await?
                        .error_for_status()?
                        .bytes()
                        .await?;
                    Ok(())
                }
            })
            .await?;
            phases
                .entry(if clients == 1 {
                    "http_similar_1"
                } else {
                    "http_similar_16"
                })
                .or_default()
                .add(lat, span, cpu);
        }

        // The model alone on these images, then the same images through the API.
        let embedder = embedder.clone();
        let images_owned = images.to_vec();
        let config_owned = config.clone();
        let times = tokio::task::spawn_blocking(move || {
            let mut times = ModelTimes::default();
            // Warm-up: the first runs of a fresh session are slow.
            time_model(
                &embedder,
                &config_owned,
                &images_owned,
                1,
                &mut ModelTimes::default(),
            )?;
            time_model(&embedder, &config_owned, &images_owned, 4, &mut times)?;
            Ok::<_, anyhow::Error>(times)
        })
        .await??;
        model.decode.extend(times.decode);
        model.preprocess.extend(times.preprocess);
        model.thumbnail.extend(times.thumbnail);
        model.model.extend(times.model);

        let forms: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
            images
                .iter()
                .map(|i| (i.name.clone(), i.bytes.clone()))
                .collect(),
        );
        if round == 0 {
            // The service's first model runs are slow (a fresh session): keep them out of its
            // stage means, as the in-process timings keep out theirs.
            for (name, bytes) in forms.iter().take(4) {
                upload(&client, &base, name.clone(), bytes.clone()).await?;
            }
        }
        for clients in [1, 16] {
            let (http, forms, b) = (client.clone(), forms.clone(), base.clone());
            let before = stages::Totals::read(&client, &base).await?;
            // At least 4 s: an upload takes tens of milliseconds, short phases hold too few.
            let span = secs.max(Duration::from_secs(4));
            let (lat, span, cpu) = drive(clients, warmup, span, &probe, move |k| {
                let (name, bytes) = forms[k % forms.len()].clone();
                let (client, base) = (http.clone(), b.clone());
                async move { upload(&client, &base, name, bytes).await }
            })
            .await?;
            if clients == 1 {
                upload_stages.add(&before.delta(&stages::Totals::read(&client, &base).await?));
            }
            phases
                .entry(if clients == 1 {
                    "http_upload_1"
                } else {
                    "http_upload_16"
                })
                .or_default()
                .add(lat, span, cpu);
        }
    }
    // What an upload search looked like (the synthetic catalogue decides how sure the prediction is).
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(images[0].bytes.clone()).file_name(images[0].name.clone()),
    );
    let (status, sample) = service.post_multipart("/v1/search", form).await;
    anyhow::ensure!(status == 200, "search by upload failed: {sample}");
    drop(service);
    drop(index);

    let model_p50 = p50(&model.model);
    let analyse_p50 = {
        let sums: Vec<f64> = (0..model.model.len())
            .map(|i| model.decode[i] + model.preprocess[i] + model.thumbnail[i] + model.model[i])
            .collect();
        p50(&sums)
    };
    let phase_json: serde_json::Map<String, Value> = phases
        .iter()
        .map(|(k, p)| (k.to_string(), p.json()))
        .collect();
    Ok(json!({
        "items": n,
        "categories": CATEGORIES.len(),
        "category_sizes": sizes,
        "build": {
            "postgres_insert_s": db_secs,
            "index_upsert_s": upsert_secs,
            "index_optimize_s": optimize_secs,
            "segments": stats.segments,
            "points": stats.points,
            "indexed_vectors": stats.indexed_vectors,
        },
        "recall_at_10": recall,
        "recall_queries": args.recall,
        "filtered": filtered,
        "grouped": grouped,
        "phases": phase_json,
        "model_in_process_ms": {
            "decode_p50": p50(&model.decode),
            "preprocess_p50": p50(&model.preprocess),
            "thumbnail_p50": p50(&model.thumbnail),
            "model_p50": model_p50,
            "decode_preprocess_thumbnail_model_p50": analyse_p50,
            // Means, to set beside the service's stage means (`upload_stages_1_client`).
            "decode_mean": mean(&model.decode),
            "preprocess_mean": mean(&model.preprocess),
            "model_mean": mean(&model.model),
            "runs": model.model.len(),
        },
        "upload_search_sample": sample["search"],
        "upload_stages_1_client": upload_stages.per_search(phases["http_upload_1"].mean())?,
        "ratios": {
            "api_qps16_over_index_qps16": phases["http_similar_16"].qps() / phases["index_16"].qps(),
            "similar_p50_ms_1_client": phases["http_similar_1"].percentile(0.5),
            "upload_p50_over_model_p50": phases["http_upload_1"].percentile(0.5) / model_p50,
        },
    }))
}

/// Filtered similarity at each selectivity of [`filter_cases`], over all categories
/// (`category=any`, so the filter alone decides the share searched): recall@10 of the index's answer
/// and of the API's against exact search (every matching item scored here, in process), and p50
/// latencies one query at a time of the index, of the index asked to search exactly, and of the API.
async fn measure_filters(
    cat: &Catalogue,
    index: &EdgeIndex,
    client: &reqwest::Client,
    base: &str,
    queries: &[usize],
    model_id: &str,
    count: usize,
) -> anyhow::Result<Value> {
    let declared = declared_fields();
    let mut rows = Vec::new();
    for (share, (param, value), keep) in filter_cases() {
        let fields = lookalike_core::fields::parse_query([(param, value.as_str())], &declared, &[])
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let matching = (0..cat.len()).filter(|&i| keep(i)).count();
        let (mut found, mut found_api, mut expected) = (0usize, 0usize, 0usize);
        let (mut graph_ms, mut exact_ms, mut api_ms) = (Vec::new(), Vec::new(), Vec::new());
        for &i in queries.iter().take(count) {
            let q = cat.vector(i);
            let mut truth: Vec<(f32, usize)> = (0..cat.len())
                .filter(|&j| j != i && keep(j))
                .map(|j| (dot(q, cat.vector(j)), j))
                .collect();
            truth.sort_by(|a, b| b.0.total_cmp(&a.0));
            let truth: Vec<Uuid> = truth.iter().take(K).map(|&(_, j)| cat.ids[j]).collect();
            let request = |exact| SearchRequest {
                exclude: vec![cat.ids[i]],
                model_id: Some(model_id.to_string()),
                fields: fields.clone(),
                exact,
                ..SearchRequest::new(q.to_vec(), K)
            };
            let t = Instant::now();
            let hits = index.search(request(false)).await?;
            graph_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            index.search(request(true)).await?;
            exact_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            let url = format!(
                "{base}/v1/items/{}/similar?k={K}&category=any&{param}={value}",
                cat.ids[i]
            );
            let (api_ids, ms) = similar_ids(client, url).await?;
            api_ms.push(ms);
            expected += truth.len();
            found += hits.iter().filter(|h| truth.contains(&h.id)).count();
            found_api += api_ids.iter().filter(|id| truth.contains(id)).count();
        }
        let row = json!({
            "selectivity": share,
            "filter": format!("{param}={value}"),
            "matching_items": matching,
            "queries": count.min(queries.len()),
            "recall_at_10_index": found as f64 / expected.max(1) as f64,
            "recall_at_10_api": found_api as f64 / expected.max(1) as f64,
            "p50_ms_index": p50(&graph_ms),
            "p50_ms_index_exact": p50(&exact_ms),
            "p50_ms_api": p50(&api_ms),
        });
        println!("filtered {share:>15} ({param}={value}, {matching} items): {row}");
        rows.push(row);
    }
    Ok(Value::Array(rows))
}

/// One `GET …/similar` through the API: the result ids, best first, and the milliseconds it took.
async fn similar_ids(client: &reqwest::Client, url: String) -> anyhow::Result<(Vec<Uuid>, f64)> {
    let t = Instant::now();
    let body: Value = client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let ids = body["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let id = r["item_id"].as_str();
            Ok(id.context("a result without item_id")?.parse()?)
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((ids, ms))
}

fn similar_request(cat: &Catalogue, i: usize, model_id: &str) -> SearchRequest {
    // What `GET /v1/items/{id}/similar?k=10` asks the index (category=auto).
    SearchRequest {
        vector: cat.vector(i).to_vec(),
        filter: CategoryFilter::One(cat.category_name(i).to_string()),
        limit: K,
        offset: 0,
        exclude: vec![cat.ids[i]],
        min_score: None,
        model_id: Some(model_id.to_string()),
        fields: Vec::new(),
        exact: false,
        recommend: None,
    }
}

/// Item `i` as the worker stores it in the index.
fn point(cat: &Catalogue, i: usize, model_id: &str) -> Point {
    Point {
        id: cat.ids[i],
        vector: cat.vector(i).to_vec(),
        category: Some(cat.category_name(i).to_string()),
        model_id: model_id.to_string(),
        // What the worker stores with a point (same values as the rows in Postgres).
        attrs: Some(lookalike_catalogue::point_attrs(
            lookalike_catalogue::Names {
                external_id: Some(&format!("sku-{i:07}")),
                product_id: Some(&cat.product_id(i)),
                duplicate_group: cat.duplicate_group[i],
            },
            &synthetic_metadata(i),
        )),
    }
}

fn print_report(r: &Value) {
    let n = r["items"].as_u64().unwrap_or(0);
    let b = &r["build"];
    println!();
    println!(
        "{n} items: postgres insert {:.1}s, index upsert {:.1}s, optimize (HNSW build) {:.1}s; {} of {} vectors indexed in {} segments",
        b["postgres_insert_s"].as_f64().unwrap_or(0.0),
        b["index_upsert_s"].as_f64().unwrap_or(0.0),
        b["index_optimize_s"].as_f64().unwrap_or(0.0),
        b["indexed_vectors"],
        b["points"],
        b["segments"],
    );
    println!(
        "| {n} items | clients | QPS | p50 ms | p99 ms | CPU ms/request: bench / service / postgres |"
    );
    println!("|---|---|---|---|---|---|");
    for (key, label, clients) in [
        ("index_1", "index, filtered top-10 (in process)", 1),
        ("index_16", "index, filtered top-10 (in process)", 16),
        ("http_similar_1", "GET /v1/items/{id}/similar?k=10", 1),
        ("http_similar_16", "GET /v1/items/{id}/similar?k=10", 16),
        ("http_upload_1", "POST /v1/search (upload)", 1),
        ("http_upload_16", "POST /v1/search (upload)", 16),
    ] {
        let p = &r["phases"][key];
        let c = &p["cpu_ms_per_request"];
        println!(
            "| {label} | {clients} | {:.0} | {:.2} | {:.2} | {:.3} / {:.3} / {:.3} |",
            p["qps"].as_f64().unwrap_or(0.0),
            p["p50_ms"].as_f64().unwrap_or(0.0),
            p["p99_ms"].as_f64().unwrap_or(0.0),
            c["bench_process"].as_f64().unwrap_or(0.0),
            c["service"].as_f64().unwrap_or(0.0),
            c["postgres_backends"].as_f64().unwrap_or(0.0),
        );
    }
    if let Some(rows) = r["filtered"].as_array() {
        println!();
        println!(
            "| {n} items, filtered (category=any) | matching | recall@10 index | recall@10 API | p50 ms index | p50 ms exact | p50 ms API |"
        );
        println!("|---|---|---|---|---|---|---|");
        for f in rows {
            let x = |k: &str| f[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "| {} (`{}`) | {} | {:.4} | {:.4} | {:.2} | {:.2} | {:.2} |",
                f["selectivity"].as_str().unwrap_or(""),
                f["filter"].as_str().unwrap_or(""),
                f["matching_items"],
                x("recall_at_10_index"),
                x("recall_at_10_api"),
                x("p50_ms_index"),
                x("p50_ms_index_exact"),
                x("p50_ms_api"),
            );
        }
        println!();
    }
    if let Some(rows) = r["grouped"]["rows"].as_array() {
        println!(
            "| {n} items, one query at a time | query | p50 ms | p99 ms | p50 / plain | recall@10 | results |"
        );
        println!("|---|---|---|---|---|---|---|");
        for g in rows {
            let x = |k: &str| g[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "| {} | {} | {:.2} | {:.2} | {:.2} | {:.4} | {:.1} |",
                g["backend"].as_str().unwrap_or(""),
                g["query"].as_str().unwrap_or(""),
                x("p50_ms"),
                x("p99_ms"),
                x("p50_over_plain"),
                x("recall_at_10"),
                x("results_mean"),
            );
        }
        println!();
    }
    let m = &r["model_in_process_ms"];
    println!(
        "| model alone, one image (in process) | 1 | {:.1} | {:.2} | | decode {:.2}, preprocess {:.2}, thumbnail {:.2} ms (p50) |",
        1000.0 / m["model_p50"].as_f64().unwrap_or(f64::NAN),
        m["model_p50"].as_f64().unwrap_or(0.0),
        m["decode_p50"].as_f64().unwrap_or(0.0),
        m["preprocess_p50"].as_f64().unwrap_or(0.0),
        m["thumbnail_p50"].as_f64().unwrap_or(0.0),
    );
    let x = &r["ratios"];
    println!(
        "recall@10 {:.4}; API QPS(16) / index QPS(16) = {:.2} (target >= 0.8); similar p50, 1 client = {:.2} ms (target < 2); upload p50 / model p50 = {:.2} (target <= 1.15); upload search scope: {}\nupload search, mean per search (ms): {}",
        r["recall_at_10"].as_f64().unwrap_or(0.0),
        x["api_qps16_over_index_qps16"].as_f64().unwrap_or(0.0),
        x["similar_p50_ms_1_client"].as_f64().unwrap_or(0.0),
        x["upload_p50_over_model_p50"].as_f64().unwrap_or(0.0),
        r["upload_search_sample"],
        r["upload_stages_1_client"],
    );
}
