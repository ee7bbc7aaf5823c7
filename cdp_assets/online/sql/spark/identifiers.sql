-- Each identifier of the chunk's persons, first seen when and by which source (Segment's external_ids).
WITH ids AS (
    SELECT m.person_id, m.identifier_type, m.identifier_value
    FROM cdp.id_map AS m LEFT SEMI JOIN _online_chunk AS c ON c.person_id = m.person_id
),
sources AS (
    SELECT l.identifier_type, l.identifier_value, min_by(s.source, s.seen_at) AS source, min(s.seen_at) AS first_seen_at
    FROM core.identifier_sightings AS s
    JOIN core.identifier_lookup AS l ON l.identifier_type = s.identifier_type AND l.raw_value = s.raw_value
    LEFT SEMI JOIN ids AS i ON i.identifier_type = l.identifier_type AND i.identifier_value = l.identifier_value
    GROUP BY l.identifier_type, l.identifier_value
)
SELECT ids.person_id, ids.identifier_type, ids.identifier_value, sources.source, sources.first_seen_at
FROM ids LEFT JOIN sources
    ON sources.identifier_type = ids.identifier_type AND sources.identifier_value = ids.identifier_value
