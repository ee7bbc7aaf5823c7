-- The persons whose view in the online store can have changed since the store last read the warehouse
-- (../scope_changed.sql says which and why).
SELECT DISTINCT person_id FROM (
    SELECT person_id FROM cdp.profiles WHERE _batch_id > :batch
    UNION ALL
    SELECT person_id FROM core.affected_persons WHERE _batch_id > :batch
    UNION ALL
    SELECT person_id FROM _segment_changes WHERE changed_at > to_timestamp(:segments_at)
) WHERE person_id IS NOT NULL
