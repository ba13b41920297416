-- Ids of deleted items, so that work running beside the service (`lookalike reindex` filling a new
-- model's index) can remove vectors of items deleted while it ran.
CREATE TABLE item_deletions (
    item_id     uuid PRIMARY KEY,
    deleted_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX item_deletions_deleted_at ON item_deletions (deleted_at);
