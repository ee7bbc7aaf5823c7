-- Bookkeeping of incremental runs, shared by every stage (also created by dbt's on-run-start, start_batch).
-- A batch is one run of a stage that changes rows; every changed row carries the batch that wrote it
-- (`_batch_id`), and each incremental consumer remembers up to which batch it has read (core.watermarks).
CREATE SCHEMA IF NOT EXISTS core;
CREATE SCHEMA IF NOT EXISTS cdp;
CREATE SCHEMA IF NOT EXISTS validated;
CREATE TABLE IF NOT EXISTS core.batches (batch_id BIGINT, stage VARCHAR, started_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS core.watermarks (consumer VARCHAR PRIMARY KEY, batch_id BIGINT);
-- The configuration digest each configuration-dependent model was last built with (dbt macro config_digest).
CREATE TABLE IF NOT EXISTS core.model_digests (model VARCHAR PRIMARY KEY, digest VARCHAR);
CREATE TABLE IF NOT EXISTS core.id_map_changes (
    identifier_type VARCHAR, identifier_value VARCHAR, person_before VARCHAR, person_after VARCHAR, _batch_id BIGINT);
-- What validation last read of each raw partition, and under which rules: a partition whose row count,
-- newest load or rules changed is judged again, whole.
CREATE TABLE IF NOT EXISTS core.validated_partitions (
    raw_source VARCHAR, partition_key VARCHAR, raw_rows BIGINT, loaded_max TIMESTAMP, fingerprint VARCHAR);
CREATE TABLE IF NOT EXISTS cdp.quarantine (
    source VARCHAR, record VARCHAR, reasons VARCHAR[], received_at TIMESTAMP, file VARCHAR, line_no BIGINT,
    partition_key VARCHAR);
CREATE TABLE IF NOT EXISTS validated.reconciliation (
    source VARCHAR, partition_key VARCHAR, records BIGINT, accepted BIGINT, quarantined BIGINT, kind VARCHAR);
-- Tracking-plan violations of events kept under `on_violation: flag`, one row per raw record flagged.
CREATE TABLE IF NOT EXISTS cdp.tracking_plan_violations (
    source VARCHAR, event_id VARCHAR, event_type VARCHAR, event_name VARCHAR, violations VARCHAR[],
    occurred_at TIMESTAMP, received_at TIMESTAMP, partition_key VARCHAR, file VARCHAR, line_no BIGINT);
