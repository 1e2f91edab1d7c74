"""Writing RGB frames as an MP4 video (OpenCV, MPEG-4 part 2), atomically: the file appears
under its name only once it is complete."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np


class VideoWriter:
    """Collects frames of one size into ``path`` (.mp4); use as a context manager."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = fps
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        """Append one HxWx3 uint8 RGB frame."""
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            height, width = frame.shape[:2]
            self._writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self._writer.isOpened():
                raise OSError(f"OpenCV cannot write MP4 video to {self.partial}")
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if self._writer is not None:
            self._writer.release()
            if exc_type is None:
                os.replace(self.partial, self.path)
            else:
                self.partial.unlink(missing_ok=True)
