"""Raw identifier value -> normalized value per type (contract §4), null when blocked or not an identifier.

A dbt Python model because normalization is Python: phones through libphonenumber in
cdp_assets/identity/normalize.py, the one place that decides it, and blocked values by the rules of
config/identity.yaml (cdp_assets/identity/rules.py). Incremental: only the raw values of sightings added
since the last run and not looked up yet are normalized; when the rules change, every value is again.
"""

import polars as pl


def model(dbt, session):
    dbt.config(tags=["identity_inputs"], materialized="incremental", unique_key=["identifier_type", "raw_value"], incremental_strategy="delete+insert")
    from cdp_assets.identity.normalize import normalize_identifiers
    from cdp_assets.identity.rules import load_identity_rules
    from cdp_resources.settings import config_dir

    rules = load_identity_rules(config_dir() / "identity.yaml")
    fingerprint = rules.fingerprint()
    values = dbt.ref("identifier_sightings").set_alias("s")
    if dbt.is_incremental and not session.sql(f"SELECT count(*) FROM {dbt.this} WHERE rules <> $1", params=[fingerprint]).fetchone()[0]:
        since = session.sql(
            "SELECT coalesce(max(batch_id), -1) FROM core.watermarks WHERE consumer = 'identifier_lookup'").fetchone()[0]
        known = session.sql(f"SELECT identifier_type, raw_value FROM {dbt.this}").set_alias("k")
        values = values.filter(f"s._batch_id > {int(since)}").join(
            known, "s.identifier_type = k.identifier_type AND s.raw_value = k.raw_value", how="anti")
    frame = values.select("s.identifier_type, s.raw_value").distinct().pl()
    normalized = normalize_identifiers(
        frame.with_columns(identifier_value=pl.col("raw_value")), "identifier_type", "identifier_value",
        rules.default_phone_region,
    )
    return normalized.select(
        "identifier_type", "raw_value",
        pl.when(pl.col("identifier_value").is_null() | rules.blocked()).then(None)
        .otherwise(pl.col("identifier_value")).alias("identifier_value"),
        pl.lit(fingerprint).alias("rules"),
    )
