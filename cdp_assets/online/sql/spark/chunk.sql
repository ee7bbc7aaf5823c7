-- One slice of the scope, read and written together (memory stays bounded on a full load).
SELECT person_id FROM (
    SELECT s.person_id, row_number() OVER (ORDER BY s.person_id) AS n
    FROM _online_scope AS s LEFT SEMI JOIN core.persons AS p ON p.person_id = s.person_id
) WHERE n > :offset AND n <= :offset + :size
