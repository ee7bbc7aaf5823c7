-- A full load: every person.
CREATE OR REPLACE TEMP TABLE _online_scope AS SELECT person_id FROM core.persons;
