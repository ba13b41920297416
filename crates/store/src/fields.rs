//! Declared metadata fields on the Postgres side: the item listing's filters, a change of an item's
//! metadata, and the report of items whose value does not fit its field.

use lookalike_core::fields::{FieldCondition, FieldKind, FieldValue, Fields, Test};
use serde::Serialize;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{Item, Result, Store};

/// How many wrongly typed items a field report names (the count covers all of them).
pub const REPORT_EXAMPLES: i64 = 20;

/// One declared field as the catalogue holds it.
#[derive(Debug, Clone, Serialize)]
pub struct FieldReport {
    pub name: String,
    pub kind: FieldKind,
    /// Items whose metadata gives the field a value of its kind (filters can find them).
    pub items_with_value: i64,
    /// Items whose value has another kind: filters never match them, so they are named here.
    pub items_with_wrong_kind: i64,
    /// The first of those, oldest first, with the value they hold.
    pub wrong_kind: Vec<WrongKind>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct WrongKind {
    pub item_id: Uuid,
    pub external_id: Option<String>,
    pub value: serde_json::Value,
}

/// An item's metadata about to change, with its row locked until [`MetadataChange::commit`] (or
/// drop), so that the caller can write the vector index in between and a concurrent change of the
/// same item (another PATCH, a resubmission of its `external_id`) waits for it.
pub struct MetadataChange {
    tx: sqlx::Transaction<'static, Postgres>,
    pub id: Uuid,
    pub external_id: Option<String>,
    pub product_id: Option<String>,
    pub duplicate_group: Option<Uuid>,
    pub metadata: serde_json::Value,
}

impl MetadataChange {
    /// Moves the locked item into a duplicate group (`None`: out of any, forgetting what it matched),
    /// leaving its metadata; `matched` records the item it was found to duplicate and their cosine.
    pub async fn commit_group(
        mut self,
        group: Option<Uuid>,
        matched: Option<(Uuid, f32)>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE items SET duplicate_group = $2,
                 duplicate_of = CASE WHEN $2::uuid IS NULL THEN NULL ELSE coalesce($3, duplicate_of) END,
                 duplicate_score = CASE WHEN $2::uuid IS NULL THEN NULL ELSE coalesce($4, duplicate_score) END,
                 updated_at = now()
             WHERE id = $1",
        )
        .bind(self.id)
        .bind(group)
        .bind(matched.map(|m| m.0))
        .bind(matched.map(|m| m.1))
        .execute(&mut *self.tx)
        .await?;
        self.tx.commit().await?;
        Ok(())
    }

    pub async fn commit(mut self, metadata: &serde_json::Value) -> Result<()> {
        sqlx::query("UPDATE items SET metadata = $2, updated_at = now() WHERE id = $1")
            .bind(self.id)
            .bind(metadata)
            .execute(&mut *self.tx)
            .await?;
        self.tx.commit().await?;
        Ok(())
    }
}

/// Whether item metadata's `$1` key holds a value of a kind in `$2` (jsonb type names); an array
/// counts for a keyword only when every element is a text.
macro_rules! fits {
    () => {
        "(jsonb_typeof(metadata->$1) = ANY($2) AND (jsonb_typeof(metadata->$1) <> 'array' \
         OR NOT jsonb_path_exists(metadata->$1, '$[*] ? (@.type() != \"string\")')))"
    };
}

/// The jsonb types a field's kind accepts (a keyword may also be a list of texts).
fn json_types(kind: FieldKind) -> &'static [&'static str] {
    match kind {
        FieldKind::Keyword => &["string", "array"],
        FieldKind::Number => &["number"],
        FieldKind::Bool => &["boolean"],
    }
}

/// Appends ` AND <condition>` for each filter, matching what the index matches: a value of another
/// kind never does (the casts below only ever see values of the right jsonb type).
fn push_conditions(q: &mut QueryBuilder<Postgres>, fields: &[FieldCondition]) {
    for c in fields {
        let field = c.field.clone();
        match &c.test {
            Test::Range(r) => {
                for (op, bound) in [(">", r.gt), (">=", r.gte), ("<", r.lt), ("<=", r.lte)] {
                    if let Some(b) = bound {
                        q.push(" AND (CASE WHEN jsonb_typeof(metadata->")
                            .push_bind(field.clone())
                            .push(") = 'number' THEN (metadata->>")
                            .push_bind(field.clone())
                            .push(")::float8 END) ")
                            .push(op)
                            .push(" ")
                            .push_bind(b);
                    }
                }
            }
            Test::AnyOf(values) => {
                q.push(" AND (false");
                for v in values {
                    match v {
                        FieldValue::Keyword(k) => {
                            // A text equal to it, or a list of texts holding it.
                            q.push(" OR metadata->")
                                .push_bind(field.clone())
                                .push(" = to_jsonb(")
                                .push_bind(k.clone())
                                .push("::text) OR (jsonb_typeof(metadata->")
                                .push_bind(field.clone())
                                .push(") = 'array' AND (metadata->")
                                .push_bind(field.clone())
                                .push(") @> jsonb_build_array(")
                                .push_bind(k.clone())
                                .push("::text))");
                        }
                        FieldValue::Bool(b) => {
                            q.push(" OR metadata->")
                                .push_bind(field.clone())
                                .push(" = to_jsonb(")
                                .push_bind(*b)
                                .push("::boolean)");
                        }
                    }
                }
                q.push(")");
            }
        }
    }
}

impl Store {
    /// A page of items, newest first, in one category (or all) and satisfying `fields`; with the
    /// number of items matching.
    pub async fn list_items(
        &self,
        category: Option<&str>,
        fields: &[FieldCondition],
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Item>, i64)> {
        let filtered = |select: &str| {
            let mut q = QueryBuilder::<Postgres>::new(select);
            q.push(" FROM items WHERE true");
            if let Some(c) = category {
                q.push(" AND category = ").push_bind(c.to_string());
            }
            push_conditions(&mut q, fields);
            q
        };
        let mut page = filtered(concat!("SELECT ", item_columns!()));
        page.push(" ORDER BY created_at DESC, id LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
        let items = page.build_query_as().fetch_all(&self.pool).await?;
        let total = filtered("SELECT count(*)")
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await?;
        Ok((items, total))
    }

    /// Locks an item's row to change its metadata; `None` when there is no such item.
    pub async fn begin_metadata_change(&self, id: Uuid) -> Result<Option<MetadataChange>> {
        let mut tx = self.pool.begin().await?;
        type Row = (
            Option<String>,
            Option<String>,
            Option<Uuid>,
            serde_json::Value,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT external_id, product_id, duplicate_group, metadata FROM items WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        Ok(row.map(
            |(external_id, product_id, duplicate_group, metadata)| MetadataChange {
                tx,
                id,
                external_id,
                product_id,
                duplicate_group,
                metadata,
            },
        ))
    }

    /// For each declared field: how many items give it a value of its kind, how many a value of
    /// another kind, and the first of those.
    pub async fn field_reports(&self, declared: &Fields) -> Result<Vec<FieldReport>> {
        let mut reports = Vec::with_capacity(declared.len());
        for (name, kind) in declared {
            let types: Vec<String> = json_types(*kind).iter().map(|t| t.to_string()).collect();
            let (with_value, wrong): (i64, i64) = sqlx::query_as(concat!(
                "SELECT count(*) FILTER (WHERE ",
                fits!(),
                "), count(*) FILTER (WHERE jsonb_typeof(metadata->$1) <> 'null' AND NOT ",
                fits!(),
                ") FROM items WHERE metadata ? $1"
            ))
            .bind(name)
            .bind(&types)
            .fetch_one(&self.pool)
            .await?;
            let wrong_kind = sqlx::query_as::<_, WrongKind>(concat!(
                "SELECT id AS item_id, external_id, metadata->$1 AS value FROM items \
                 WHERE metadata ? $1 AND jsonb_typeof(metadata->$1) <> 'null' AND NOT ",
                fits!(),
                " ORDER BY created_at, id LIMIT $3"
            ))
            .bind(name)
            .bind(&types)
            .bind(REPORT_EXAMPLES)
            .fetch_all(&self.pool)
            .await?;
            reports.push(FieldReport {
                name: name.clone(),
                kind: *kind,
                items_with_value: with_value,
                items_with_wrong_kind: wrong,
                wrong_kind,
            });
        }
        Ok(reports)
    }
}
