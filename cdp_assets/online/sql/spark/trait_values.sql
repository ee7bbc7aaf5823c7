SELECT t.person_id, t.trait, t.value, t.source, t.observed_at
FROM core.person_trait_values AS t LEFT SEMI JOIN _online_chunk AS c ON c.person_id = t.person_id
