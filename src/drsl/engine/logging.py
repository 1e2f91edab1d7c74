"""Run logging: TensorBoard scalars and images, a JSON-lines metrics file, a text log
(``train.log``: the lines the console shows and one per logged iteration), optional experiment
trackers (:mod:`drsl.engine.trackers`), and progress: a bar on a terminal, else a one-line status
with the ETA every ``STATUS_SECONDS`` (log files, CI, ``nohup``).

Only the main rank writes; other ranks get a logger whose methods do nothing.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
from tqdm import tqdm

from drsl.fileio import atomic_write_text

if TYPE_CHECKING:
    from drsl.engine.trackers import Tracker

log = logging.getLogger("drsl")
#: Lines for the run's text log only, never the console: per-iteration records, echoed output.
text_only = logging.getLogger("drsl.text_log")
text_only.propagate = False
text_only.setLevel(logging.INFO)

#: The run's text log in its folder.
TEXT_LOG = "train.log"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"

#: Seconds between two status lines when stderr is not a terminal.
STATUS_SECONDS = 60.0
STATUS_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%), {elapsed} elapsed, ETA {remaining}, {rate_fmt}{postfix}"
OPEN_STATUS_FORMAT = "{desc}: {n_fmt} done, {elapsed} elapsed, {rate_fmt}{postfix}"


class TextLog(logging.Handler):
    """The records of the ``drsl`` loggers as lines of a run's ``train.log``.

    Lines come from the moment the run starts; they are held in memory until :meth:`open` (the run
    owns its folder: a bad input never touches it), then appended to the file, line by line (a
    resumed run continues its file).
    """

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(TEXT_FORMAT))
        self.pending: list[str] = []
        self.file: TextIO | None = None
        self.loggers = (log, text_only)
        # Without any handler configured, Python shows warnings through its last resort; one on
        # the drsl logger would silence that, so the last resort is attached beside it.
        self.last_resort = logging.lastResort if not logging.getLogger().handlers else None
        for logger in self.loggers:
            logger.addHandler(self)
        if self.last_resort is not None:
            log.addHandler(self.last_resort)

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        if self.file is None:
            self.pending.append(line)
            return
        self.file.write(line + "\n")
        self.file.flush()

    def open(self, path: Path) -> None:
        """Append the lines so far, and every later one, to ``path``."""
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open until close()
        for line in self.pending:
            self.file.write(line + "\n")
        self.file.flush()
        self.pending = []

    def close(self) -> None:
        """Detach from the loggers and close the file."""
        for logger in self.loggers:
            logger.removeHandler(self)
        if self.last_resort is not None:
            log.removeHandler(self.last_resort)
        if self.file is not None:
            self.file.close()
            self.file = None
        super().close()


def echo(text: str, stream: TextIO | None = None) -> None:
    """Write ``text`` to ``stream`` (default: stdout) and each of its lines to the run's text log."""
    print(text, file=stream or sys.stdout, flush=True)
    for line in text.splitlines():
        text_only.info(line)


class StatusLines:
    """A file for tqdm that turns each refresh of the bar into one line on stderr (and in the text log)."""

    def write(self, text: str) -> None:
        line = text.strip("\r\n ")
        if line:
            echo(line, sys.stderr)

    def flush(self) -> None:
        sys.stderr.flush()


def progress(iterable: Any = None, enabled: bool = True, **kwargs: Any) -> tqdm:
    """Progress of a loop: a tqdm bar on a terminal; otherwise, for loops that last longer than
    ``STATUS_SECONDS``, a status line (done, total, elapsed, ETA) every ``STATUS_SECONDS`` and one
    when the loop ends; nothing when not ``enabled``."""
    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if sys.stderr.isatty():
        return tqdm(iterable, dynamic_ncols=True, **kwargs)
    known = kwargs.get("total") is not None or hasattr(iterable, "__len__")
    kwargs.setdefault("desc", "progress")
    return tqdm(
        iterable, file=StatusLines(), delay=STATUS_SECONDS, mininterval=STATUS_SECONDS, miniters=1,
        bar_format=STATUS_FORMAT if known else OPEN_STATUS_FORMAT, **kwargs,
    )


class RunLogger:
    """Writes ``tb/`` event files and ``metrics.jsonl`` in the run directory, and passes scalars
    and images on to ``trackers`` (main rank only). ``name`` (the run's) heads its progress."""

    def __init__(
        self, work_dir: str | Path, enabled: bool = True, progress: bool = True, name: str = "",
        text_log: bool = False,
    ) -> None:
        self.enabled = enabled
        self.work_dir = Path(work_dir)
        self.name = name
        #: Collects the run's lines for train.log when ``text_log`` (written from :meth:`open_text_log`).
        self.text_log = TextLog() if text_log and enabled else None
        self.trackers: Sequence[Tracker] = ()
        self._writer: Any = None
        self._progress: tqdm | None = None
        self._show_progress = progress and enabled
        self._records: int | None = None

    @property
    def path(self) -> Path:
        """The metrics.jsonl file."""
        return self.work_dir / "metrics.jsonl"

    def _read(self) -> list[dict[str, Any]]:
        """The complete records of metrics.jsonl; a torn last line (a killed write) is dropped."""
        if not self.path.is_file():
            return []
        records = []
        for number, line in enumerate(self.path.read_text(errors="replace").splitlines(), 1):
            try:
                record = json.loads(line)
            except ValueError:
                log.warning("%s: line %d is not a complete record (a killed write?); dropped", self.path, number)
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
        return records

    @property
    def records(self) -> int:
        """How many records metrics.jsonl holds (stored in checkpoints, to cut back to on resume)."""
        if self._records is None:
            self._records = len(self._read()) if self.enabled else 0
        return self._records

    @property
    def writer(self) -> Any:
        """The TensorBoard SummaryWriter, created on first use."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.work_dir / "tb"))
        return self._writer

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        """Log scalars to TensorBoard and append them to metrics.jsonl."""
        if not self.enabled:
            return
        for key, value in values.items():
            self.writer.add_scalar(f"{prefix}{key}", value, step)
        record = {"step": step, **{f"{prefix}{k}": v for k, v in values.items()}}
        for tracker in self.trackers:
            tracker.scalars(step, {k: v for k, v in record.items() if k != "step"})
        count = self.records
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        self._records = count + 1
        text_only.info("%s iteration %d %s %s", self.name, step, prefix.rstrip("/") or "scalars",
                       ", ".join(f"{k}={v:.4g}" for k, v in values.items()))

    def open_text_log(self) -> None:
        """Start writing train.log in the run directory (appending): the lines so far, then each new one."""
        if self.text_log is not None:
            self.text_log.open(self.work_dir / TEXT_LOG)

    def truncate(self, records: int | None, step: int) -> None:
        """Cut metrics.jsonl back to what it held when a checkpoint was saved: its first
        ``records`` records (when known; else those up to ``step``). The rest is recomputed after
        a resume, so no record appears twice; a torn last line is dropped too."""
        if not self.enabled or not self.path.is_file():
            return
        kept = self._read()
        kept = kept[:records] if records is not None else [r for r in kept if r["step"] <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._records = len(kept)

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """Log an HxWx3 uint8 image."""
        if self.enabled:
            self.writer.add_image(tag, image, step, dataformats="HWC")
            for tracker in self.trackers:
                tracker.image(step, tag, image)

    def start_progress(self, total: int, initial: int, description: str) -> None:
        """Show a progress bar from ``initial`` to ``total`` iterations."""
        if self._show_progress:
            self.close_progress()
            desc = f"{self.name} {description}" if self.name else description
            self._progress = progress(total=total, initial=initial, desc=desc)

    def advance(self, postfix: dict[str, float] | None = None) -> None:
        """Move the progress bar one step; the loss terms of ``postfix`` are shown with it."""
        if self._progress is not None:
            self._progress.update(1)
            losses = {k: f"{v:.3g}" for k, v in (postfix or {}).items() if k.split("/")[-1].startswith("loss")}
            if losses:
                self._progress.set_postfix(losses, refresh=False)

    def close_progress(self) -> None:
        """Close the progress bar."""
        if self._progress is not None:
            self._progress.close()
            self._progress = None

    def close(self) -> None:
        """Flush and close everything."""
        self.close_progress()
        if self.text_log is not None:
            self.text_log.close()
            self.text_log = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for tracker in self.trackers:
            tracker.close()
        self.trackers = ()
