"""The mixing host: ClassMix masks against an independent computation, the confidence weight,
tiny end-to-end runs of mix and drsl_mix (feature distance included), resume equality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from drsl.adaptation.classmix import StrongAugment, class_mix_masks, confident_pixels, confident_share, mix, step_generator
from drsl.bench.compare import pseudo_label_rounds
from drsl.config import ConfigError, load_config
from drsl.configs import resolve_config_path
from drsl.data.classes import bind_class_set
from drsl.models.segmentor import build_segmentor
from drsl.training import build_module, read_eval, run_training
from fixtures import run_weights, write_uda_root

SIZE = (40, 56)


def test_class_mix_masks_match_an_independent_computation() -> None:
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 7, (4, 12, 16)))
    labels[0] = 255  # nothing labelled: nothing pasted
    labels[1] = torch.where(labels[1] < 3, labels[1], 255)  # classes 0-2 and ignore
    labels[2] = 5  # one class: pasted whole (half of 1, rounded up)
    mask = class_mix_masks(labels, 7, [step_generator(3, 10, i) for i in range(4)])
    keys = np.stack([torch.rand(7, generator=step_generator(3, 10, i)).numpy() for i in range(4)])
    for i in range(4):
        present = sorted(set(labels[i].unique().tolist()) - {255})
        chosen = sorted(present, key=lambda c: keys[i, c])[: (len(present) + 1) // 2]
        np.testing.assert_array_equal(mask[i].numpy(), np.isin(labels[i].numpy(), chosen))
    assert not mask[0].any() and mask[2].all()
    assert not torch.equal(mask, class_mix_masks(labels, 7, [step_generator(3, 11, i) for i in range(4)]))  # draws move on
    # an image's draws are its own: two halves of the batch (two processes) give the same masks
    halves = [class_mix_masks(labels[k::2], 7, [step_generator(3, 10, i) for i in range(k, 4, 2)]) for k in (0, 1)]
    assert torch.equal(halves[0], mask[0::2]) and torch.equal(halves[1], mask[1::2])
    images = torch.stack([torch.zeros(3, 12, 16), torch.ones(3, 12, 16)] * 2)
    mixed = mix(mask, torch.ones_like(images), torch.zeros_like(images))
    assert torch.equal(mixed, mask.unsqueeze(1).expand_as(mixed).float())
    assert torch.equal(mix(mask, labels, torch.full_like(labels, 9)), torch.where(mask, labels, 9))


def test_confident_share_and_strong_augmentation() -> None:
    score = torch.tensor([[[5.0, 1.0], [4.0, 3.0]], [[0.1, 0.2], [9.0, 9.0]]])  # -log(1 - p)
    predicted = torch.tensor([[[0, 1], [255, 2]], [[0, 0], [1, 1]]])
    confident = confident_pixels(score, predicted, 0.968)  # score threshold 3.44
    assert confident.tolist() == [[[True, False], [False, False]], [[False, False], [True, True]]]
    assert confident_share(confident).item() == 0.375  # one weight for the batch: 3 of 8 pixels
    images = torch.rand(3, 3, 16, 16)
    strong = StrongAugment(0.2, jitter_prob=1.0, blur_prob=1.0)
    generators = lambda: [step_generator(0, i) for i in range(3)]  # noqa: E731
    out = strong(images, generators())
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1 and not torch.equal(out, images)
    assert torch.equal(out, strong(images, generators()))  # reproducible from the generators
    assert torch.equal(strong(images[1:], generators()[1:]), out[1:])  # each image its own draws
    assert torch.equal(StrongAugment(0.2, 0.0, 0.0)(images, generators()), images)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_uda_root(tmp_path_factory.mktemp("data"), source=6, target_train=3, size=SIZE)


def overrides(root: Path, work_dir: Path, iterations: int = 4, *extra: str) -> list[str]:
    return [
        f"data.source.root={root}/src", f"data.target.root={root}/tgt", f"data.val.root={root}/tgt",
        "data.batch_size=2", "data.num_workers=0", f"train.iterations={iterations}", "train.checkpoint_every=2",
        "train.log_every=1", "model.light_width=1", "data.source_augment.crop_size=[32,32]",
        "data.target_augment.crop_size=[32,32]", "init_checkpoint=null", "adapt.drsl.warmup_iters=2",
        "adapt.mix.jitter_prob=1.0", f"work_dir={work_dir}", *extra,
    ]


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = load_config(resolve_config_path("synth/mix"), ["model.light_width=1"])
    bind_class_set(config)
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("weights") / "light_imagenet.pth"
    torch.save(build_segmentor(config.model).encoder.state_dict(), path)
    return path


@pytest.mark.parametrize("name", ["mix", "drsl_mix"])
def test_mixing_host_runs_end_to_end(name: str, data_root: Path, imagenet_file: Path, tmp_path: Path) -> None:
    extra = ["adapt.feature_distance.weight=0.01", f"model.pretrained={imagenet_file}"] if name == "mix" else []
    summary = run_training(load_config(resolve_config_path(f"synth/{name}"), overrides(data_root, tmp_path, 4, *extra)))
    assert summary["iteration"] == 4 and "miou" in summary
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in logged if "train/loss_target" in r]
    assert len(train) == 4 and all(0 < r["train/mixed_share"] < 1 for r in train)
    assert all(0 <= r["train/confident_share"] <= 1 for r in train)
    if name == "mix":
        assert all(np.isfinite(r["train/feature_distance"]) for r in train)
    else:
        assert train[0]["train/drsl/ramp"] == 0 and train[-1]["train/drsl/ramp"] == 1 and "train/drsl/sma" in train[-1]
    quality = json.loads((tmp_path / "pseudo_labels" / "teacher" / "quality.json").read_text())
    assert quality["valid"] > 0 and 0 <= quality["coverage"] <= 1 and "0.968" in quality["rule"]
    assert quality["kept"] == 0 and np.isnan(quality["precision"]) or 0 <= quality["precision"] <= 1
    assert pseudo_label_rounds(tmp_path)[-1]["round"] == "teacher"
    weights = run_weights(tmp_path)
    assert any(k.startswith("teacher.") for k in weights) and not any("imagenet" in k for k in weights)


def test_resumed_mixing_run_equals_an_uninterrupted_one(data_root: Path, tmp_path: Path) -> None:
    config = resolve_config_path("synth/drsl_mix")
    run_training(load_config(config, overrides(data_root, tmp_path / "ref", 6)))
    resumed = tmp_path / "resumed"
    run_training(
        load_config(config, overrides(data_root, resumed, 6)),
        resume=str(tmp_path / "ref" / "checkpoints" / "iter_2.pt"),
    )
    reference, again = run_weights(tmp_path / "ref"), run_weights(resumed)
    assert reference.keys() == again.keys()
    assert not [k for k in reference if not torch.equal(reference[k], again[k])]
    assert read_eval(tmp_path / "ref")["miou"] == read_eval(resumed)["miou"]


def test_mixing_needs_equal_crops_and_imagenet_weights_for_the_feature_distance(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="crop_size"):
        load_config(resolve_config_path("synth/mix"), overrides(data_root, tmp_path, 2, "data.target_augment.crop_size=[32,40]"))
    with pytest.raises(ConfigError, match="model.pretrained"):
        load_config(resolve_config_path("synth/mix"), overrides(data_root, tmp_path, 2, "adapt.feature_distance.weight=0.1"))
    with pytest.raises(ConfigError, match="pseudo_ignore_top_share=0.6 and pseudo_ignore_bottom_share=0.4"):
        load_config(resolve_config_path("synth/mix"), overrides(
            data_root, tmp_path, 2, "adapt.mix.pseudo_ignore_top_share=0.6", "adapt.mix.pseudo_ignore_bottom_share=0.4",
        ))
    with pytest.raises(ConfigError, match="adapt.host=rounds"):  # the rounds host has no use for it
        load_config(resolve_config_path("synth/cbst"), overrides(
            data_root, tmp_path, 2, "adapt.feature_distance.weight=0.1", "model.pretrained=weights.pth",
        ))


def test_feature_distance_against_an_independent_computation(data_root: Path, imagenet_file: Path, tmp_path: Path) -> None:
    config = load_config(resolve_config_path("synth/mix"), overrides(
        data_root, tmp_path, 2, "adapt.feature_distance.weight=0.01", f"model.pretrained={imagenet_file}",
        "adapt.feature_distance.classes=[13]",
    ))
    module = build_module(config).eval()
    distance = module.imagenet_distance
    assert distance is not None
    images = torch.rand(2, 3, 32, 32)
    features = module.segmentor.encode(images)[-1]
    with torch.no_grad():
        frozen = build_module(config).segmentor.encode(images)[-1]  # the ImageNet weights, untrained
        for param in module.segmentor.encoder.parameters():
            param.add_(0.05)
        moved = module.segmentor.encode(images)[-1]
    cars = torch.full((2, 32, 32), 13)
    assert distance(module.segmentor, features, images, cars).item() == pytest.approx(0.0, abs=1e-6)
    expected = (moved - frozen).norm(dim=1).mean()
    assert distance(module.segmentor, moved, images, cars).item() == pytest.approx(expected.item(), rel=1e-5)
    roads = torch.zeros(2, 32, 32, dtype=torch.long)
    assert distance(module.segmentor, moved, images, roads).item() == 0.0  # not one of the classes


def test_source_only_step_adds_the_weighted_feature_distance(data_root: Path, imagenet_file: Path, tmp_path: Path) -> None:
    """Source-only training with the feature distance: its loss is the cross-entropy plus the
    weight times the distance to the frozen ImageNet encoder, computed here independently; the
    frozen copy never reaches a checkpoint."""
    weights = ["adapt.feature_distance.weight=0.5", f"model.pretrained={imagenet_file}", "adapt.feature_distance.classes=[0,13]"]
    config = load_config(resolve_config_path("synth/source_only"), overrides(data_root, tmp_path / "fd", 2, *weights))
    module = build_module(config).train()
    frozen = build_module(config).segmentor.encoder.train()  # batch statistics, as the student
    with torch.no_grad():
        for param in module.segmentor.encoder.parameters():
            param.add_(0.05)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    cells = torch.randint(0, 19, (2, 4, 4))  # one class per 8x8 cell of the stride-8 map
    cells[0, :2] = 13
    labels = cells.repeat_interleave(8, 1).repeat_interleave(8, 2)
    at_start = build_module(config).train()
    start = at_start.imagenet_distance(at_start.segmentor, at_start.segmentor.encode(images.float() / 255)[-1],
                                       images.float() / 255, labels)
    assert start.item() == pytest.approx(0.0, abs=1e-5)  # batch statistics on both sides
    output = module({"source": {"image": images, "label": labels}})
    floats = images.float() / 255
    logits = module.segmentor(floats).logits
    cross_entropy = torch.nn.functional.cross_entropy(
        torch.nn.functional.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False), labels,
    )
    features = module.segmentor.encode(floats)[-1]
    with torch.no_grad():
        reference = frozen(module.segmentor.normalize(floats))[-1]
    assert features.shape[-2:] == cells.shape[-2:]
    selected = torch.isin(cells, torch.tensor([0, 13])).float()
    distance = ((features - reference).norm(dim=1) * selected).sum() / selected.sum()
    assert selected.sum() > 0 and distance > 0
    assert output.logs["feature_distance"].item() == pytest.approx(distance.item(), rel=1e-4)
    assert output.loss.item() == pytest.approx((cross_entropy + 0.5 * distance).item(), rel=1e-4)
    summary = run_training(config)
    assert summary["iteration"] == 2
    assert "train/feature_distance" in (tmp_path / "fd" / "metrics.jsonl").read_text()
    assert not any("imagenet" in k or "distance" in k for k in run_weights(tmp_path / "fd"))
    stored = build_module(config).segmentor.encoder.state_dict()
    kept = module.imagenet_distance.encoder.state_dict()  # type: ignore[union-attr]
    assert all(torch.equal(stored[k], kept[k]) for k in stored if "running" in k)  # ImageNet statistics kept


def test_the_regulariser_reads_confident_or_all_target_pixels(data_root: Path, tmp_path: Path) -> None:
    """No pixel of an untrained teacher passes a threshold near 1: with ``drsl_target=confident``
    the regulariser reads the source and pasted pixels only; with ``all`` the rest of the mixed
    crop too."""
    torch.manual_seed(0)
    source = {"image": torch.rand(2, 3, 32, 32), "label": torch.randint(0, 19, (2, 32, 32))}
    batch = {"source": source, "target": {"image": torch.rand(2, 3, 32, 32)}}
    counts = {}
    for read in ("confident", "all"):
        config = load_config(resolve_config_path("synth/drsl_mix"), overrides(
            data_root, tmp_path, 2, "adapt.mix.confidence_threshold=0.999999", f"adapt.mix.drsl_target={read}",
            "adapt.drsl.grid_stride=1",
        ))
        torch.manual_seed(1)
        module = build_module(config).train()
        counts[read] = int(module(batch, iteration=5).logs["drsl/labelled_pixels"])
    assert counts["all"] > counts["confident"] > 0
