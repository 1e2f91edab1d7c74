"""The DAFormer network trained end to end with the packaged DAFormer configs on the generated
benchmark: MiT-B0 from scratch and, from a SegFormer-layout file, on the mixing host with and
without DRSL (fast); MiT-B5 from ImageNet files in both published layouts, source-only, mix and
DRSL-mix (slow: ``-m slow``). Tiny images; the configs' AdamW, schedule and decoder as shipped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from drsl.config import load_config
from drsl.configs import resolve_config_path
from drsl.data.synth import generate_benchmark
from drsl.training import read_eval, run_training
from fixtures import run_weights
from test_mit import B0, hugging_face_file, segformer_file

MIT_B5 = ((64, 128, 320, 512), (3, 6, 40, 3))


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_benchmark(root, seed=0, num_source=4, num_target_train=4, num_target_val=2,
                       source_size=(96, 64), target_size=(96, 64))
    return root


@pytest.fixture(scope="module")
def mit_b0_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "mit_b0.pth"
    torch.save({k: 0.1 * v for k, v in segformer_file(*B0)[0].items()}, path)
    return path


def overrides(root: Path, work: Path, backbone: str, iterations: int = 2) -> list[str]:
    return [
        f"data.source.root={root}/source", "data.source.resize=null",
        f"data.target.root={root}/target", "data.target.resize=null",
        f"data.val.root={root}/target", "eval.resize=null",
        "data.source_augment.crop_size=[32,32]", "data.target_augment.crop_size=[32,32]",
        "data.num_workers=0", f"model.backbone={backbone}", "model.pretrained=null", f"train.iterations={iterations}",
        "train.amp=none", "train.log_every=1", "train.eval_every=0", "train.checkpoint_every=0",
        "optim.warmup_iters=1", f"work_dir={work}",
    ]


def test_mit_b0_daformer_trains_from_scratch_on_the_generated_benchmark(synth_root: Path, tmp_path: Path) -> None:
    config = load_config(
        resolve_config_path("gta5_cityscapes/daformer_source_only"),
        overrides(synth_root, tmp_path, "mit_b0") + ["data.eval_subsets=[19,16,13]"],
    )
    torch.manual_seed(config.seed)
    summary = run_training(config)
    assert summary["iteration"] == 2
    assert set(read_eval(tmp_path)["miou"]) == {"19", "16", "13"}
    trained = run_weights(tmp_path)
    assert trained["segmentor.encoder.stages.3.blocks.1.mlp.dwconv.weight"].shape == (1024, 1, 3, 3)
    assert trained["segmentor.decoder.fuse.bottleneck.1.running_mean"].abs().sum() > 0  # BN trained
    assert "train/loss_source" in (tmp_path / "metrics.jsonl").read_text()


@pytest.mark.parametrize("method", ["daformer_mix", "daformer_drsl_mix"])
def test_mixing_hosts_train_the_daformer_network(method: str, synth_root: Path, mit_b0_file: Path, tmp_path: Path) -> None:
    config = load_config(
        resolve_config_path(f"gta5_cityscapes/{method}"),
        overrides(synth_root, tmp_path, "mit_b0") + [f"model.pretrained={mit_b0_file}", "adapt.drsl.warmup_iters=0"],
    )
    assert config.adapt.host == "mix" and config.adapt.feature_distance.weight > 0
    summary = run_training(config)
    assert summary["iteration"] == 2 and "19" in read_eval(tmp_path)["miou"]
    logged = (tmp_path / "metrics.jsonl").read_text()
    assert "train/loss_target" in logged
    assert ("train/drsl/sma" in logged) == (method == "daformer_drsl_mix")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "layout"),
    [("daformer_source_only", "segformer"), ("daformer_mix", "hugging_face"), ("daformer_drsl_mix", "segformer")],
)
def test_mit_b5_daformer_starts_from_imagenet_files_trains_and_evaluates(
    method: str, layout: str, synth_root: Path, tmp_path: Path
) -> None:
    segformer, where = segformer_file(*MIT_B5)
    segformer = {k: 0.1 * v for k, v in segformer.items()}
    if layout == "segformer":
        path = tmp_path / "mit_b5.pth"
        torch.save(segformer, path)
    else:
        path = tmp_path / "model.safetensors"
        save_file(hugging_face_file(segformer), str(path))
    config = load_config(
        resolve_config_path(f"gta5_cityscapes/{method}"),
        overrides(synth_root, tmp_path / "run", "mit_b5")
        + [f"model.pretrained={path}", "optim.warmup_iters=1500"],
    )
    summary = run_training(config)
    assert summary["iteration"] == 2 and "19" in read_eval(tmp_path / "run")["miou"]
    checkpoint = run_weights(tmp_path / "run")
    # After two AdamW steps at a warm-up LR below 1e-7 the encoder still holds the file's tensors.
    for ours, name in list(where.items())[::50]:
        torch.testing.assert_close(checkpoint[f"segmentor.encoder.{ours}"], segformer[name], rtol=0, atol=1e-6)


def test_drsl_regularises_the_daformer_fused_features(synth_root: Path, tmp_path: Path) -> None:
    config = load_config(
        resolve_config_path("gta5_cityscapes/daformer_source_only"),
        overrides(synth_root, tmp_path, "mit_b0") + ["adapt.method=drsl", "adapt.host=online", "adapt.drsl.grid_stride=2"],
    )
    summary = run_training(config)
    assert summary["iteration"] == 2
    weights = run_weights(tmp_path)
    assert weights["regularizer.head.net.0.weight"].shape[1] == 256  # the decoder's 256-channel fusion
    assert "train/drsl/sma" in (tmp_path / "metrics.jsonl").read_text()
