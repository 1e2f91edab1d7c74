"""Optional experiment trackers behind :class:`drsl.engine.logging.RunLogger`: Weights & Biases
when installed and asked for (``train.trackers: [wandb]``). Never a dependency: asking for a
tracker that is not installed is one ConfigError before any work."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from drsl.config import Config, ConfigError, config_to_dict

#: Tracker name -> the Python package it needs.
PACKAGES = {"wandb": "wandb"}


class Tracker(Protocol):
    """What RunLogger passes on: scalars and images by step, and the end of the run."""

    def scalars(self, step: int, values: dict[str, float]) -> None: ...

    def image(self, step: int, tag: str, image: np.ndarray) -> None: ...

    def close(self) -> None: ...


def _package(name: str) -> Any:
    try:
        return importlib.import_module(PACKAGES[name])
    except ImportError:
        raise ConfigError(
            f"train.trackers asks for {name}, but the {PACKAGES[name]} package is not installed "
            f"(pip install {PACKAGES[name]}, or drop it from train.trackers)"
        ) from None


def check_trackers(config: Config) -> None:
    """ConfigError when a tracker ``config`` asks for cannot be imported."""
    for name in config.train.trackers:
        _package(name)


class WandbTracker:
    """A Weights & Biases run named after the drsl run, in its folder; the project is
    ``$WANDB_PROJECT`` (default "drsl"), as W&B's own settings and login decide the rest."""

    def __init__(self, config: Config) -> None:
        self.wandb = _package("wandb")
        self.run = self.wandb.init(
            project=os.environ.get("WANDB_PROJECT", "drsl"), name=config.name, dir=str(Path(config.work_dir)),
            config=config_to_dict(config),
        )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        self.run.log({tag: self.wandb.Image(image)}, step=step)

    def close(self) -> None:
        self.run.finish()


def build_trackers(config: Config) -> list[Tracker]:
    """The trackers ``config.train.trackers`` asks for, started."""
    return [WandbTracker(config) for name in config.train.trackers if name == "wandb"]
