"""The pseudo-label pass: batched, banded, fused at label resolution, fingerprinted, one pass."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from drsl.adaptation import pseudo_label_pass as pass_module
from drsl.adaptation.posterior import fuse, head_posteriors, runner_up
from drsl.adaptation.pseudo_label_pass import generate_pseudo_labels, label_batch
from drsl.adaptation.pseudo_labels import PseudoLabelQuality, load_pseudo_label, quantize, read_manifest
from drsl.adaptation.pseudo_labels.writer import read_maps
from drsl.config import load_config
from drsl.configs import resolve_config_path
from drsl.data.classes import bind_class_set
from drsl.data.registry import build_dataset
from drsl.engine.distributed import DistInfo
from drsl.evaluation.inference import predict_probs
from drsl.models.segmentor import SegmentorOutput
from drsl.training import build_module
from fixtures import write_cityscapes

SIZE = (36, 52)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("pl")
    write_cityscapes(root / "tgt", "train", per_city=3, size=SIZE)
    config = load_config(resolve_config_path("synth/drsl"), [
        f"data.target.root={root}/tgt", "model.light_width=1", "data.num_workers=0",
        "eval.batch_size=4", "init_checkpoint=null", "data.val=null",
    ])
    torch.manual_seed(0)
    module = build_module(config).eval()
    dataset = build_dataset(config.data.target, bind_class_set(config), require_labels=False)
    return config, module, dataset


def run(setup, out: Path, fusion: str = "agree", portion: float = 0.4, replace: bool = False, **overrides):
    config, module, dataset = setup
    for key, value in overrides.items():
        setattr(config.adapt.pseudo_label, key, value)
    try:
        return generate_pseudo_labels(module, dataset, out, config, DistInfo(), portion, 1, fusion, "ckpt", progress=False, replace=replace)
    finally:
        config.eval.batch_size, config.adapt.pseudo_label.flip = 4, False


class PixelSegmentor(torch.nn.Module):
    """Logits from a random 1x1 convolution of the image at stride 4 (varied, unlike a fresh net)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 19, 1)
        torch.nn.init.normal_(self.conv.weight, std=8.0)

    def forward(self, images: torch.Tensor) -> SegmentorOutput:
        logits = self.conv(torch.nn.functional.avg_pool2d(images, 4, ceil_mode=True))
        return SegmentorOutput(logits, logits)


class PixelPosterior(torch.nn.Module):
    """A second head: a perturbed copy of the logits, softmaxed."""

    def class_posterior(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.softmax(feats + 3 * torch.sin(feats * 7), dim=1)


def test_maps_equal_an_independent_computation_and_bands_do_not_matter(setup, monkeypatch):
    config, _, dataset = setup
    torch.manual_seed(1)
    segmentor, regularizer = PixelSegmentor(), PixelPosterior()
    images = torch.stack([dataset[i]["image"] for i in range(3)]).float() / 255
    config.eval.flip = True
    try:
        reference = predict_probs(lambda x: head_posteriors(segmentor, regularizer, x, "agree"), images, config.eval)
        expected_second, expected_second_score = runner_up(reference, 19, "agree")
        expected_pred, expected_score = fuse(reference, 19, "agree")
        pred, levels, second, second_levels = label_batch(segmentor, regularizer, images, SIZE, config.eval, "agree", 19)
        monkeypatch.setattr(pass_module, "BAND_BYTES", 1)  # one row per band
        banded = label_batch(segmentor, regularizer, images, SIZE, config.eval, "agree", 19)
    finally:
        config.eval.flip = False
    assert pred.dtype == torch.uint8 and tuple(pred.shape) == (3, *SIZE)
    assert (pred.long() == expected_pred).float().mean() > 0.999
    assert (levels - quantize(expected_score)).abs().max() <= 1
    assert 0.05 < (pred == 255).float().mean() < 0.95  # the veto acts, not everywhere
    assert (second.long() == expected_second).float().mean() > 0.999
    assert (second_levels - quantize(expected_second_score)).abs().max() <= 1
    assert torch.equal(banded.pred, pred) and torch.equal(banded.levels, levels)
    assert torch.equal(banded.second, second) and torch.equal(banded.second_levels, second_levels)


def test_one_pass_quality_and_batching(setup, tmp_path):
    config, module, dataset = setup
    manifest = run(setup, tmp_path / "b4", fusion="none")
    config.eval.batch_size = 1
    run(setup, tmp_path / "b1", fusion="none")
    assert len(list((tmp_path / "b4").rglob("*.png"))) == 4 * len(dataset)
    for sample in dataset.samples:  # batched convolutions may round differently: a level at most
        (pred4, levels4, *_), (pred1, levels1, *_) = (read_maps(tmp_path / b, sample.name) for b in ("b4", "b1"))
        assert (pred4 == pred1).mean() > 0.999
        assert np.abs(levels4.astype(int) - levels1.astype(int))[pred4 == pred1].max() <= 1
    quality = PseudoLabelQuality(19)
    for index, sample in enumerate(dataset.samples):
        quality.update(load_pseudo_label(tmp_path / "b4", sample.name), dataset[index]["label"].numpy())
    measured = json.loads((tmp_path / "b4" / "quality.json").read_text())
    expected = quality.result()
    assert measured["kept"] == expected["kept"] > 0 and measured["valid"] == expected["valid"]
    assert measured["precision"] == pytest.approx(expected["precision"])
    assert measured["per_class_coverage"] == pytest.approx(expected["per_class_coverage"], nan_ok=True)
    assert manifest["num_images"] == len(dataset) and manifest["fusion"] == "none"


def test_stale_sets_are_regenerated_or_refused_never_reused(setup, tmp_path):
    config, module, dataset = setup
    out = tmp_path / "set"
    first = run(setup, out)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert run(setup, out) == first and (out / "manifest.json").stat().st_mtime_ns == stamp  # reused
    # other settings (test-time flip) or other weights: another fingerprint
    with pytest.raises(FileExistsError):
        run(setup, out, flip=True)
    flipped = run(setup, out, flip=True, replace=True)
    assert flipped["fingerprint"] != first["fingerprint"]
    saved = copy.deepcopy(module.state_dict())
    try:
        with torch.no_grad():
            module.segmentor.decoder.parameters().__next__().add_(0.5)
        changed = run(setup, out, replace=True)
    finally:
        module.load_state_dict(saved)
    assert changed["fingerprint"] not in (first["fingerprint"], flipped["fingerprint"])
    assert read_manifest(out)["fingerprint"] == changed["fingerprint"]
    fresh = run(setup, tmp_path / "fresh", fusion="none")
    assert run(setup, tmp_path / "agree")["fingerprint"] == first["fingerprint"]  # deterministic
    # the same maps at another portion are re-thresholded from disk, not recomputed
    again = run(setup, tmp_path / "fresh", fusion="none", portion=0.8)
    assert again["fingerprint"] == fresh["fingerprint"] and again["portion"] == 0.8
    kept = lambda m: sum(c["kept"] for c in m["counts"].values())  # noqa: E731
    assert kept(again) > kept(fresh)
