"""Batched, device-side evaluation equals the per-image evaluation it replaced: same confusion
matrix (so the same 19/16/13 mIoU) for images of mixed sizes, with and without worker processes;
autocast as configured."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from drsl.adaptation.drsl.regularizer import DRSLRegularizer
from drsl.adaptation.posterior import head_probabilities
from drsl.config import Config, DatasetConfig, DRSLConfig, EvalConfig, ModelConfig
from drsl.data.registry import build_dataset
from drsl.engine.distributed import DistInfo
from drsl.evaluation.evaluate import collate_same_size, config_prob_fn, evaluate, segmentor_prob_fn
from drsl.evaluation.inference import predict_probs
from drsl.evaluation.metrics import ConfusionMatrix
from drsl.models.segmentor import build_model
from fixtures import CITYSCAPES19, write_cityscapes


@pytest.fixture(scope="module")
def val_set(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("eval_val")
    write_cityscapes(root, "val", cities=("aachen",), per_city=3, size=(24, 32), seed=0)
    write_cityscapes(root, "val", cities=("bochum",), per_city=2, size=(20, 28), seed=1)
    return build_dataset(DatasetConfig(layout="cityscapes", root=str(root), split="val"), CITYSCAPES19)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="light", light_width=1, freeze_bn=True, num_classes=19)).eval()


def per_image_matrix(prob_fn, dataset, cfg: EvalConfig) -> ConfusionMatrix:  # type: ignore[no-untyped-def]
    """The evaluation as it was: one image at a time, float32 probabilities, argmax on the host."""
    matrix = ConfusionMatrix(19)
    for index in range(len(dataset)):
        sample = dataset[index]
        images = sample["image"][None].float() / 255.0
        probs = predict_probs(prob_fn, images, cfg, out_size=sample["label"].shape[-2:])[0]
        matrix.update(probs.argmax(0).numpy(), sample["label"].numpy())
    return matrix


@pytest.mark.parametrize("workers", [0, 1])
def test_batched_evaluation_equals_per_image(val_set, model, workers: int) -> None:  # type: ignore[no-untyped-def]
    cfg = EvalConfig(batch_size=3, resize=[16, 24], flip=True)
    prob_fn = segmentor_prob_fn(model)
    expected = per_image_matrix(prob_fn, val_set, cfg).matrix
    summary, matrix = evaluate(prob_fn, val_set, cfg, DistInfo(), CITYSCAPES19, num_workers=workers)
    assert matrix.sum() > 1000 and (matrix.diagonal() > 0).sum() >= 2
    assert (matrix == expected).all()
    assert summary["num_pixels"] == int(expected.sum())


def test_the_mmdl_and_product_heads_are_evaluated_as_computed_by_hand(val_set, model) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(1)
    regularizer = DRSLRegularizer(model.feature_channels, 19, DRSLConfig(hidden_dim=8, embed_dim=4, num_modes=2)).eval()
    images = torch.rand(2, 3, 24, 32)
    with torch.no_grad():
        output = model(images)
        seg = torch.softmax(output.logits, dim=1)
        embedded = regularizer.head.embed_map(output.features)  # (B, h, w, D)
        per_mode = regularizer.head.logits(embedded.flatten(0, 2)).double().exp()  # (N, C, K)
        mmdl = per_mode.sum(2) / per_mode.sum(dim=(1, 2)).unsqueeze(1)  # p(c | z) = sum_k p(c, k | z)
        mmdl = mmdl.view(2, *seg.shape[-2:], 19).permute(0, 3, 1, 2).float()
        product = seg * mmdl / (seg * mmdl).sum(1, keepdim=True)
        for head, expected in (("segmentation", seg), ("mmdl", mmdl), ("product", product)):
            probs = segmentor_prob_fn(model, head=lambda x, h=head: head_probabilities(model, regularizer, x, h))(images)
            assert torch.allclose(probs, expected, atol=1e-5), head
    assert not torch.equal(mmdl.argmax(1), seg.argmax(1))  # the heads differ, so the check above can fail
    cfg = EvalConfig(batch_size=3, flip=True)
    prob_fn = segmentor_prob_fn(model, head=lambda x: head_probabilities(model, regularizer, x, "mmdl"))
    summary, matrix = evaluate(prob_fn, val_set, cfg, DistInfo(), CITYSCAPES19)
    assert (matrix == per_image_matrix(prob_fn, val_set, cfg).matrix).all()
    with pytest.raises(ValueError, match="needs an MMDL head"):
        head_probabilities(model, None, images, "mmdl")


def test_same_size_samples_are_batched_in_order(val_set) -> None:  # type: ignore[no-untyped-def]
    batches = collate_same_size([val_set[i] for i in range(len(val_set))])
    assert [len(b["name"]) for b in batches] == [3, 2]
    assert [tuple(b["image"].shape) for b in batches] == [(3, 3, 24, 32), (2, 3, 20, 28)]
    assert batches[0]["label"].dtype == torch.uint8
    assert sum((b["index"] for b in batches), []) == list(range(len(val_set)))


def test_autocast_follows_the_config(model) -> None:  # type: ignore[no-untyped-def]
    seen: list[torch.dtype] = []
    hook = model.decoder.register_forward_hook(lambda m, i, o: seen.append(o[0].dtype))
    config = Config()
    config.train.amp = "bf16"
    images = torch.rand(2, 3, 24, 32)
    try:
        for amp, dtype in (("train", torch.bfloat16), ("none", torch.float32)):
            config.eval = dataclasses.replace(config.eval, amp=amp)
            probs = config_prob_fn(model, config, torch.device("cpu"))(images)
            assert seen[-1] == dtype and probs.dtype == torch.float32
            assert torch.allclose(probs.sum(1), torch.ones(2, 3, 4), atol=1e-5)
    finally:
        hook.remove()


def test_matrix_stays_on_the_device_until_read() -> None:
    matrix = ConfusionMatrix(3)
    pred, label = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 255])
    matrix.update(pred, label)
    matrix.update(pred, label)
    assert matrix._pending is not None  # counts kept as a tensor, not copied per update
    assert matrix.matrix.tolist() == [[2, 0, 0, 0], [0, 2, 2, 0], [0, 0, 0, 0]]
    assert matrix._pending is None


def test_bad_eval_batch_size_is_a_config_error(tmp_path: Path) -> None:
    from drsl.config import ConfigError, load_config
    from drsl.configs import resolve_config_path

    with pytest.raises(ConfigError, match="eval.batch_size"):
        load_config(resolve_config_path("synth/source_only"), ["eval.batch_size=0"])
