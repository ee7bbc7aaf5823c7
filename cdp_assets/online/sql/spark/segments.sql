SELECT m.person_id, m.segment, m.entered_at FROM _segment_membership AS m LEFT SEMI JOIN _online_chunk AS c ON c.person_id = m.person_id
