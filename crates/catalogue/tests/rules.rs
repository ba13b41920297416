//! The catalogue's write rule, checked in process against the real Postgres (a database of its own
//! per test) and the embedded index: vector first, then row; a failed row write puts the index back.
//!
//! Failures are real ones: the index is wrapped so that its writes can be made to fail, and a row
//! write is refused by a Postgres trigger (a plain error, or a unique violation, which the store
//! reports as a conflict).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use lookalike_catalogue::{Catalogue, CatalogueError, MetadataChange};
use lookalike_index::{
    CategoryFilter, EdgeIndex, EdgeOptions, FieldKind, Group, GroupBy, Hit, IndexError, Point,
    SearchRequest, StoredPoint, VectorIndex,
};
use lookalike_store::{CategorySource, JobStatus, NewItem, NewJob, Source, Store, StoreError};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const DIM: usize = 8;
const MODEL: &str = "test-model";

/// The embedded index, whose writes fail while `fail_writes` is set.
struct Flaky {
    inner: EdgeIndex,
    fail_writes: AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), IndexError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            Err(IndexError::Unavailable("told to fail".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl VectorIndex for Flaky {
    async fn upsert(&self, points: Vec<Point>) -> Result<(), IndexError> {
        self.check()?;
        self.inner.upsert(points).await
    }
    async fn search(&self, req: SearchRequest) -> Result<Vec<Hit>, IndexError> {
        self.inner.search(req).await
    }
    async fn search_groups(
        &self,
        req: SearchRequest,
        by: GroupBy,
        per_group: usize,
    ) -> Result<Vec<Group>, IndexError> {
        self.inner.search_groups(req, by, per_group).await
    }
    async fn get_point(&self, id: Uuid) -> Result<Option<StoredPoint>, IndexError> {
        self.inner.get_point(id).await
    }
    async fn delete(&self, ids: &[Uuid]) -> Result<(), IndexError> {
        self.check()?;
        self.inner.delete(ids).await
    }
    async fn count(&self, filter: CategoryFilter) -> Result<u64, IndexError> {
        self.inner.count(filter).await
    }
    async fn set_attrs(&self, id: Uuid, attrs: Value) -> Result<(), IndexError> {
        self.check()?;
        self.inner.set_attrs(id, attrs).await
    }
    async fn index_fields(&self, fields: &[(String, FieldKind)]) -> Result<(), IndexError> {
        self.inner.index_fields(fields).await
    }
    async fn set_category(&self, id: Uuid, category: Option<String>) -> Result<(), IndexError> {
        self.check()?;
        self.inner.set_category(id, category).await
    }
    async fn ping(&self) -> Result<(), IndexError> {
        self.inner.ping().await
    }
    fn name(&self) -> &'static str {
        "flaky-edge"
    }
}

struct Env {
    catalogue: Catalogue,
    index: Arc<Flaky>,
    store: Store,
    db_url: String,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        let db = format!(
            "lookalike_test_catalogue_{}",
            &Uuid::new_v4().simple().to_string()[..12]
        );
        let mut admin = PgConnection::connect(PG_ADMIN_URL)
            .await
            .expect("Postgres at 127.0.0.1:5432 (scripts/services.sh starts it)");
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .await
            .unwrap();
        let db_url = format!("postgres://postgres@127.0.0.1:5432/{db}");
        let store = Store::connect_lazy(&db_url, 4, std::time::Duration::from_secs(10)).unwrap();
        store.migrate().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(Flaky {
            inner: EdgeIndex::open(dir.path(), DIM, EdgeOptions::default()).unwrap(),
            fail_writes: AtomicBool::new(false),
        });
        Env {
            catalogue: Catalogue::new(store.clone(), index.clone()),
            index,
            store,
            db_url,
            _dir: dir,
        }
    }

    fn fail_index_writes(&self, fail: bool) {
        self.index.fail_writes.store(fail, Ordering::SeqCst);
    }

    /// Makes Postgres refuse `op` (INSERT or UPDATE) on `items` with `sqlstate` until [`Env::allow`].
    async fn refuse_rows(&self, op: &str, sqlstate: &str) {
        let mut db = PgConnection::connect(&self.db_url).await.unwrap();
        db.execute(sqlx::AssertSqlSafe(format!(
            "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger AS $$
             BEGIN RAISE EXCEPTION 'refused by the test' USING ERRCODE = '{sqlstate}'; END $$
             LANGUAGE plpgsql;
             CREATE TRIGGER refuse BEFORE {op} ON items FOR EACH ROW EXECUTE FUNCTION refuse();"
        )))
        .await
        .unwrap();
    }

    async fn allow_rows(&self) {
        let mut db = PgConnection::connect(&self.db_url).await.unwrap();
        db.execute("DROP TRIGGER IF EXISTS refuse ON items")
            .await
            .unwrap();
    }

    /// A claimed job, as a worker holds it when it commits.
    async fn running_job(&self, external_id: Option<&str>, metadata: Value) -> Uuid {
        let job = NewJob {
            id: Uuid::now_v7(),
            source: Source::Url("http://images.example/x.jpg".into()),
            external_id: external_id.map(str::to_string),
            product_id: None,
            category: None,
            metadata,
        };
        let id = job.id;
        self.store.create_jobs(&[job], None).await.unwrap();
        self.store.claim_job(id).await.unwrap();
        id
    }

    async fn job_status(&self, id: Uuid) -> JobStatus {
        self.store.get_job(id).await.unwrap().unwrap().status
    }
}

fn item(vector: Vec<f32>, category: &str, source: CategorySource) -> NewItem {
    NewItem {
        content_sha256: hex_of(&vector),
        byte_size: 100,
        format: "jpeg".into(),
        width: 10,
        height: 10,
        category: Some(category.into()),
        category_source: source,
        category_confidence: (source == CategorySource::Predicted).then_some(0.7),
        head_version: None,
        model_id: MODEL.into(),
        thumbnail_jpeg: vec![0xff, 0xd8],
        vector,
        features: None,
        duplicate: None,
    }
}

fn hex_of(v: &[f32]) -> String {
    v.iter().map(|x| format!("{:08x}", x.to_bits())).collect()
}

fn unit(axis: usize) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[axis] = 1.0;
    v
}

#[tokio::test]
async fn a_new_item_is_written_vector_first_and_waits_for_its_vector() {
    let env = Env::new().await;
    let job = env.running_job(None, json!({})).await;

    env.fail_index_writes(true);
    let err = env
        .catalogue
        .commit(job, item(unit(0), "coat", CategorySource::Provided))
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogueError::Index(_)), "{err:?}");
    assert!(
        env.store.get_item(job).await.unwrap().is_none(),
        "no row is written before its vector"
    );
    assert_eq!(env.job_status(job).await, JobStatus::Processing);

    env.fail_index_writes(false);
    let id = env
        .catalogue
        .commit(job, item(unit(0), "coat", CategorySource::Provided))
        .await
        .unwrap();
    assert_eq!(id, job, "a new item's id is its job's");
    let point = env.index.get_point(id).await.unwrap().unwrap();
    assert_eq!(point.category.as_deref(), Some("coat"));
    assert_eq!(point.model_id.as_deref(), Some(MODEL));
    assert_eq!(
        env.store.get_item(id).await.unwrap().unwrap().category,
        Some("coat".into())
    );
    assert_eq!(env.job_status(job).await, JobStatus::Succeeded);
}

#[tokio::test]
async fn a_row_refused_as_a_conflict_leaves_no_ghost_vector() {
    let env = Env::new().await;
    let job = env.running_job(None, json!({})).await;
    env.refuse_rows("INSERT", "23505").await;
    let err = env
        .catalogue
        .commit(job, item(unit(1), "coat", CategorySource::Provided))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CatalogueError::Store(StoreError::Conflict(_))),
        "{err:?}"
    );
    assert!(
        env.index.get_point(job).await.unwrap().is_none(),
        "the vector of an item that can never be stored is taken out again"
    );
}

#[tokio::test]
async fn a_failed_replacement_puts_the_old_vector_back() {
    let env = Env::new().await;
    let first = env.running_job(Some("sku-1"), json!({"v": 1})).await;
    let id = env
        .catalogue
        .commit(first, item(unit(2), "coat", CategorySource::Provided))
        .await
        .unwrap();

    // A second job for the same external_id replaces that item: same id, new vector.
    let second = env.running_job(Some("sku-1"), json!({"v": 2})).await;
    env.refuse_rows("UPDATE", "P0001").await;
    let err = env
        .catalogue
        .commit(second, item(unit(3), "shoe", CategorySource::Provided))
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogueError::Store(_)), "{err:?}");
    let point = env.index.get_point(id).await.unwrap().unwrap();
    assert!(
        point.vector[2] > 0.99,
        "the index holds the vector the database still has"
    );
    assert_eq!(point.category.as_deref(), Some("coat"));
    assert_eq!(point.attrs.unwrap()["metadata"], json!({"v": 1}));

    env.allow_rows().await;
    let replaced = env
        .catalogue
        .commit(second, item(unit(3), "shoe", CategorySource::Provided))
        .await
        .unwrap();
    assert_eq!(
        replaced, id,
        "the external_id's item is updated, not doubled"
    );
    let point = env.index.get_point(id).await.unwrap().unwrap();
    assert!(point.vector[3] > 0.99);
    assert_eq!(point.category.as_deref(), Some("shoe"));
    assert_eq!(env.job_status(second).await, JobStatus::Succeeded);
}

#[tokio::test]
async fn deletion_takes_the_vector_first_and_the_row_only_after_it() {
    let env = Env::new().await;
    let job = env.running_job(None, json!({})).await;
    let id = env
        .catalogue
        .commit(job, item(unit(4), "coat", CategorySource::Provided))
        .await
        .unwrap();
    assert_eq!(env.store.prototypes(MODEL).await.unwrap()[0].items, 1);

    env.fail_index_writes(true);
    assert!(env.catalogue.delete(id).await.is_err());
    assert!(
        env.store.get_item(id).await.unwrap().is_some(),
        "the row stays while its vector could not be removed"
    );

    env.fail_index_writes(false);
    assert!(env.catalogue.delete(id).await.unwrap());
    assert!(env.store.get_item(id).await.unwrap().is_none());
    assert!(env.index.get_point(id).await.unwrap().is_none());
    assert!(
        env.store
            .prototypes(MODEL)
            .await
            .unwrap()
            .iter()
            .all(|p| p.items == 0),
        "a deleted labelled item leaves its category's prototype"
    );
    assert!(!env.catalogue.delete(id).await.unwrap(), "gone is gone");
}

#[tokio::test]
async fn a_new_prediction_reaches_the_row_only_through_the_index_and_never_touches_labels() {
    let env = Env::new().await;
    let predicted = env.running_job(None, json!({})).await;
    env.catalogue
        .commit(predicted, item(unit(5), "coat", CategorySource::Predicted))
        .await
        .unwrap();
    let labelled = env.running_job(None, json!({})).await;
    env.catalogue
        .commit(labelled, item(unit(6), "coat", CategorySource::Provided))
        .await
        .unwrap();

    let row = env.store.get_item(predicted).await.unwrap().unwrap();
    env.refuse_rows("UPDATE", "P0001").await;
    assert!(
        env.catalogue
            .set_predicted_category(&row, Some("shoe".into()), Some(0.9), Some(3))
            .await
            .is_err()
    );
    let point = env.index.get_point(predicted).await.unwrap().unwrap();
    assert_eq!(
        point.category.as_deref(),
        Some("coat"),
        "the index is put back when the row keeps its category"
    );

    env.allow_rows().await;
    env.catalogue
        .set_predicted_category(&row, Some("shoe".into()), Some(0.9), Some(3))
        .await
        .unwrap();
    let row = env.store.get_item(predicted).await.unwrap().unwrap();
    assert_eq!(row.category.as_deref(), Some("shoe"));
    assert_eq!(row.head_version, Some(3));
    let point = env.index.get_point(predicted).await.unwrap().unwrap();
    assert_eq!(point.category.as_deref(), Some("shoe"));

    let label = env.store.get_item(labelled).await.unwrap().unwrap();
    env.catalogue
        .set_predicted_category(&label, Some("shoe".into()), Some(0.9), Some(3))
        .await
        .unwrap();
    assert_eq!(
        env.store
            .get_item(labelled)
            .await
            .unwrap()
            .unwrap()
            .category
            .as_deref(),
        Some("coat"),
        "a provided category is never re-predicted"
    );
    assert_eq!(
        env.index
            .get_point(labelled)
            .await
            .unwrap()
            .unwrap()
            .category
            .as_deref(),
        Some("coat")
    );
}

#[tokio::test]
async fn a_metadata_change_the_row_refuses_is_taken_back_out_of_the_index() {
    let env = Env::new().await;
    let job = env.running_job(Some("sku-9"), json!({"price": 10})).await;
    let id = env
        .catalogue
        .commit(job, item(unit(7), "coat", CategorySource::Provided))
        .await
        .unwrap();
    let set_price =
        |price: i64| move |_: &Value| Ok::<_, std::convert::Infallible>(json!({ "price": price }));

    env.refuse_rows("UPDATE", "P0001").await;
    assert!(
        env.catalogue
            .change_metadata(id, set_price(20))
            .await
            .is_err()
    );
    let attrs = env
        .index
        .get_point(id)
        .await
        .unwrap()
        .unwrap()
        .attrs
        .unwrap();
    assert_eq!(attrs["metadata"], json!({"price": 10}));
    assert_eq!(attrs["external_id"], "sku-9");

    env.allow_rows().await;
    let changed = env
        .catalogue
        .change_metadata(id, set_price(20))
        .await
        .unwrap();
    assert!(matches!(changed, MetadataChange::Changed));
    let attrs = env
        .index
        .get_point(id)
        .await
        .unwrap()
        .unwrap()
        .attrs
        .unwrap();
    assert_eq!(attrs["metadata"], json!({"price": 20}));
    assert_eq!(
        env.store.get_item(id).await.unwrap().unwrap().metadata,
        json!({"price": 20})
    );

    let refused = env
        .catalogue
        .change_metadata(id, |_| Err::<Value, _>("too big"))
        .await
        .unwrap();
    assert!(matches!(refused, MetadataChange::Rejected("too big")));
    let missing = env
        .catalogue
        .change_metadata(Uuid::now_v7(), set_price(1))
        .await
        .unwrap();
    assert!(matches!(missing, MetadataChange::NotFound));
}

/// A unit vector at `degrees` from axis 0, in the plane of axes 0 and 1.
fn at_angle(degrees: f32) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[0] = degrees.to_radians().cos();
    v[1] = degrees.to_radians().sin();
    v
}

#[tokio::test]
async fn a_near_duplicate_joins_the_earliest_item_within_the_threshold_not_the_nearest() {
    let mut env = Env::new().await;
    env.catalogue = env.catalogue.clone().with_dedupe(Some(0.96));
    // The original; then a copy just outside the threshold (cos 18.2° = 0.950), which stays alone;
    // then a copy of that copy (4° from it: 0.998) that is also within the threshold of the original
    // (cos 14.2° = 0.969). It joins the original, whatever came in between.
    let mut ids = Vec::new();
    for degrees in [0.0, 18.2, 14.2] {
        let job = env.running_job(None, json!({})).await;
        let id = env
            .catalogue
            .commit(
                job,
                item(at_angle(degrees), "coat", CategorySource::Provided),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    let [original, outside, copy] = ids[..] else {
        unreachable!()
    };
    let row = |id| {
        let store = env.store.clone();
        async move { store.get_item(id).await.unwrap().unwrap() }
    };
    assert_eq!(row(outside).await.duplicate_group, None);
    let copy_row = row(copy).await;
    assert_eq!(copy_row.duplicate_group, Some(original));
    assert_eq!(copy_row.duplicate_of, Some(original));
    let score = copy_row.duplicate_score.unwrap();
    assert!((score - 14.2f32.to_radians().cos()).abs() < 1e-3, "{score}");
    assert_eq!(row(original).await.duplicate_group, Some(original));
    let attrs = env.index.get_point(copy).await.unwrap().unwrap().attrs;
    assert_eq!(
        attrs.as_ref().map(|a| &a["duplicate_group"]),
        Some(&json!(original)),
        "{attrs:?}"
    );
}
