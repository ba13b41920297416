-- When the broker confirmed a job's message. A job that is `queued` with no confirmed message was
-- committed by an API process that died (or lost the broker) before publishing it; the worker's
-- republisher finds such jobs after `queue.republish_after_ms` and publishes them, so a crash between
-- the commit and the publish cannot leave a job queued forever. (A message published twice is
-- harmless: a job already finished is not run again.)
ALTER TABLE jobs ADD COLUMN published_at timestamptz;
-- Jobs still queued when this runs are published once more after the grace period (harmless).
UPDATE jobs SET published_at = created_at WHERE status <> 'queued';
CREATE INDEX jobs_unpublished ON jobs (updated_at) WHERE status = 'queued' AND published_at IS NULL;
