from dagster import Definitions

from cdp_assets.config import load_sources
from cdp_assets.sources.assets import build_source_asset, input_folder, input_folders
from cdp_assets.sources.checks import stray_files_check, volume_check
from cdp_assets.sources.jobs import source_job
from cdp_assets.sources.schedules import source_schedule
from cdp_assets.sources.sensors import cdc_sensor, landing_sensor


def definitions() -> Definitions:
    assets, jobs, schedules, sensors, checks = [], [], [], [], []
    sources = load_sources().values()
    folders = input_folders(sources)
    for source in sources:
        job = source_job(source)
        assets.append(build_source_asset(source))
        jobs.append(job)
        schedules.append(source_schedule(source, job))
        if source.partitions != "none":
            checks.append(volume_check(source))
        if input_folder(source):
            checks.append(stray_files_check(source, folders))
        if source.produces_events:
            sensors.append(landing_sensor(source, job))
        elif source.kind == "cdc":
            sensors.append(cdc_sensor(source, job))
    return Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=sensors, asset_checks=checks)
