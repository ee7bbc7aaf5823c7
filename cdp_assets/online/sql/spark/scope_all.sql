-- A full load: every person.
SELECT person_id FROM core.persons
