"""Per-image rows written as they come: a CSV appended batch by batch, resumable after a kill.

A run writes its settings to ``<config>.json`` and, after every batch, that batch's rows to
``<rows>.csv`` and its unreadable files to ``<skipped>.csv`` (each append flushed and synced).
Started again on the same folder with the same settings, it reads back the complete rows (a torn
last line is cut off), keeps those of the chunks that were finished, and goes on with the rest:
a kill loses at most the batch in flight. Rows are keyed by the image's position in the data set
(``index``), so rows written by different processes (shards of one run) merge by that key.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from robustlens.data.files import SkippedFile
from robustlens.errors import ResumeError

__all__ = ["SKIPPED_COLUMNS", "RowLog", "read_rows", "write_rows"]

SKIPPED_COLUMNS = ["index", "file", "error"]


def _read_csv(path: Path, columns: list[str]) -> list[dict[str, str]]:
    """Complete rows of a CSV written by an earlier run; a torn last line is cut off the file."""
    if not path.is_file():
        return []
    text = path.read_text()
    keep_upto = text.rfind("\n") + 1  # anything after the last newline is a torn write
    lines = text[:keep_upto]
    if keep_upto != len(text):
        with path.open("r+") as fh:
            fh.truncate(keep_upto)
    reader = csv.DictReader(io.StringIO(lines))
    if reader.fieldnames is not None and list(reader.fieldnames) != columns:
        raise ResumeError(f"{path} has columns {reader.fieldnames}, expected {columns}")
    rows = []
    for row in reader:
        if None in row.values() or len(row) != len(columns):
            break
        rows.append(row)
    return rows


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]], *, append: bool) -> None:
    new = not append or not path.is_file() or path.stat().st_size == 0
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    if new:
        writer.writeheader()
    writer.writerows(rows)
    if not append:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(buf.getvalue())
        tmp.replace(path)
        return
    with path.open("a") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())


class RowLog:
    """The per-image rows of one run in ``folder`` (see the module docstring).

    Args:
        folder: where the files go (created).
        columns: the row CSV's columns; the first is ``"index"``.
        config: the run's settings; a folder holding another run's settings is refused.
        rows, config_name, skipped: file names of the rows, the settings and the skipped files.
        where: the caller's name, for messages.
        replace: start afresh over a run with other settings, instead of refusing it.
    """

    def __init__(
        self,
        folder: str | Path,
        columns: Sequence[str],
        config: dict[str, Any],
        *,
        rows: str = "samples.csv",
        config_name: str = "run.json",
        skipped: str = "skipped.csv",
        where: str = "evaluate",
        replace: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.columns = list(columns)
        self.rows_path = self.folder / rows
        self.config_path = self.folder / config_name
        self.skipped_path = self.folder / skipped
        self.where = where
        config = json.loads(json.dumps(config))  # as it reads back
        if self.config_path.is_file() and self.rows_path.is_file():
            previous = json.loads(self.config_path.read_text())
            if previous != config and replace:
                previous = config
                self.rows_path.unlink(missing_ok=True)
                self.skipped_path.unlink(missing_ok=True)
                self.config_path.write_text(json.dumps(config, indent=2))
            if previous != config:
                changed = sorted(
                    k for k in set(previous) | set(config) if previous.get(k) != config.get(k)
                )
                raise ResumeError(
                    f"{where}: {self.folder} holds a run with other settings ({previous}; "
                    f"differs in {', '.join(changed)}); use another 'out' folder or delete it "
                    "to start again"
                    + (
                        f", or resume with the run's batch size (--batch-size "
                        f"{previous['batch_size']})"
                        if changed == ["batch_size"]
                        else ""
                    )
                )
        else:
            self.rows_path.unlink(missing_ok=True)
            self.skipped_path.unlink(missing_ok=True)
            self.config_path.write_text(json.dumps(config, indent=2))

    def resume(
        self, n: int, batch_size: int | None
    ) -> tuple[list[dict[str, Any]], list[SkippedFile], Tensor]:
        """The rows and skipped files an earlier run finished, and the positions left to do.

        With ``batch_size``, only whole chunks ``[k B, (k + 1) B)`` count as finished (rows of
        a chunk cut by a kill are dropped and recomputed with the rest of their chunk, so every
        image is computed in the same batch as in an uninterrupted run); without, every row.
        """
        rows: list[dict[str, Any]] = list(_read_csv(self.rows_path, self.columns))
        skipped = [
            SkippedFile(index=int(r["index"]), path=r["file"], error=r["error"])
            for r in _read_csv(self.skipped_path, SKIPPED_COLUMNS)
        ]
        done = torch.zeros(n, dtype=torch.bool)
        for r in rows:
            done[int(r["index"])] = True
        for s in skipped:
            done[s.index] = True
        if batch_size is not None and n:
            chunk = torch.arange(n) // batch_size
            unfinished = torch.zeros(int(chunk[-1]) + 1, dtype=torch.bool)
            unfinished[chunk[~done]] = True
            keep = ~unfinished[chunk]
            if not bool(keep[done].all()):
                rows = [r for r in rows if bool(keep[int(r["index"])])]
                skipped = [s for s in skipped if bool(keep[s.index])]
                _write_csv(self.rows_path, self.columns, rows, append=False)
                _write_csv(
                    self.skipped_path,
                    SKIPPED_COLUMNS,
                    [{"index": s.index, "file": s.path, "error": s.error} for s in skipped],
                    append=False,
                )
                done = keep & done
        return rows, skipped, torch.nonzero(~done).flatten()

    def append(self, rows: list[dict[str, Any]], skipped: Sequence[SkippedFile] = ()) -> None:
        """Write one batch: its skipped files first, then its rows (the rows mark it done)."""
        if skipped:
            _write_csv(
                self.skipped_path,
                SKIPPED_COLUMNS,
                [{"index": s.index, "file": s.path, "error": s.error} for s in skipped],
                append=True,
            )
        if rows:
            _write_csv(self.rows_path, self.columns, rows, append=True)


def read_rows(path: Path, columns: list[str]) -> list[dict[str, str]]:
    """The complete rows of a row file (none if it does not exist)."""
    return _read_csv(path, columns)


def write_rows(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Replace ``path`` with ``rows`` (written to a temporary file, then renamed)."""
    _write_csv(path, columns, rows, append=False)
