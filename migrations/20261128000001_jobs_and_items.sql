-- Postgres is the source of truth for lookalike: queue messages carry only job ids, and the vector
-- index can be rebuilt from the items table (plus the sources it points to).

-- One row per submitted image. A job moves queued -> processing -> succeeded | failed, and may go back
-- from processing to queued while it waits for a retry.
CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'processing', 'succeeded', 'failed')),
    source_kind     text NOT NULL CHECK (source_kind IN ('url', 'upload')),
    source_url      text,
    file_name       text,
    external_id     text,
    -- The category the submitter gave, if any (the item records where its category came from).
    category        text,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Incremented each time a worker starts the job, so attempts survive worker crashes.
    attempts        integer NOT NULL DEFAULT 0,
    error_code      text,
    error_message   text,
    item_id         uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    CHECK ((source_kind = 'url') = (source_url IS NOT NULL))
);
CREATE INDEX jobs_status_created ON jobs (status, created_at DESC);

-- Uploaded bytes are written here before the API answers 202, so a crash right after the answer
-- loses nothing: the worker reads them back by job id.
CREATE TABLE uploads (
    job_id          uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    content_type    text,
    bytes           bytea NOT NULL
);

CREATE TABLE items (
    -- Equal to the id of the job that created the item, so a redelivered job can never make a second
    -- item, and the vector's point id in the index is the same uuid.
    id                  uuid PRIMARY KEY,
    job_id              uuid NOT NULL UNIQUE REFERENCES jobs (id),
    external_id         text UNIQUE,
    source_kind         text NOT NULL,
    source_url          text,
    file_name           text,
    content_sha256      text NOT NULL,
    byte_size           bigint NOT NULL,
    format              text NOT NULL,
    width               integer NOT NULL,
    height              integer NOT NULL,
    category            text,
    category_source     text NOT NULL CHECK (category_source IN ('provided', 'predicted', 'none')),
    category_confidence real,
    model_id            text NOT NULL,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX items_category ON items (category, created_at DESC);
CREATE INDEX items_sha ON items (content_sha256);

-- Small JPEGs made at ingest, so pages never hot-link the original URLs.
CREATE TABLE thumbnails (
    item_id     uuid PRIMARY KEY REFERENCES items (id) ON DELETE CASCADE,
    jpeg        bytea NOT NULL
);
