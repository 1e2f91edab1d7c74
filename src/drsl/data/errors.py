"""The one exception raised for broken data: it always names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A dataset file (or folder) that cannot be used, with the path and the reason.

    ``str(error)`` reads ``"<path>: <problem>"``; ``error.path`` and ``error.problem`` hold the
    parts. Picklable, so it crosses DataLoader worker processes intact.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem

    def __reduce__(self) -> tuple[type[DataError], tuple[str, str]]:
        return type(self), (self.path, self.problem)


class LabelValueError(DataError):
    """A label file holding raw values outside the dataset's label space (``values``: up to 10)."""

    def __init__(self, path: str | Path, values: list[int], expected: str) -> None:
        super().__init__(path, f"unknown label values {values} (expected {expected})")
        self.values = values
        self.expected = expected

    def __reduce__(  # type: ignore[override]
        self,
    ) -> tuple[type[LabelValueError], tuple[str, list[int], str]]:
        return type(self), (self.path, self.values, self.expected)
