-- Near-duplicates: an image whose embedding is within `dedupe.threshold` of an item already stored
-- (or whose bytes are identical) joins that item's duplicate group. Every member keeps its own vector
-- in the index, flagged with the group (attrs.duplicate_group), so `collapse=true` can answer one
-- result per group and a member can leave without re-inserting anything.
-- duplicate_group: an opaque id, the id of the item the group started from (it stays the group's id
-- after that item is deleted); null when the item is in no group. duplicate_of/duplicate_score: the
-- stored item it matched when it joined, and their cosine.
ALTER TABLE items ADD COLUMN duplicate_group uuid;
ALTER TABLE items ADD COLUMN duplicate_of uuid;
ALTER TABLE items ADD COLUMN duplicate_score real;
CREATE INDEX items_duplicate_group ON items (duplicate_group, id) WHERE duplicate_group IS NOT NULL;

-- "Not a duplicate", as an operator said it: the pair is never grouped again (ingest, resubmission,
-- `lookalike dedupe`). Stored both ways round so either item finds it by its own id.
CREATE TABLE duplicate_splits (
    item_id     uuid NOT NULL,
    other_id    uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (item_id, other_id)
);
