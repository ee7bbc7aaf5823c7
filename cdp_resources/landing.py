"""The file inputs of an instance: landing zone, CDC drops and CSV imports (contract §3).

Files are immutable once they carry their final name (writers use a temp name starting with '.' and
rename), so a reader may list and read them without coordination. A file that cannot be read at all is
moved to `landing/_rejected/` with a `.reason` file beside it, and never half-loaded.
"""

from __future__ import annotations

import gzip
import re
import shutil
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from dagster import ConfigurableResource

from cdp_resources.settings import data_dir

_HOUR_DIR = re.compile(r"dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})$")
_DATE_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")


@dataclass(frozen=True)
class InputFile:
    path: Path
    partition_key: str  # hourly "YYYY-MM-DD-HH:00", daily "YYYY-MM-DD", or "" when unpartitioned


class LandingZoneResource(ConfigurableResource):
    """File inputs below the data directory (default `$CDP_DATA_DIR`)."""

    root: str = ""

    def base(self) -> Path:
        return Path(self.root).resolve() if self.root else data_dir()

    def landing_files(self, source: str) -> list[InputFile]:
        """Every landed file of a push source, keyed by its hourly partition."""
        files = []
        for path in sorted((self.base() / "landing" / source).glob("dt=*/hour=*/*.jsonl*")):
            match = _HOUR_DIR.search(path.parent.as_posix())
            if match and not path.name.startswith(".") and path.suffix in (".jsonl", ".gz"):
                files.append(InputFile(path, f"{match[1]}-{match[2]}:00"))
        return files

    def cdc_files(self, table: str) -> list[InputFile]:
        folder = self.base() / "cdc" / table
        return [InputFile(p, "") for p in sorted(folder.glob("*")) if _visible(p, (".json", ".jsonl", ".csv"))]

    def import_files(self, source: str) -> list[InputFile]:
        """CSV imports keyed by their import day: a date in the file name, else the file's mtime (UTC)."""
        folder = self.base() / "imports" / source
        return [InputFile(p, import_day(p)) for p in sorted(folder.glob("*.csv")) if _visible(p, (".csv",))]

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


def _visible(path: Path, suffixes: tuple[str, ...]) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix in suffixes


def import_day(path: Path) -> str:
    match = _DATE_IN_NAME.search(path.name)
    if match:
        return match[1]
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).date().isoformat()


def read_lines(path: Path) -> list[str]:
    """The text lines of a landing/CDC file (gzip allowed). Raises ValueError when unreadable."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8-sig")
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as exc:
        raise ValueError(f"{path.name}: cannot be read: {exc}") from exc
    return text.splitlines()


def day_of(partition_key: str) -> date:
    return date.fromisoformat(partition_key[:10])
