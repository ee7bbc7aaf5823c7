"""Time the validation stage alone (the events asset's `validate_sources_in`) on a Spark standalone cluster
started here (2 cores, 8g worker, 7g executor, 4g driver, as benchmarks/pipeline_benchmark.py), on a copy of a
warehouse whose sources were extracted on Spark.

  PYTHONPATH=. .venv/bin/python benchmarks/spark_validation_benchmark.py prepare WORK EVENTS
      # generate the sample shop (seed 7, ending 2026-11-28 07:00) and extract its sources on Spark into WORK/data
  PYTHONPATH=. .venv/bin/python benchmarks/spark_validation_benchmark.py validate WORK LABEL
      # copy WORK/data to WORK/LABEL, validate there at CDP_NOW 2026-11-28 08:00, print seconds and totals
The code measured is the checkout PYTHONPATH names first, so two checkouts (before and after a change) can be
measured on copies of the same raw tables."""
import json, os, shutil, sys, time
from pathlib import Path

cmd, work = sys.argv[1], Path(sys.argv[2])
repo = Path(os.environ.get("PYTHONPATH", ".").split(":")[0]).resolve()
sys.path.insert(0, str(repo / "tests"))
from spark_cluster import start_cluster, stop_cluster

data = work / "data" if cmd == "prepare" else work / sys.argv[3]
if cmd == "validate":
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(work / "data", data, symlinks=True)
os.environ.update({"CDP_DATA_DIR": str(data), "CDP_CONFIG_DIR": str(repo / "config"), "CDP_ENGINE": "spark",
                   "CDP_NOW": "2026-11-28T08:00:00"})
os.environ["PYSPARK_SUBMIT_ARGS"] = ("--driver-memory 4g --conf spark.executor.memory=7g --conf spark.cores.max=2 "
    "--conf spark.sql.autoBroadcastJoinThreshold=-1 --conf spark.sql.adaptive.autoBroadcastJoinThreshold=10MB pyspark-shell")
cluster, processes = start_cluster(work / f"cluster-{cmd}-{os.getpid()}", 2, "8g", "7g")
os.environ["CDP_SPARK_MASTER"] = cluster.master_url
try:
    if cmd == "prepare":
        from datetime import datetime
        from cdp_assets.sample_data import generate_sample_data
        generate_sample_data(data, events=int(sys.argv[3]), seed=7, end=datetime(2026, 11, 28, 7), log=lambda *_: None)
        sys.path.insert(0, str(repo / "tests"))
        import test_spark_validation as t
        t.extract_sources()
        print("prepared")
    else:
        from datetime import datetime, timedelta
        from cdp_assets.config import load_sources
        from cdp_assets.events.pii import load_pii_rules
        from cdp_assets.events.validate import validate_sources_in
        from cdp_resources import WarehouseResource
        from cdp_resources.settings import config_dir
        now = datetime(2026, 11, 28, 8)
        engine = WarehouseResource().engine()
        engine.session()
        started = time.monotonic()
        run = validate_sources_in(engine, load_sources(), load_pii_rules(config_dir() / "pii.yaml"),
                                  {"max_event_time": now + timedelta(days=1)}, now, log=lambda m: print(f"{time.monotonic() - started:7.1f}s {m}", flush=True))
        seconds = time.monotonic() - started
        print(json.dumps({"label": sys.argv[3], "validation_s": round(seconds, 1),
                          "totals": {k: v for k, v in run.totals.items() if isinstance(v, int)},
                          "results": {k: [r.records, r.accepted, r.quarantined, len(r.partitions)] for k, r in run.results.items()}}))
finally:
    stop_cluster(processes)
