"""Run logging: TensorBoard scalars and images, a JSON-lines metrics file, a progress bar.

Only the main rank writes; other ranks get a logger whose methods do nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from drsl.fileio import atomic_write_text

log = logging.getLogger("drsl")


def progress(iterable: Any = None, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar shown only when ``enabled`` and stderr is a terminal (quiet in CI and logs)."""
    return tqdm(iterable, disable=None if enabled else True, dynamic_ncols=True, **kwargs)


class RunLogger:
    """Writes ``tb/`` event files and ``metrics.jsonl`` in the run directory (main rank only)."""

    def __init__(self, work_dir: str | Path, enabled: bool = True, progress: bool = True) -> None:
        self.enabled = enabled
        self.work_dir = Path(work_dir)
        self._writer: Any = None
        self._progress: tqdm | None = None
        self._show_progress = progress and enabled

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
        with open(self.work_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop metrics.jsonl records past ``step`` (they are recomputed after a resume)."""
        path = self.work_dir / "metrics.jsonl"
        if not self.enabled or not path.is_file():
            return
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """Log an HxWx3 uint8 image."""
        if self.enabled:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def start_progress(self, total: int, initial: int, description: str) -> None:
        """Show a progress bar from ``initial`` to ``total`` iterations."""
        if self._show_progress:
            self.close_progress()
            self._progress = progress(total=total, initial=initial, desc=description)

    def advance(self, postfix: dict[str, float] | None = None) -> None:
        """Move the progress bar one step."""
        if self._progress is not None:
            self._progress.update(1)
            if postfix:
                self._progress.set_postfix({k: f"{v:.3g}" for k, v in postfix.items()}, refresh=False)

    def close_progress(self) -> None:
        """Close the progress bar."""
        if self._progress is not None:
            self._progress.close()
            self._progress = None

    def close(self) -> None:
        """Flush and close everything."""
        self.close_progress()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
