-- Which messages of the recent-event log the warehouse now holds (validated into cdp.events).
SELECT event_id FROM cdp.events WHERE array_contains(:ids, event_id)
