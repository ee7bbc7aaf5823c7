SELECT person_id, trait, value, source, observed_at FROM core.person_trait_values SEMI JOIN _online_chunk USING (person_id);
