-- The most recent events of the chunk's persons ($per_person each): the store's timeline; older ones stay in
-- the warehouse. cdp.events is filtered by its own identifier columns first, as segments do, so the
-- person_events join reads only these persons' events.
-- Times leave as the store keeps them (µs since the epoch, ISO-8601 with milliseconds: cdp_resources
-- online_store/live.py `micros`, `iso`), computed here, not per event in Python.
SELECT pe.person_id, pe.event_id, pe.event_type, pe.event_name, epoch_us(pe.occurred_at) AS ts,
       strftime(pe.occurred_at, '%Y-%m-%dT%H:%M:%S.%gZ') AS occurred_iso,
       strftime(pe.received_at, '%Y-%m-%dT%H:%M:%S.%gZ') AS received_iso, pe.source,
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
