from dagster import Definitions

from cdp_assets.privacy.jobs import erasure_requests_sensor, privacy_job

__all__ = ["definitions", "privacy_job"]


def definitions() -> Definitions:
    return Definitions(jobs=[privacy_job], sensors=[erasure_requests_sensor])
