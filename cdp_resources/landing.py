"""The file inputs of an instance: landing zone, CDC drops and CSV imports (contract §3).

Files are immutable once they carry their final name (writers use a temp name starting with '.' and
rename), so a reader may list and read them without coordination. A file that cannot be read at all is
moved to `landing/_rejected/` with a `.reason` file beside it, and never half-loaded. A file that no
extract reads (a wrong folder, name or suffix, an hour outside the partitions) is listed with the reason
by `stray_files`, so it is reported instead of skipped in silence.
"""

from __future__ import annotations

import gzip
import re
import shutil
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from dagster import ConfigurableResource, PartitionsDefinition

from cdp_resources.settings import data_dir

_DAY_DIR = re.compile(r"dt=(\d{4}-\d{2}-\d{2})$")
_HOUR_DIR = re.compile(r"hour=(\d{2})$")
_DATE_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")
AREAS = ("landing", "imports", "cdc")  # the folders below the data directory that extracts read
LANDING_SUFFIXES = (".jsonl", ".jsonl.gz")
CDC_SUFFIXES = (".json", ".jsonl", ".csv")


@dataclass(frozen=True)
class InputFile:
    path: Path
    partition_key: str  # hourly "YYYY-MM-DD-HH:00", daily "YYYY-MM-DD", or "" when unpartitioned


@dataclass(frozen=True)
class InputFolder:
    """Where one source's extract reads: `landing/<name>/`, `imports/<name>/` or `cdc/<name>/`."""

    area: str  # "landing" | "imports" | "cdc"
    name: str
    partitions: PartitionsDefinition | None = None  # keys outside it are not read


@dataclass(frozen=True)
class StrayFile:
    path: str  # relative to the data directory
    reason: str
    folder: InputFolder | None  # the source folder it sits in; None when no source reads its folder


class LandingZoneResource(ConfigurableResource):
    """File inputs below the data directory (default `$CDP_DATA_DIR`)."""

    root: str = ""

    def base(self) -> Path:
        return Path(self.root).resolve() if self.root else data_dir()

    def landing_files(self, source: str) -> list[InputFile]:
        """Every landed file of a push source, keyed by its hourly partition."""
        files = []
        for path in sorted((self.base() / "landing" / source).glob("dt=*/hour=*/*")):
            key = _hour_key(path.parent)
            if key and _is_input(path, LANDING_SUFFIXES):
                files.append(InputFile(path, key))
        return files

    def cdc_files(self, table: str) -> list[InputFile]:
        folder = self.base() / "cdc" / table
        return [InputFile(p, "") for p in sorted(folder.glob("*")) if _is_input(p, CDC_SUFFIXES)]

    def import_files(self, source: str) -> list[InputFile]:
        """CSV imports keyed by their import day: a date in the file name, else the file's mtime (UTC)."""
        folder = self.base() / "imports" / source
        files = [InputFile(p, import_day(p)) for p in sorted(folder.glob("*.csv")) if _is_input(p, (".csv",))]
        return [f for f in files if _valid_day(f.partition_key)]

    def input_files(self, folder: InputFolder) -> list[InputFile]:
        """The files an extract of `folder` reads: well placed and named, in its partitions."""
        listed = {"landing": self.landing_files, "imports": self.import_files, "cdc": self.cdc_files}[folder.area](folder.name)
        if folder.partitions is None:
            return listed
        # Listed keys are real hours or days, whose keys sort in time order: a range test, not a parse per file.
        first, last = folder.partitions.get_first_partition_key(), folder.partitions.get_last_partition_key()
        return [f for f in listed if first <= f.partition_key <= last]

    def stray_files(self, folders: Iterable[InputFolder]) -> list[StrayFile]:
        """Every file below landing/, imports/ and cdc/ that no extract of `folders` reads, with why.

        Not listed: names starting with '.' (files being written) and landing's internal folders (`_rejected/`,
        `_webhook_ids/`).
        """
        base = self.base()
        by_place = {(f.area, f.name): f for f in folders}
        read = {file.path for folder in by_place.values() for file in self.input_files(folder)}
        strays = []
        for area in AREAS:
            for path in sorted((base / area).rglob("*")):
                relative = path.relative_to(base)
                parts = relative.parts[1:]
                if not path.is_file() or any(part.startswith(".") for part in parts) or path in read:
                    continue
                if area == "landing" and parts[0].startswith("_"):
                    continue
                folder = by_place.get((area, parts[0])) if len(parts) > 1 else None
                reason = _why_unread(folder, parts[1:], path) if folder else (
                    f"no source reads {area}/{parts[0]}/ (config/sources.yaml)" if len(parts) > 1
                    else f"not in a source's folder ({area}/<source>/)")
                strays.append(StrayFile(relative.as_posix(), reason, folder))
        return strays

    def reject(self, file: Path, reason: str) -> Path:
        """Move an unreadable file out of the way, with the reason beside it."""
        base = self.base()
        relative = file.resolve().relative_to(base)
        parts = relative.parts[1:] if relative.parts[0] == "landing" else relative.parts
        target = base / "landing" / "_rejected" / Path(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(file), target)
        target.with_name(target.name + ".reason").write_text(reason + "\n")
        return target


def _is_input(path: Path, suffixes: tuple[str, ...]) -> bool:
    return not path.name.startswith(".") and path.name.endswith(suffixes) and path.is_file()


def _valid_day(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _hour_key(folder: Path) -> str | None:
    """The hourly partition key of a `dt=YYYY-MM-DD/hour=HH` folder, None when it is not a real hour."""
    day, hour = _DAY_DIR.match(folder.parent.name), _HOUR_DIR.match(folder.name)
    if not (day and hour and _valid_day(day[1]) and int(hour[1]) < 24):
        return None
    return f"{day[1]}-{hour[1]}:00"


def _outside(folder: InputFolder, key: str) -> str:
    keys = folder.partitions
    first, last = keys.get_first_partition_key(), keys.get_last_partition_key()
    return f"partition {key} is outside the partitions ({first} … {last}; the start is CDP_PARTITIONS_START)"


def _why_unread(folder: InputFolder, parts: tuple[str, ...], path: Path) -> str:
    """Why a file inside a source's folder is not read, in the terms of that folder's layout."""
    name = parts[-1]
    if folder.area == "landing":
        if len(parts) != 3 or not (_DAY_DIR.match(parts[0]) and _HOUR_DIR.match(parts[1])):
            return "not in a dt=YYYY-MM-DD/hour=HH/ folder"
        if not _valid_day(parts[0][3:]):
            return f"{parts[0]} is not a date"
        if int(parts[1][5:]) > 23:
            return f"{parts[1]} is not an hour (00-23)"
        if not name.endswith(LANDING_SUFFIXES):
            return "not a .jsonl or .jsonl.gz file"
        return _outside(folder, _hour_key(path.parent))
    if len(parts) != 1:
        return f"in a subfolder: only files directly in {folder.area}/{folder.name}/ are read"
    if folder.area == "cdc":
        return f"not a {', '.join(CDC_SUFFIXES)} file"
    if not name.endswith(".csv"):
        return "not a .csv file"
    day = import_day(path)
    if not _valid_day(day):
        return f"{day} in the name is not a date"
    return _outside(folder, day)


def import_day(path: Path) -> str:
    match = _DATE_IN_NAME.search(path.name)
    if match:
        return match[1]
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).date().isoformat()


def read_text(path: Path) -> str:
    """The text of a landing/CDC file (gzip allowed, any number of members; a UTF-8 BOM dropped).
    Raises ValueError naming the file when it cannot be read as a whole."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8-sig")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:  # BadGzipFile is an OSError
        raise ValueError(f"{path.name}: cannot be read: {exc}") from exc
