"""Profiles: one row per person, built by the dbt models in dbt/models/profiles."""
