-- Where the store has read up to: the warehouse's last batch and the last segment change.
SELECT (SELECT coalesce(max(batch_id), 0) FROM core.batches) AS batch,
       (SELECT max(changed_at) FROM _segment_changes) AS segments_at
