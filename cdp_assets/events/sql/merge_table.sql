-- Accepted records of some raw partitions of a table source (_accepted: the partitions' whole new content,
-- batch $batch) into {changes} (every accepted version or change, in source order) and {current} (the
-- current row per {key}: the latest by {order}; a CDC delete ends it). A current row whose content did not
-- change keeps its batch (and the time it was first received); one that changed or ended moves to
-- {removed} (what downstream models read to forget it).
CREATE OR REPLACE TEMP TABLE _keys AS
    SELECT {key} AS k FROM {changes} WHERE partition_key BETWEEN list_min($partitions) AND list_max($partitions) AND list_contains($partitions, partition_key) AND {key} IS NOT NULL
    UNION SELECT {key} FROM _accepted WHERE {key} IS NOT NULL;
DELETE FROM {changes} WHERE partition_key BETWEEN list_min($partitions) AND list_max($partitions) AND list_contains($partitions, partition_key);
INSERT INTO {changes} BY NAME SELECT *, $batch::BIGINT AS _batch_id FROM _accepted;
CREATE OR REPLACE TEMP TABLE _latest AS
    SELECT * FROM {changes} c SEMI JOIN _keys ON c.{key} = _keys.k
    WHERE {live}
    QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {order}) = 1;
CREATE OR REPLACE TEMP TABLE _gone AS
    SELECT t.* FROM {current} t SEMI JOIN _keys ON t.{key} = _keys.k
    WHERE NOT EXISTS (SELECT 1 FROM _latest l WHERE l.{key} = t.{key} AND l.row_hash = t.row_hash {ended});
INSERT INTO {removed} BY NAME SELECT *, $batch::BIGINT AS _removed_batch_id FROM _gone;
DELETE FROM {current} t USING _gone g WHERE t.{key} = g.{key};
INSERT INTO {current} BY NAME
    SELECT {columns}, $batch::BIGINT AS _batch_id FROM _latest l
    WHERE NOT EXISTS (SELECT 1 FROM {current} t WHERE t.{key} = l.{key}) {ended_insert};
DROP TABLE _keys; DROP TABLE _latest; DROP TABLE _gone;
