"""``model.backbone: timm/NAME``: timm encoders of two families (a CNN and a transformer) build,
load a weights file saved from the timm model, train and evaluate on the generated benchmark."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from drsl.config import ConfigError, load_config
from drsl.configs import resolve_config_path
from drsl.errors import WeightsError
from drsl.models.interfaces import IMAGENET_NORM, InputNorm
from drsl.models.registry import build_encoder
from drsl.models.segmentor import build_model
from drsl.models.timm_encoder import TimmEncoder
from drsl.training import read_eval, run_training
from fixtures import run_weights
from test_daformer_training import synth_root  # noqa: F401 - the tiny generated benchmark


def timm_file(name: str, folder: Path) -> Path:
    """A weights file as saved from a timm model (random weights: nothing is downloaded)."""
    path = folder / f"{name}.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model(name, pretrained=False).state_dict(), path)
    return path


def overrides(root: Path, work: Path, *extra: str) -> list[str]:
    return [
        f"data.source.root={root}/source", f"data.target.root={root}/target", f"data.val.root={root}/target",
        "data.source_augment.crop_size=[32,32]", "data.target_augment.crop_size=[32,32]",
        "data.batch_size=2", "data.num_workers=0", "train.iterations=2", "train.log_every=1",
        "train.checkpoint_every=0", "train.panel_every=0", "optim.warmup_iters=0", f"work_dir={work}", *extra,
    ]


@pytest.mark.parametrize("name, stride, decoder, stem", [
    ("resnet18", 8, "deeplabv3plus", "conv1.weight"),                 # a CNN, dilated to stride 8
    ("pvt_v2_b0", 32, "daformer", "patch_embed.proj.weight"),          # a transformer, at its own stride
])
def test_timm_encoders_train_on_the_generated_benchmark(
    name: str, stride: int, decoder: str, stem: str, synth_root: Path, tmp_path: Path  # noqa: F811 (the fixture)
) -> None:
    weights = timm_file(name, tmp_path)
    config = load_config(resolve_config_path("synth/source_only"), overrides(
        synth_root, tmp_path / "run", f"model.backbone=timm/{name}", f"model.output_stride={stride}",
        f"model.decoder={decoder}", f"model.pretrained={weights}", "model.frozen_stages=1",
    ))
    summary = run_training(config)
    assert summary["iteration"] == 2 and set(read_eval(tmp_path / "run")["miou"]) == {"19", "16", "13"}
    trained, loaded = run_weights(tmp_path / "run"), torch.load(weights, weights_only=True)
    torch.testing.assert_close(trained[f"segmentor.encoder.body.{stem}"], loaded[stem], rtol=0, atol=0)  # frozen stem
    deepest = next(k for k in reversed(loaded) if k.endswith(".weight") and loaded[k].dim() == 4)
    assert not torch.equal(trained[f"segmentor.encoder.body.{deepest.replace('stages.', 'stages_', 1)}"], loaded[deepest])


def test_maps_strides_and_normalisation_come_from_timm() -> None:
    resnet = TimmEncoder("resnet18", 8)
    assert resnet.strides == [4, 8, 8, 8] and resnet.out_channels == [64, 128, 256, 512]
    assert resnet.input_norm == IMAGENET_NORM
    lite = TimmEncoder("tf_efficientnet_lite0", 16)  # TensorFlow's [-1, 1] pixels
    assert lite.input_norm == InputNorm(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) and lite.strides[-1] == 16
    maps = resnet(torch.rand(1, 3, 32, 32))
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 8, 8), (128, 4, 4), (256, 4, 4), (512, 4, 4)]


def test_timm_names_strides_and_files_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.backbone': timm has no model 'resnet_nope'"):
        load_config(None, ["model.backbone=timm/resnet_nope"])
    config = load_config(None, ["model.backbone=timm/pvt_v2_b0", "model.output_stride=8", "model.num_classes=19"])
    with pytest.raises(ConfigError, match=r"pvt_v2_b0 has output stride 32 .*set model.output_stride=32"):
        build_encoder(config.model)
    config.model.backbone, config.model.pretrained = "timm/resnet18", str(timm_file("resnet34", tmp_path))
    with pytest.raises(WeightsError, match=r"resnet34.pth do not fit the TimmEncoder: unexpected: body\.layer1\.2"):
        build_model(config.model)
