-- Cluster backups: one run of a dump job of a whole server (`databases = [...]`) commits one
-- backup of kind 'cluster', holding an archive of each of its databases.
ALTER TABLE pgkeep.backup_run
    DROP CONSTRAINT backup_run_kind_check,
    ADD CONSTRAINT backup_run_kind_check CHECK (kind IN ('dump', 'export', 'cluster'));
