"""Sample predictions for the report: a few validation images, their ground truth and each
run's prediction. Runs that share a validation set are shown side by side on the same images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drsl.data.classes import ClassSet
from drsl.viz.runs import RunData

#: What can go wrong reaching a run's checkpoint or val set; the report notes it and goes on.
SAMPLE_ERRORS = (ValueError, OSError, RuntimeError, KeyError)


@dataclass
class SampleRow:
    """One validation image, its ground truth and the prediction of each run (by run label)."""

    name: str
    image: np.ndarray
    truth: np.ndarray
    predictions: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class SampleGroup:
    """Rows of one validation set read with one class set (``title`` describes it)."""

    title: str
    rows: list[SampleRow]
    classes: ClassSet


def spread(length: int, count: int) -> list[int]:
    """Up to ``count`` distinct indices spread evenly over ``range(length)``."""
    return sorted({int(i) for i in np.linspace(0, length - 1, min(count, length)).round()}) if length else []


def sample_predictions(
    runs: dict[str, RunData], count: int, device: str = "auto"
) -> tuple[list[SampleGroup], dict[str, str]]:
    """Sample groups (every row holds a prediction of every run of its group) and, per run label
    that has no predictions, the reason why."""
    from drsl.api import load_model
    from drsl.data.registry import build_dataset

    groups: dict[tuple[str, ...], SampleGroup] = {}
    missing: dict[str, str] = {}
    for label, run in runs.items():
        if run.checkpoint is None:
            missing[label] = "no checkpoints/latest.pt"
            continue
        try:
            model = load_model(run.checkpoint, device=device)
            val = model.config.data.val
            if val is None:
                missing[label] = "its config has no data.val"
                continue
            key = (val.layout, str(Path(val.root).resolve()), val.split, str(val.list_file), *model.classes.names)
            if key not in groups:
                dataset = build_dataset(val, model.classes)
                rows = [SampleRow(dataset.samples[i].name, *dataset.load(i)) for i in spread(len(dataset), count)]
                title = f"{val.layout} {val.split} set at {val.root} ({model.classes.name})"
                groups[key] = SampleGroup(title, rows, model.classes)
            predictions = [model.segment(row.image) for row in groups[key].rows]
        except SAMPLE_ERRORS as exc:
            missing[label] = f"validation set or checkpoint not usable ({exc})"
            continue
        for row, prediction in zip(groups[key].rows, predictions):
            row.predictions[label] = prediction
    return [group for group in groups.values() if group.rows and group.rows[0].predictions], missing
