-- Each identifier of the chunk's persons, first seen when and by which source (Segment's external_ids).
WITH ids AS (
    SELECT m.person_id, m.identifier_type, m.identifier_value
    FROM cdp.id_map AS m SEMI JOIN _online_chunk USING (person_id)
),
sources AS (
    SELECT l.identifier_type, l.identifier_value, min_by(s.source, s.seen_at) AS source, min(s.seen_at) AS first_seen_at
    FROM core.identifier_sightings AS s
    JOIN core.identifier_lookup AS l USING (identifier_type, raw_value)
    SEMI JOIN ids USING (identifier_type, identifier_value)
    GROUP BY ALL
)
SELECT ids.person_id, ids.identifier_type, ids.identifier_value, sources.source, sources.first_seen_at
FROM ids LEFT JOIN sources USING (identifier_type, identifier_value);
