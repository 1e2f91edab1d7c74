"""The GPU benchmarks on CPU: every case moves its batch to the device (checked on the ``meta``
device, where a host tensor in an operation is an error), ``drsl bench gpu --tiny`` writes its
JSON, and the GPU smoke run's code path starts from calibrated weights."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from drsl.bench import cases, gpu_smoke
from drsl.cli import main

TINY = argparse.Namespace(
    backbone="light", light_width=1, crop=[32, 32], batch=1, eval_size=[32, 64], eval_images=1,
    eval_batch=0, workers=0, amp="none", channels_last="auto",
)


def test_steps_run_on_the_device_of_the_benchmark() -> None:
    # The batches are made on the host; on the meta device any operation mixing a host tensor with
    # the device's fails, and so does any value read to the host. (DRSL draws its samples with a
    # generator, which the meta device does not have: tests/test_host_syncs.py covers its step.)
    meta = torch.device("meta")
    batch = cases.make_batch(1, (32, 32))
    cases.FloorStep(cases.make_config("source_only", TINY), meta)(batch)
    for method in ("source_only", "cbst"):
        trainer = cases.make_trainer(method, TINY, meta)
        logs = trainer.step({"source": batch["source"]} if method == "source_only" else batch)
        assert all(v.device == meta for v in logs.values() if isinstance(v, torch.Tensor))


def test_cases_come_from_the_packaged_gta5_configs() -> None:
    config = cases.make_config("drsl", TINY)
    assert config.name == "gta5_cityscapes_drsl" and config.model.freeze_bn
    assert config.adapt.drsl.grid_stride == 2 and config.adapt.pseudo_label.fusion == "agree"
    assert config.model.backbone == "light" and config.data.source_augment.crop_size == [32, 32]
    assert config.eval.resize == [16, 32]


def test_bench_gpu_tiny_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    assert main(["bench", "gpu", "--tiny", "--out", str(out), "--threads", "1"]) == 0
    result = json.loads(out.read_text())
    summary = result["summary"]
    assert set(summary["seconds_per_iteration"]) == {"floor", *cases.METHODS}
    assert all(v > 0 for v in summary["seconds_per_iteration"].values())
    assert summary["host_syncs_per_step"] == {name: 0 for name in ("floor", *cases.METHODS)}
    assert set(summary["ratio_to_plain_step"]) == set(cases.METHODS)
    assert set(summary["images_per_second"]) == {"forward", "evaluation", "pseudo_label"}
    assert result["config"]["amp"] == "bf16" and result["mode"] == "tiny"
    assert {"drsl/cbst", "evaluation/forward", "pseudo_label/forward"} <= set(result["ratios"])


def test_gpu_smoke_tiny_cpu_path(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    gpu_smoke.add_arguments(parser)
    args = parser.parse_args(["--tiny", "--device", "cpu", "--out", str(tmp_path)])
    assert gpu_smoke.run(args) == 0
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert result["iterations"] == 6 and result["amp"] == "bf16" and result["rounds"] == 3
    assert result["seconds_per_iteration_median"] > 0
    assert result["init"].startswith("random, BatchNorm statistics calibrated") and result["lr"] == gpu_smoke.RANDOM_LR
    assert (tmp_path / "calibrated_init.pt").is_file()
    assert (tmp_path / "run" / "checkpoints" / "latest.pt").is_file()
    assert (tmp_path / "run" / "pseudo_labels" / "round_2" / "manifest.json").is_file()
    losses = [json.loads(line).get("train/loss") for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(v) for v in losses if v is not None)


def test_flop_count_of_the_paper_network() -> None:
    from drsl.bench import flops

    parser = argparse.ArgumentParser()
    flops.add_arguments(parser)
    result = flops.count_flops(parser.parse_args(["--config", "gta5_cityscapes/drsl", "--backbone", "light"]))
    # Training = forward + backward (about 3 forwards); DRSL = CBST + a regulariser far smaller.
    assert 2.0 < result["train_image_flops"] / result["inference_image_flops"] < 3.2
    assert result["cbst_step_flops"] == 8 * result["train_image_flops"]
    assert 0 < result["regulariser_flops"] < 0.2 * result["cbst_step_flops"]
