SELECT r.person_id, r.kind, r.related_value, r.source, r.first_seen_at, r.last_seen_at
FROM cdp.relationships AS r LEFT SEMI JOIN _online_chunk AS c ON c.person_id = r.person_id
