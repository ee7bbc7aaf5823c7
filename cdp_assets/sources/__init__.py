"""Sources: land every input verbatim in the warehouse's `raw` schema, one asset per configured source."""
