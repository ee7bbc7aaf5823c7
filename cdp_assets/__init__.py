"""The customer data platform's Dagster code location: sources → events → identity → profiles → segments."""
