-- Drills (`pgkeep drill`) are restores too: into a scratch database, checked, then dropped.
-- `kind` tells them apart from an operator's restores; `checks` holds what a drill compared
-- (tables, rows, content digests, sequences) or, when it failed, the differences it found.
ALTER TABLE pgkeep.restore_run
    ADD COLUMN kind text NOT NULL DEFAULT 'restore' CHECK (kind IN ('restore', 'drill')),
    ADD COLUMN checks jsonb CHECK (checks IS NULL OR jsonb_typeof(checks) = 'object');

-- The newest drill (of one job, or of any): the first entries of a small partial index, as
-- restore_run_started_idx serves the newest restore of either kind.
CREATE INDEX restore_run_drill_started_idx
    ON pgkeep.restore_run (started_at DESC, restore_id DESC) WHERE kind = 'drill';
