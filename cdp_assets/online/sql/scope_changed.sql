-- The persons whose view in the online store can have changed since the store last read the warehouse:
-- profile rows rewritten (cdp.profiles stamps changed rows with their batch: traits, computed traits,
-- clock-driven ones), persons whose records or identifiers changed (core.affected_persons: both sides of
-- every merge or split, so merged-away persons are here too) and segment entries and exits.
CREATE OR REPLACE TEMP TABLE _online_scope AS
SELECT DISTINCT person_id FROM (
    SELECT person_id FROM cdp.profiles WHERE _batch_id > $batch
    UNION ALL
    SELECT person_id FROM core.affected_persons WHERE _batch_id > $batch
    UNION ALL
    SELECT person_id FROM cdp.segment_changes WHERE changed_at > $segments_at
) WHERE person_id IS NOT NULL;
