"""Reading video files frame by frame (OpenCV's FFmpeg backend), in batches of RGB frames."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from drsl.data.errors import DataError
from drsl.fileio import not_a_file

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def is_video(path: str | Path) -> bool:
    """Whether ``path`` names a video file (by its extension)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


class VideoReader:
    """The frames of one video file as HxWx3 uint8 RGB arrays; DataError when it cannot be read."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if (reason := not_a_file(self.path, "video file")) is not None:
            raise DataError(self.path, reason)
        self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            raise DataError(self.path, "cannot open the video (unknown format or codec)")
        #: Frames per second (25 when the file does not say).
        self.fps = self._capture.get(cv2.CAP_PROP_FPS) or 25.0
        #: Frame count from the container header (None when unknown).
        self.frame_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None

    def batches(self, size: int) -> Iterator[list[np.ndarray]]:
        """Consecutive frames in lists of up to ``size``, in order."""
        batch: list[np.ndarray] = []
        while True:
            ok, frame = self._capture.read()
            if not ok:
                break
            batch.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def close(self) -> None:
        """Release the file."""
        self._capture.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
