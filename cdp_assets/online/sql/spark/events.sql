-- The most recent events of the chunk's persons (:per_person each), as ../events.sql reads them; times as the
-- store keeps them (µs since the epoch, ISO-8601 with milliseconds, in the session's UTC).
SELECT person_id, event_id, event_type, event_name, ts, occurred_iso, received_iso, source, properties, traits, context
FROM (
    SELECT pe.person_id, pe.event_id, pe.event_type, pe.event_name, unix_micros(pe.occurred_at) AS ts,
           date_format(pe.occurred_at, "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'") AS occurred_iso,
           date_format(pe.received_at, "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'") AS received_iso, pe.source,
           pe.properties, pe.traits, pe.context,
           row_number() OVER (PARTITION BY pe.person_id ORDER BY pe.occurred_at DESC, pe.event_id DESC) AS n
    FROM core.person_events AS pe
    WHERE pe.person_id IN (SELECT person_id FROM _online_chunk)
      AND pe.event_id IN (
        SELECT e.event_id FROM cdp.events AS e
        WHERE e.user_id IN (SELECT raw_value FROM core.identifier_persons
                            WHERE identifier_type = 'user_id' AND person_id IN (SELECT person_id FROM _online_chunk))
           OR e.anonymous_id IN (SELECT raw_value FROM core.identifier_persons
                                 WHERE identifier_type = 'anonymous_id' AND person_id IN (SELECT person_id FROM _online_chunk)))
) WHERE n <= :per_person
