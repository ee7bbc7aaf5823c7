-- Persons in the scope who no longer exist (merged away, their last record deleted).
SELECT person_id FROM _online_scope ANTI JOIN core.persons USING (person_id);
