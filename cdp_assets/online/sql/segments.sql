SELECT person_id, segment, entered_at FROM cdp.segment_membership SEMI JOIN _online_chunk USING (person_id);
