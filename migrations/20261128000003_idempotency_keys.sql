-- A client may send `Idempotency-Key` with a submission; a repeat with the same key returns the jobs
-- of the first request instead of creating new ones (safe retries after a timeout or a lost answer).
-- One request can create several jobs, so the key is stored on each with the job's position.
ALTER TABLE jobs ADD COLUMN idempotency_key text;
ALTER TABLE jobs ADD COLUMN request_position integer;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (idempotency_key, request_position)
    WHERE idempotency_key IS NOT NULL;
