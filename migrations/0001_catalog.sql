-- pgkeep's catalog: a queryable mirror of backup history (docs/CATALOG.md).
-- The manifests in storage are the truth; `pgkeep catalog sync` rebuilds the committed runs
-- from them. Applied by `pgkeep migrate` (tracking table pgkeep.schema_migrations).

CREATE SCHEMA IF NOT EXISTS pgkeep;
COMMENT ON SCHEMA pgkeep IS 'pgkeep backup history; rebuilt from the manifests by pgkeep catalog sync';

-- One backup run. A committed run is one whose manifest exists in storage; pruned means its
-- manifest is gone (retention or by hand); failed runs exist only here.
CREATE TABLE pgkeep.backup_run (
    run_id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job             text        NOT NULL CHECK (job <> ''),
    kind            text        NOT NULL CHECK (kind IN ('dump', 'export')),
    -- The backup's id (its directory in storage); NULL for a run that failed before it had one.
    backup_id       text        CHECK (backup_id <> ''),
    status          text        NOT NULL
                                CHECK (status IN ('running', 'committed', 'failed', 'pruned')),
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    stored_bytes    bigint      NOT NULL DEFAULT 0 CHECK (stored_bytes >= 0),
    server_version  text,
    error           text        CHECK (error <> ''),
    -- The manifest as stored, for committed and pruned runs.
    manifest        jsonb       CHECK (jsonb_typeof(manifest) = 'object'),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT backup_run_job_backup_id_key UNIQUE (job, backup_id),
    CONSTRAINT backup_run_finished_after_started CHECK (finished_at >= started_at),
    CONSTRAINT backup_run_finished_unless_running
        CHECK ((status = 'running') = (finished_at IS NULL)),
    CONSTRAINT backup_run_committed_has_manifest
        CHECK (status NOT IN ('committed', 'pruned')
               OR (backup_id IS NOT NULL AND manifest IS NOT NULL)),
    CONSTRAINT backup_run_error_iff_failed CHECK ((status = 'failed') = (error IS NOT NULL))
);
COMMENT ON TABLE pgkeep.backup_run IS 'one backup run per row; committed rows mirror a manifest in storage';

-- The latest committed backup of each job (or of one job): a walk down this partial index.
CREATE INDEX backup_run_committed_idx
    ON pgkeep.backup_run (job, started_at DESC)
    WHERE status = 'committed';

-- Failed runs in a time range.
CREATE INDEX backup_run_failed_idx
    ON pgkeep.backup_run (started_at)
    WHERE status = 'failed';

-- The stored objects of a run, as its manifest lists them.
CREATE TABLE pgkeep.backup_object (
    run_id          bigint      NOT NULL REFERENCES pgkeep.backup_run (run_id) ON DELETE CASCADE,
    key             text        NOT NULL CHECK (key <> ''),
    role            text        NOT NULL CHECK (role IN ('dump', 'globals', 'schema', 'table')),
    -- For table objects: schema-qualified and quoted, "public"."film".
    table_name      text,
    row_count       bigint      CHECK (row_count >= 0),
    compression     text        NOT NULL CHECK (compression <> ''),
    raw_bytes       bigint      NOT NULL CHECK (raw_bytes >= 0),
    stored_bytes    bigint      NOT NULL CHECK (stored_bytes >= 0),
    sha256          text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    -- Also serves lookups by run_id (the foreign key).
    PRIMARY KEY (run_id, key),
    CONSTRAINT backup_object_table_names_table CHECK ((role = 'table') = (table_name IS NOT NULL))
);

-- Restores of a backup. The target is recorded as user@host:port/dbname, never with a password.
CREATE TABLE pgkeep.restore_run (
    restore_id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          bigint      NOT NULL REFERENCES pgkeep.backup_run (run_id),
    target          text        NOT NULL
                                CHECK (target <> ''
                                       AND target !~* 'password\s*='
                                       AND target !~ '://[^/@]*:[^/@]*@'),
    status          text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    error           text        CHECK (error <> ''),
    CONSTRAINT restore_run_finished_after_started CHECK (finished_at >= started_at),
    CONSTRAINT restore_run_finished_unless_running
        CHECK ((status = 'running') = (finished_at IS NULL)),
    CONSTRAINT restore_run_error_iff_failed CHECK ((status = 'failed') = (error IS NOT NULL))
);
CREATE INDEX restore_run_run_idx ON pgkeep.restore_run (run_id, started_at DESC);

-- Verifications of a backup: re-reading its objects and checking sizes and checksums.
CREATE TABLE pgkeep.verification (
    verification_id bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          bigint      NOT NULL REFERENCES pgkeep.backup_run (run_id),
    status          text        NOT NULL CHECK (status IN ('running', 'ok', 'damaged', 'failed')),
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    -- Keys of the objects that failed their checks.
    damaged_objects text[]      NOT NULL DEFAULT '{}'
                                CHECK (array_position(damaged_objects, NULL) IS NULL),
    error           text        CHECK (error <> ''),
    CONSTRAINT verification_finished_after_started CHECK (finished_at >= started_at),
    CONSTRAINT verification_finished_unless_running
        CHECK ((status = 'running') = (finished_at IS NULL)),
    CONSTRAINT verification_damage_listed
        CHECK ((status = 'damaged') = (cardinality(damaged_objects) > 0)),
    CONSTRAINT verification_error_iff_failed CHECK ((status = 'failed') = (error IS NOT NULL))
);
CREATE INDEX verification_run_idx ON pgkeep.verification (run_id, started_at DESC);

-- The latest committed backup of every job.
CREATE VIEW pgkeep.latest_backup AS
    SELECT DISTINCT ON (job)
           job, backup_id, kind, started_at, finished_at, stored_bytes, server_version
      FROM pgkeep.backup_run
     WHERE status = 'committed'
     ORDER BY job, started_at DESC;
