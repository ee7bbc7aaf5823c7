"""The online store as an asset: downstream of profiles, identity and every segment, so each refresh that
changes them also brings the store up to date (only the persons that changed)."""

from dagster import AssetExecutionContext, AssetKey, MaterializeResult, asset

from cdp_assets.online.update import update_store_in
from cdp_assets.segments.assets import segment_assets
from cdp_resources import WarehouseResource
from cdp_resources.online_store import OnlineStoreResource

STORE_KEY = AssetKey(["online", "profile_store"])
INPUTS = [AssetKey(["cdp", "profiles"]), AssetKey(["cdp", "id_map"]), AssetKey(["core", "person_trait_values"]),
          AssetKey(["cdp", "relationships"]), AssetKey(["core", "person_events"])]


def online_store_asset():
    @asset(
        key=STORE_KEY,
        deps=INPUTS + [segment.key for segment in segment_assets()],
        group_name="online",
        description="The store the Profile API and the staff page serve (CDP_ONLINE_STORE: SQLite under the data "
                    "directory, or Redis): each person whose profile, identifiers, events or segments changed.",
        kinds={"sqlite", "redis"},
        owners=["team:data-platform"],
        pool="warehouse",
    )
    def profile_store(context: AssetExecutionContext, warehouse: WarehouseResource, online_store: OnlineStoreResource) -> MaterializeResult:
        store = online_store.open()
        try:
            update = update_store_in(warehouse.engine(), store)
        finally:
            store.close()
        context.log.info(f"online store ({store.describe()}): {update.mode} ({update.reason}), "
                         f"{update.persons_written} persons written, {update.persons_deleted} deleted, "
                         f"{update.live_dropped} live messages now in the warehouse")
        return MaterializeResult(metadata={
            "mode": update.mode, "reason": update.reason, "persons_written": update.persons_written,
            "persons_deleted": update.persons_deleted, "live_messages_dropped": update.live_dropped,
            "dagster/row_count": update.persons_in_store, "store": store.kind,
        })

    return profile_store
