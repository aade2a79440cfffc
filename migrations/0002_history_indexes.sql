-- Indexes for the queries the catalog client runs that 0001 left to a sort (docs/DATABASE.md,
-- "Query optimisation of the catalog"; the plans are checked by tests/suite/catalog.rs and
-- clients/python/tests/test_plans.py).

-- One job's runs of every status, newest first (`pgkeep_catalog history JOB`): the LIMIT reads
-- the first entries of the job's range, in order, instead of sorting all of the job's runs.
-- run_id breaks ties between runs that started in the same microsecond, as the query does.
CREATE INDEX backup_run_job_started_idx
    ON pgkeep.backup_run (job, started_at DESC, run_id DESC);

-- The newest verification and the newest restore (`pgkeep_catalog drill`): the first entry
-- of each index, instead of reading the table whole. restore_run_run_idx and
-- verification_run_idx (run_id first) still serve "the last ones of this backup".
CREATE INDEX verification_started_idx
    ON pgkeep.verification (started_at DESC, verification_id DESC);
CREATE INDEX restore_run_started_idx
    ON pgkeep.restore_run (started_at DESC, restore_id DESC);
