-- Accepted events of some raw partitions (_accepted: the partitions' whole new content, batch $batch) into
-- cdp.events, one row per messageId: the copy received first wins (then by raw position), the others wait in
-- core.event_duplicates, so a replay counts once and removing the winner's partition promotes the next copy.
-- A row of cdp.events whose content did not change keeps its batch; one that changed or vanished moves to
-- core.events_removed (what downstream models read to forget it).
-- Partitions are matched by range and membership, so DuckDB skips row groups outside the keys' range.
CREATE OR REPLACE TEMP TABLE _old AS
    SELECT * FROM cdp.events WHERE raw_source = $source AND partition_key BETWEEN list_min($partitions) AND list_max($partitions) AND list_contains($partitions, partition_key)
    UNION ALL
    SELECT * FROM core.event_duplicates WHERE raw_source = $source AND partition_key BETWEEN list_min($partitions) AND list_max($partitions) AND list_contains($partitions, partition_key);
CREATE OR REPLACE TEMP TABLE _ids AS
    SELECT event_id FROM _old UNION SELECT event_id FROM _accepted;
CREATE OR REPLACE TEMP TABLE _candidates AS
    SELECT * FROM (
        SELECT * FROM cdp.events SEMI JOIN _ids USING (event_id)
        UNION ALL
        SELECT * FROM core.event_duplicates SEMI JOIN _ids USING (event_id)
    ) WHERE NOT coalesce(raw_source = $source AND partition_key BETWEEN list_min($partitions) AND list_max($partitions)
                         AND list_contains($partitions, partition_key), false)
    UNION ALL BY NAME
    SELECT *, $batch::BIGINT AS _batch_id FROM _accepted;
CREATE OR REPLACE TEMP TABLE _winners AS
    SELECT * FROM _candidates
    QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY received_at, raw_source, partition_key, file, line_no) = 1;
DELETE FROM core.event_duplicates d USING _ids i WHERE d.event_id = i.event_id;
INSERT INTO core.event_duplicates BY NAME
    SELECT * FROM _candidates c
    WHERE NOT EXISTS (SELECT 1 FROM _winners w WHERE w.raw_source = c.raw_source AND w.partition_key = c.partition_key
                      AND w.file = c.file AND w.line_no = c.line_no);
CREATE OR REPLACE TEMP TABLE _gone AS
    SELECT e.* FROM cdp.events e SEMI JOIN _ids USING (event_id)
    WHERE NOT EXISTS (SELECT 1 FROM _winners w WHERE w.event_id = e.event_id AND w.row_hash = e.row_hash);
INSERT INTO core.events_removed BY NAME SELECT *, $batch::BIGINT AS _removed_batch_id FROM _gone;
DELETE FROM cdp.events e USING _gone g WHERE e.event_id = g.event_id;
-- Same content, another copy now winning (its partition was reloaded): only the position moves.
UPDATE cdp.events e SET raw_source = w.raw_source, partition_key = w.partition_key, file = w.file, line_no = w.line_no
    FROM _winners w
    WHERE e.event_id = w.event_id
      AND (e.raw_source, e.partition_key, e.file, e.line_no) IS DISTINCT FROM (w.raw_source, w.partition_key, w.file, w.line_no);
INSERT INTO cdp.events BY NAME
    SELECT * REPLACE ($batch::BIGINT AS _batch_id) FROM _winners w
    WHERE NOT EXISTS (SELECT 1 FROM cdp.events e WHERE e.event_id = w.event_id);
DROP TABLE _old; DROP TABLE _ids; DROP TABLE _candidates; DROP TABLE _winners; DROP TABLE _gone;
