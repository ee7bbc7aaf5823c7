-- One slice of the scope, read and written together (memory stays bounded on a full load).
CREATE OR REPLACE TEMP TABLE _online_chunk AS
SELECT person_id FROM _online_scope SEMI JOIN core.persons USING (person_id)
ORDER BY person_id LIMIT $size OFFSET $offset;
