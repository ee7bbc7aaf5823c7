-- A *_removed log of a validated table, once every model reading such logs has read it.
DELETE FROM {log} WHERE _removed_batch_id <= (
    SELECT coalesce(min(w.batch_id), -1) FROM (SELECT unnest($readers::VARCHAR[]) AS consumer) c
    LEFT JOIN core.watermarks w USING (consumer));
