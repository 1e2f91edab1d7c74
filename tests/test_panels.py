"""Training panels: the labelled grid, make_panel, and PanelWriter on an untrained DRSL module."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from drsl.config import load_config
from drsl.configs import resolve_config_path
from drsl.training import build_module
from drsl.viz.grid import Tile, labelled_grid
from fixtures import CITYSCAPES19
from drsl.viz.panels import PanelWriter, make_panel

SIZE = (40, 56)


class RecordingLogger:
    """Stands in for RunLogger: keeps the logged images."""

    enabled = True

    def __init__(self) -> None:
        self.images: list[tuple[int, str, np.ndarray]] = []

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        self.images.append((step, tag, image))


def sample(seed: int, labelled: bool) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(rng.integers(0, 256, (3, *SIZE), dtype=np.uint8))
    label = torch.from_numpy(rng.integers(0, 19, SIZE)) if labelled else torch.full(SIZE, 255)
    return {"image": image, "label": label}


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "source_image": rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8),
        "source_label": rng.integers(0, 19, SIZE).astype(np.uint8),
        "source_pred": rng.integers(0, 19, SIZE).astype(np.uint8),
        "target_image": rng.integers(0, 256, (30, 60, 3), dtype=np.uint8),
        "target_pseudo_label": np.where(rng.random((30, 60)) < 0.5, 255, 3).astype(np.uint8),
        "target_confidence": rng.random((30, 60)).astype(np.float32),
    }


def test_make_panel_is_an_rgb_grid() -> None:
    panel = make_panel(**arrays(), classes=CITYSCAPES19)
    assert panel.dtype == np.uint8 and panel.ndim == 3 and panel.shape[2] == 3
    with_modes = make_panel(**arrays(), classes=CITYSCAPES19, target_mode_map=np.zeros((30, 60), dtype=np.uint8))
    assert with_modes.shape[0] == panel.shape[0] and with_modes.shape[1] > panel.shape[1]


def test_labelled_grid_scales_tiles_to_one_height() -> None:
    small = Tile("small", np.zeros((10, 20, 3), np.uint8))
    tall = Tile("tall", np.full((200, 100, 3), 255, np.uint8), smooth=True)
    grid = labelled_grid([[small, tall], [small]])
    assert grid.shape[0] > 2 * 200 and grid.dtype == np.uint8
    with pytest.raises(ValueError):
        labelled_grid([])


@pytest.mark.parametrize("labelled_target", [True, False])
def test_panel_writer_logs_every_n_without_touching_training(labelled_target: bool) -> None:
    config = load_config(resolve_config_path("synth/drsl"), ["model.light_width=1", "init_checkpoint=null"])
    module = build_module(config).train()
    before = {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
    rng_before = torch.get_rng_state()
    logger = RecordingLogger()
    writer = PanelWriter(logger, every=2, classes=CITYSCAPES19)  # type: ignore[arg-type]
    for iteration in (1, 2, 3, 4):
        writer.maybe_log(iteration, module, sample(0, True), sample(1, labelled_target))
    assert [step for step, _, _ in logger.images] == [2, 4]
    image = logger.images[0][2]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert module.training and torch.equal(torch.get_rng_state(), rng_before)
    after = module.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in before.items())
    disabled = PanelWriter(logger, every=0, classes=CITYSCAPES19)  # type: ignore[arg-type]
    assert disabled.maybe_log(2, module, sample(0, True), sample(1, True)) is False
