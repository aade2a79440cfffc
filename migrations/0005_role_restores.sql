-- Restores of a backup's roles (`pgkeep restore --globals-only`) are recorded too, as kind
-- 'roles': the target is a database of the server the roles went into.
ALTER TABLE pgkeep.restore_run
    DROP CONSTRAINT restore_run_kind_check,
    ADD CONSTRAINT restore_run_kind_check CHECK (kind IN ('restore', 'drill', 'roles'));
