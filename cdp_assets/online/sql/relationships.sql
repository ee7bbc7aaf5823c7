SELECT person_id, kind, related_value, source, first_seen_at, last_seen_at FROM cdp.relationships SEMI JOIN _online_chunk USING (person_id);
