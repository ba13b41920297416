//! Postgres access for lookalike: jobs, uploads, items (and the products they name), thumbnails and
//! classifier heads.
//!
//! Postgres is the source of truth. Every state change a job goes through is one statement or one
//! transaction here, written so that running it twice (a redelivered queue message) changes nothing.

mod heads;
#[macro_use]
mod items;
mod duplicates;
mod fields;
mod jobs;
mod products;
mod reindex;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use fields::{FieldReport, MetadataChange, REPORT_EXAMPLES, WrongKind};
pub use heads::{LabelledExample, NewHead, StoredHead, Training};
pub use items::{
    CategoryCount, CategorySource, Duplicate, Item, ItemWrite, NewItem, Prototype, Replaced,
};
pub use jobs::{Claim, Job, JobStatus, NewJob, Source};
pub use products::ProductSummary;

/// Migrations compiled into the binary, applied at startup and by the tests.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Connection refused, pool timeout, server restarting: worth retrying later.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A unique constraint refused the write (for example an `external_id` already in use).
    #[error("conflict: {0}")]
    Conflict(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Tls(_) => {
                StoreError::Unavailable(e)
            }
            // 57P01 admin_shutdown, 57P03 cannot_connect_now, 08xxx connection exceptions.
            E::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c == "57P01" || c == "57P03") =>
            {
                StoreError::Unavailable(e)
            }
            E::Database(db) if db.code().as_deref() == Some("23505") => StoreError::Conflict(e),
            _ => StoreError::Other(e),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

impl Store {
    /// Connects lazily: the pool opens connections on first use, so a service can start (and report
    /// not-ready) while Postgres is still coming up.
    pub fn connect_lazy(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_lazy_with(options);
        Ok(Store { pool })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Store { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the database named in `url` if it does not exist yet, so a first start needs no manual
    /// `createdb`.
    pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
        use sqlx::migrate::MigrateDatabase;
        if !sqlx::Postgres::database_exists(url).await? {
            tracing::info!("creating the database");
            sqlx::Postgres::create_database(url).await?;
        }
        Ok(())
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
