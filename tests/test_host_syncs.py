"""The training step never waits for the device: no value read to the host, no data-dependent
shape, no bincount (counted on CPU by drsl.bench.syncs), for every method; logs are read only at
log lines."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from drsl.bench.syncs import count_syncs
from drsl.config import load_config
from drsl.configs import resolve_config_path
from drsl.engine.distributed import DistInfo
from drsl.engine.logging import RunLogger
from drsl.engine.trainer import Trainer
from drsl.training import build_module
from test_amp import make_batch


def test_counter_sees_what_would_synchronise() -> None:
    x = torch.arange(6.0)
    with count_syncs() as counter:
        x.sum().item()
        bool((x > 2).any())
        x[x > 2]
        torch.bincount(x.long())
        x.tolist()
        x.cumsum(0) * 2  # none of these
    assert dict(counter.counts) == {"read": 3, "shape": 1, "bincount": 1}


@pytest.mark.parametrize("method", ["source_only", "cbst", "drsl"])
def test_training_step_has_no_host_sync(method: str, tmp_path: Path) -> None:
    config = load_config(resolve_config_path(f"gta5_cityscapes/{method}"), [
        "init_checkpoint=null", "model.pretrained=null", f"work_dir={tmp_path}", "model.backbone=light", "model.light_width=1",
        "train.amp=bf16",
    ])
    torch.manual_seed(0)
    trainer = Trainer(config, build_module(config), DistInfo(), RunLogger(tmp_path, enabled=False))
    batch = make_batch(0)
    if method == "source_only":
        batch = {"source": batch["source"]}
    first = trainer.step(batch)
    with count_syncs() as counter:
        second = trainer.step(batch)
    assert counter.total == 0, counter.calls
    means = trainer.window.read()  # a log line: the values come to the host only here
    assert set(means) == set(second)
    key = "loss_source" if method == "source_only" else "loss"
    assert means[key] == pytest.approx((float(first[key]) + float(second[key])) / 2, rel=1e-6)
