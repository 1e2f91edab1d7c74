"""Mixed precision, channels-last and gradient accumulation in the trainer (CPU).

On CPU, bf16 autocast works, and so does fp16 with a GradScaler (torch >= 2.3); on CUDA the same
code runs unchanged. Gradient accumulation is compared with BatchNorm frozen and data without
ignored pixels: BatchNorm statistics over a micro-batch are not those of the whole batch, and the
loss is a mean per micro-batch, which equals the whole-batch mean only when the micro-batches hold
equally many valid pixels.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from drsl.bench.pipeline import write_cityscapes_like, write_gta5_like
from drsl.config import Config, load_config
from drsl.configs import resolve_config_path
from drsl.engine.distributed import DistInfo
from drsl.engine.logging import RunLogger
from drsl.engine.trainer import Trainer
from drsl.training import build_module, run_training

CROP = (32, 32)


def drsl_config(work: Path, amp: str = "none", *extra: str) -> Config:
    return load_config(resolve_config_path("synth/drsl"), [
        "init_checkpoint=null", f"work_dir={work}", f"train.amp={amp}", "model.light_width=1",
        "optim.lr=0.01", "optim.warmup_iters=0", "train.iterations=100", *extra,
    ])


def make_trainer(config: Config) -> Trainer:
    torch.manual_seed(config.seed)
    return Trainer(config, build_module(config), DistInfo(), RunLogger(config.work_dir, enabled=False))


def make_batch(seed: int, batch: int = 2) -> dict:
    rng = np.random.default_rng(seed)

    def labels(ignore: float) -> torch.Tensor:
        coarse = rng.integers(0, 19, (batch, CROP[0] // 8, CROP[1] // 8))
        coarse[rng.random(coarse.shape) < ignore] = 255
        return torch.from_numpy(np.kron(coarse, np.ones((8, 8), dtype=np.int64)))

    def images() -> torch.Tensor:
        return torch.from_numpy(rng.integers(0, 256, (batch, 3, *CROP), dtype=np.uint8))

    return {"source": {"image": images(), "label": labels(0.0)}, "target": {"image": images(), "label": labels(0.3)}}


def parameters(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.module.named_parameters()}


@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_trains_on_cpu(amp: str, dtype: torch.dtype, tmp_path: Path) -> None:
    trainer = make_trainer(drsl_config(tmp_path, amp))
    seen: list[torch.dtype] = []
    trainer.module.segmentor.decoder.register_forward_hook(lambda m, i, o: seen.append(o[0].dtype))
    before = parameters(trainer)
    for step in range(3):
        logs = trainer.step(make_batch(step))
        assert all(math.isfinite(v) for v in logs.values()), logs
        assert logs["drsl/labelled_pixels"] > 0
    assert seen and set(seen) == {dtype}, "the forward did not run under autocast"
    after = parameters(trainer)
    assert all(v.dtype == torch.float32 for v in after.values()), "master weights must stay fp32"
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(moved) == len(before), f"unchanged: {sorted(set(before) - set(moved))[:5]}"
    assert trainer.scaler.is_enabled() == (amp == "fp16")


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_checkpoint_resume_is_exact(amp: str, tmp_path: Path) -> None:
    config = drsl_config(tmp_path, amp)
    reference = make_trainer(config)
    for step in range(2):
        reference.step(make_batch(step))
    reference.save()
    for step in range(2, 4):
        reference.step(make_batch(step))
    resumed = make_trainer(config)
    resumed.resume(tmp_path / "checkpoints" / "latest.pt")
    assert resumed.iteration == 2
    if amp == "fp16":
        state = resumed.scaler.state_dict()
        assert state["_growth_tracker"] == 2 and state["scale"] == reference.scaler.get_scale()
    for step in range(2, 4):
        resumed.step(make_batch(step))
    assert resumed.scaler.state_dict() == reference.scaler.state_dict()
    a, b = parameters(reference), parameters(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_switching_amp_mode_on_resume(tmp_path: Path) -> None:
    # A bf16 checkpoint holds an empty (disabled) scaler state; an fp16 run starts a fresh scale.
    bf16 = make_trainer(drsl_config(tmp_path, "bf16"))
    bf16.step(make_batch(0))
    bf16.save()
    fp16 = make_trainer(drsl_config(tmp_path, "fp16"))
    fp16.resume(tmp_path / "checkpoints" / "latest.pt")
    assert fp16.scaler.get_scale() == torch.amp.GradScaler("cpu").get_scale()
    fp16.step(make_batch(1))
    back = make_trainer(drsl_config(tmp_path, "none"))
    back.resume(tmp_path / "checkpoints" / "latest.pt")  # fp16 scaler state into a disabled scaler


def test_channels_last_matches_contiguous(tmp_path: Path) -> None:
    plain = make_trainer(drsl_config(tmp_path / "a"))
    nhwc = make_trainer(drsl_config(tmp_path / "b", "none", "train.channels_last=true"))
    conv = nhwc.module.segmentor.encoder.stem[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    for step in range(2):
        la, lb = plain.step(make_batch(step)), nhwc.step(make_batch(step))
        assert math.isfinite(lb["loss"]) and abs(la["loss"] - lb["loss"]) < 1e-4
    a, b = parameters(plain), parameters(nhwc)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4


@pytest.fixture(scope="module")
def valid_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("accum_data")
    write_gta5_like(root / "src", 8, (40, 48), seed=3)
    write_cityscapes_like(root / "tgt", "train", 4, (40, 48), seed=4)
    return root


def accumulation_run(root: Path, work: Path, grad_accum: int, *extra: str) -> dict[str, torch.Tensor]:
    config = load_config(resolve_config_path("synth/source_only"), [
        f"data.source.root={root}/src", f"data.target.root={root}/tgt", "data.val=null",
        "data.batch_size=4", "data.num_workers=0", "train.iterations=3", "train.checkpoint_every=0",
        "model.light_width=1", "optim.lr=0.05", "optim.warmup_iters=0", f"train.grad_accum={grad_accum}",
        "data.source_augment.crop_size=[32,32]", "data.source_augment.scale_range=[1.0,1.2]",
        f"work_dir={work}", *extra,
    ])
    run_training(config, device="cpu")
    state = torch.load(work / "checkpoints" / "latest.pt", weights_only=True)["model"]
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a if a[k].numel())


def test_gradient_accumulation_equals_full_batch(valid_data: Path, tmp_path: Path) -> None:
    full = accumulation_run(valid_data, tmp_path / "full", 1, "model.freeze_bn=true")
    accumulated = accumulation_run(valid_data, tmp_path / "accum", 2, "model.freeze_bn=true")
    init = accumulation_run(valid_data, tmp_path / "init", 1, "model.freeze_bn=true", "train.iterations=0")
    assert max_difference(full, init) > 5e-3  # the weights moved: the comparison means something
    assert max_difference(full, accumulated) <= 1e-5
    # With BatchNorm in training mode, statistics over 2 images are not those over 4.
    full_bn = accumulation_run(valid_data, tmp_path / "full_bn", 1)
    accumulated_bn = accumulation_run(valid_data, tmp_path / "accum_bn", 2)
    assert max_difference(full_bn, accumulated_bn) > 1e-4
