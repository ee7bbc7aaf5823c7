SELECT p.* FROM cdp.profiles AS p LEFT SEMI JOIN _online_chunk AS c ON c.person_id = p.person_id
