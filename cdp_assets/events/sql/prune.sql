-- Change logs are kept until every model that reads them has read them (core.watermarks), then dropped, so
-- they stay the size of what changed recently, not of history. A reader that never ran holds its log.
DELETE FROM core.touched_identifiers WHERE _batch_id <= (
    SELECT coalesce(min(w.batch_id), -1) FROM (SELECT unnest(['identity_edges', 'identifiers', 'resolve_persons']) AS consumer) c
    LEFT JOIN core.watermarks w USING (consumer));
DELETE FROM core.id_map_changes WHERE _batch_id <= (
    SELECT coalesce(min(w.batch_id), -1) FROM (SELECT 'affected_persons' AS consumer) c LEFT JOIN core.watermarks w USING (consumer));
DELETE FROM core.affected_persons WHERE _batch_id <= least(
    (SELECT coalesce(min(w.batch_id), -1) FROM (SELECT unnest(['person_trait_values', 'relationships', 'person_computed_base', 'online_store']) AS consumer) c
     LEFT JOIN core.watermarks w USING (consumer)),
    (SELECT coalesce(min(batch_id), 9223372036854775807) FROM core.segment_evaluations));
