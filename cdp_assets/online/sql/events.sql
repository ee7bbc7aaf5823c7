-- The most recent events of the chunk's persons ($per_person each): the store's timeline; older ones stay in
-- the warehouse. cdp.events is filtered by its own identifier columns first, as segments do, so the
-- person_events join reads only these persons' events.
SELECT pe.person_id, pe.event_id, pe.event_type, pe.event_name, pe.occurred_at, pe.received_at, pe.source,
       pe.properties, pe.traits, pe.context
FROM core.person_events AS pe
WHERE pe.person_id IN (SELECT person_id FROM _online_chunk)
  AND pe.event_id IN (
    SELECT e.event_id FROM cdp.events AS e
    WHERE e.user_id IN (SELECT raw_value FROM core.identifier_persons
                        WHERE identifier_type = 'user_id' AND person_id IN (SELECT person_id FROM _online_chunk))
       OR e.anonymous_id IN (SELECT raw_value FROM core.identifier_persons
                             WHERE identifier_type = 'anonymous_id' AND person_id IN (SELECT person_id FROM _online_chunk)))
QUALIFY row_number() OVER (PARTITION BY pe.person_id ORDER BY pe.occurred_at DESC, pe.event_id DESC) <= $per_person;
