-- Persons in the scope who no longer exist (merged away, their last record deleted).
SELECT s.person_id FROM _online_scope AS s LEFT ANTI JOIN core.persons AS p ON p.person_id = s.person_id
