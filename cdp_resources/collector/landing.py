"""Durable landing with group commit: many requests share one file and one fsync.

A request hands its lines to `LandingWriter.write()` and waits. One writer task takes everything pending
and, in a worker thread, writes one file per (source, hour) under a temp name starting with '.', fsyncs
it, renames it to `*.jsonl`, fsyncs the directory, then wakes every waiting request: a 200 is only ever
sent for lines on disk. Requests that arrive during a flush (the event loop keeps accepting) form the next
batch, so batches grow with the load by themselves; waiting a few ms for more measured no faster
(benchmarks/RESULTS.md). Small requests waiting beside big ones are flushed first, on their own. A file is never touched after its rename: a reader processes each exactly once.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 3600
BIG_REQUEST_BYTES = 64 * 1024


@dataclass(frozen=True)
class Line:
    source: str
    partition: str  # "dt=YYYY-MM-DD/hour=HH"
    data: bytes  # one JSON document without the newline
    dedupe_key: str | None = None  # lands at most once per (source, key), across restarts


def partition_of(moment: datetime) -> str:
    moment = moment.astimezone(timezone.utc)
    return f"dt={moment:%Y-%m-%d}/hour={moment:%H}"


@dataclass
class _Pending:
    lines: list[Line]
    future: asyncio.Future
    size: int  # bytes


class LandingWriter:
    """Group-commit writer of landing files below `root` (the `landing/` directory)."""

    def __init__(self, root: Path):
        self.root = root
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        # One thread: flushes never overlap, so the dedupe index needs no locking.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="landing")
        self._ready_dirs: set[Path] = set()
        self._seen = SeenIds(root / "_webhook_ids" / "ids.sqlite")
        # Called with the data of each request's newly landed lines once they are durable (protocol.land()),
        # e.g. the online store's recent-event log; never allowed to fail or delay the answer.
        self.listeners: list = []

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._sweep_stale_temp_files)
        self._task = asyncio.create_task(self._run(), name="landing-writer")

    async def stop(self) -> None:
        """Land whatever is still pending, then stop."""
        self._closing = True
        self._wake.set()
        if self._task:
            await self._task
        await asyncio.get_running_loop().run_in_executor(self._executor, self._seen.close)
        self._executor.shutdown()

    async def write(self, lines: list[Line]) -> list[bool]:
        """Returns once `lines` are durable: for each, True if landed now, False if its key was seen before."""
        if self._closing or self._task is None:
            raise RuntimeError("the landing writer is not running")
        if not lines:
            return []
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(lines, future, sum(len(line.data) for line in lines)))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while self._pending or not self._closing:
            await self._wake.wait()
            batch, self._pending = self._pending, []
            self._wake.clear()
            # Small requests first, in a flush of their own: a single event does not wait for megabytes of
            # batches to be written (one more fsync, only when both kinds are waiting).
            small = [pending for pending in batch if pending.size <= BIG_REQUEST_BYTES]
            big = [pending for pending in batch if pending.size > BIG_REQUEST_BYTES]
            for group in (small, big):
                if group:
                    await self._commit(group)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            landed = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._flush, [ln for p in batch for ln in p.lines]
            )
        except Exception as exc:  # e.g. disk full: every waiting request answers 503, nothing is acknowledged
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        start = 0
        for pending in batch:
            if not pending.future.done():
                pending.future.set_result(landed[start : start + len(pending.lines)])
            start += len(pending.lines)

    def _flush(self, lines: list[Line]) -> list[bool]:
        keys = [(ln.source, ln.dedupe_key) for ln in lines if ln.dedupe_key is not None]
        seen = self._seen.seen(keys) if keys else set()
        landed, new_keys = [], []
        groups: dict[tuple[str, str], list[bytes]] = defaultdict(list)
        for line in lines:
            key = (line.source, line.dedupe_key)
            if line.dedupe_key is not None:
                if key in seen:
                    landed.append(False)
                    continue
                seen.add(key)
                new_keys.append(key)
            groups[(line.source, line.partition)].append(line.data)
            landed.append(True)
        # In path order, so files of one flush also sort by path in the order they appeared.
        folders = {self._write_file(self.root / src / part, groups[(src, part)]) for src, part in sorted(groups)}
        for folder in folders:
            _fsync_dir(folder)
        # Recorded after the lines are durable: a crash in between can land a webhook twice, never lose it.
        self._seen.add(new_keys)
        return landed

    def _write_file(self, folder: Path, datas: list[bytes]) -> Path:
        self._ensure_dir(folder)
        name = f"{time.time_ns()}-{secrets.token_hex(4)}.jsonl"
        temp = folder / (TEMP_PREFIX + name)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(b"\n".join(datas) + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(temp, folder / name)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return folder

    def _ensure_dir(self, folder: Path) -> None:
        """Create `folder` with its parents, each new entry fsynced into its parent so it survives a crash."""
        if folder in self._ready_dirs:
            return
        missing, path = [], folder
        while not path.is_dir():
            missing.append(path)
            path = path.parent
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
            _fsync_dir(path.parent)
        self._ready_dirs.add(folder)

    def _sweep_stale_temp_files(self) -> None:
        """Temp files of a crashed flush were never acknowledged; remove the old ones."""
        cutoff = time.time() - STALE_TEMP_SECONDS
        for temp in self.root.glob(f"*/dt=*/hour=*/{TEMP_PREFIX}*"):
            try:
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()
            except FileNotFoundError:
                pass


class SeenIds:
    """The durable set of (source, key) pairs already landed: SQLite, WAL, fsync on every commit."""

    def __init__(self, path: Path):
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS seen (source TEXT, key TEXT, PRIMARY KEY (source, key)) WITHOUT ROWID"
            )
        return self._db

    def seen(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        db = self._connect()
        query = "SELECT 1 FROM seen WHERE source = ? AND key = ?"
        return {key for key in keys if db.execute(query, key).fetchone()}

    def add(self, keys: list[tuple[str, str]]) -> None:
        if keys:
            db = self._connect()
            with db:
                db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", keys)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
