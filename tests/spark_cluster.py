"""A real Spark standalone cluster for tests: a master and one worker on 127.0.0.1, started from the pyspark
wheel (`$SPARK_HOME/bin/spark-class ...Master` / `...Worker`), once per test session, killed at its end.

Small on purpose (the machine is shared): the worker offers 1 core and 1 GB, the driver and the executor
take 768 MB each. Without Java 17 a Spark test is skipped saying why, except in CI (`CI=true`), where that is a
failure.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

_STARTUP_S = 90


@dataclass
class SparkCluster:
    master_url: str  # spark://127.0.0.1:<port>
    ui_url: str
    conf: dict[str, str]  # what a driver on this cluster should set (memory, cores)


def require_java() -> None:
    """Skip (fail in CI) unless Java 17 or newer and pyspark are installed."""
    problem = _java_problem()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Spark tests need {problem} in CI")
        pytest.skip(f"Spark test needs {problem}")


def _java_problem() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark (make install installs the `spark` extra)"
    java = shutil.which("java", path=(os.environ.get("JAVA_HOME", "") + "/bin:" + os.environ.get("PATH", "")))
    if not java:
        return "Java 17 (apt-get install openjdk-17-jre-headless)"
    shown = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    found = re.search(r'version "(\d+)', shown)
    if not found or int(found.group(1)) < 17:
        return f"Java 17 or newer (found: {shown.splitlines()[0] if shown else 'no version'})"
    return None


def start_cluster(work: Path, cores: int = 1, memory: str = "1g", executor_memory: str = "768m"):
    """Start master and a worker offering `cores` and `memory` under `work`; returns (SparkCluster, processes)."""
    import pyspark

    spark_home = Path(pyspark.__file__).resolve().parent
    env = {
        **os.environ,
        "SPARK_HOME": str(spark_home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(work / "logs"),
        "SPARK_LOCAL_DIRS": str(work / "local"),
        "SPARK_DAEMON_MEMORY": "256m",
    }
    master_port, master_ui, worker_ui = _free_ports(3)
    spark_class = str(spark_home / "bin" / "spark-class")
    processes = []
    try:
        processes.append(_launch(work / "master.log", env, [
            spark_class, "org.apache.spark.deploy.master.Master",
            "--host", "127.0.0.1", "--port", str(master_port), "--webui-port", str(master_ui)]))
        master_url = f"spark://127.0.0.1:{master_port}"
        processes.append(_launch(work / "worker.log", env, [
            spark_class, "org.apache.spark.deploy.worker.Worker",
            "--host", "127.0.0.1", "--cores", str(cores), "--memory", memory, "--webui-port", str(worker_ui),
            "--work-dir", str(work / "worker"), master_url]))
        ui_url = f"http://127.0.0.1:{master_ui}"
        _wait_for_worker(ui_url, processes, work)
    except BaseException:
        stop_cluster(processes)
        raise
    conf = {
        "spark.driver.memory": "768m",
        "spark.executor.memory": executor_memory,
        "spark.executor.cores": str(cores),
        "spark.cores.max": str(cores),
        "spark.sql.shuffle.partitions": "2",  # small data: fewer tasks, less scheduling
    }
    return SparkCluster(master_url, ui_url, conf), processes


# The tests' runs are short and their data small: the JVM's top JIT tier and its concurrent collector cost more CPU
# than they save there (benchmarks/spark_test_cluster_jvm.py). Benchmarks at scale keep the JVM's defaults.
SHORT_RUNS = {option: "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
              for option in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")}


def submit_args(conf: dict[str, str]) -> str:
    """PYSPARK_SUBMIT_ARGS giving a driver `conf` (PySpark splits it as a shell would)."""
    return " ".join(f"--conf {shlex.quote(f'{k}={v}')}" for k, v in conf.items()) + " pyspark-shell"


def stop_cluster(processes: list[subprocess.Popen]) -> None:
    for process in reversed(processes):  # worker first: the master does not wait for it
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _launch(log: Path, env: dict, command: list[str]) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:  # its own process group: the JVM and anything it starts die together
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_worker(ui_url: str, processes: list[subprocess.Popen], work: Path) -> None:
    deadline = time.monotonic() + _STARTUP_S
    while time.monotonic() < deadline:
        for process, log in zip(processes, ("master.log", "worker.log")):
            if process.poll() is not None:
                raise RuntimeError(f"Spark {log[:-4]} exited with {process.returncode}:\n{_tail(work / log)}")
        try:
            with urllib.request.urlopen(f"{ui_url}/json/", timeout=2) as answer:
                state = json.load(answer)
            if any(worker.get("state") == "ALIVE" for worker in state.get("workers", [])):
                return
        except (OSError, ValueError):  # not listening yet, or a half-started UI answering with no JSON
            pass
        time.sleep(0.5)
    raise RuntimeError(f"no Spark worker registered within {_STARTUP_S}s:\n{_tail(work / 'worker.log')}")


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory):
    """The test session's standalone cluster (started on first use)."""
    require_java()
    cluster, processes = start_cluster(tmp_path_factory.mktemp("spark-cluster"))
    cluster.conf.update(SHORT_RUNS)
    # Every session of this process (those `cdp run` and the assets start from CDP_SPARK_MASTER too) is sized for
    # the small cluster, as a user's cluster sizes its own through PYSPARK_SUBMIT_ARGS or spark-defaults.conf.
    os.environ.setdefault("PYSPARK_SUBMIT_ARGS", submit_args(cluster.conf))
    try:
        yield cluster
    finally:
        from cdp_resources.spark import SparkEngine

        SparkEngine(cluster.master_url, tmp_path_factory.getbasetemp()).stop()
        stop_cluster(processes)


@pytest.fixture(scope="session")
def spark_engine(spark_cluster, tmp_path_factory):
    """A SparkEngine on the cluster with its warehouse in a temporary directory."""
    from cdp_resources.spark import SparkEngine

    engine = SparkEngine(spark_cluster.master_url, tmp_path_factory.mktemp("spark-warehouse"), spark_cluster.conf)
    engine.session()
    yield engine
    engine.stop()
