SELECT * FROM cdp.profiles SEMI JOIN _online_chunk USING (person_id);
