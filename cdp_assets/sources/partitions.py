"""Time partitions: hourly for event streams, daily for batch sources.

The first partition comes from `CDP_PARTITIONS_START` (default 2025-01-01) so older history can be loaded
by moving it back.
"""

import os

from dagster import DailyPartitionsDefinition, HourlyPartitionsDefinition

START = os.environ.get("CDP_PARTITIONS_START", "2025-01-01")

# end_offset=1: the hour (day) in progress is a partition too, so fresh data is never invisible.
hourly_partitions = HourlyPartitionsDefinition(start_date=f"{START}-00:00", timezone="UTC", end_offset=1)
daily_partitions = DailyPartitionsDefinition(start_date=START, timezone="UTC", end_offset=1)

PARTITIONS = {"hourly": hourly_partitions, "daily": daily_partitions, "none": None}
