"""Parity of the mixing host (``adapt.host: mix``) with DAFormer (lhoyer/DAFormer), whose strong
augmentation comes from DACS (vikolss/DACS ``utils/transformsgpu.py``) and whose losses are
mmsegmentation 0.x's. Each test computes the reference's behaviour independently: its formula
written out here, a statistical check (a frequency inside its binomial 99.9% interval), or kornia's
``ColorJiggle`` (kornia 0.5's ``ColorJitter``, which DAFormer calls)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

import drsl.adaptation.mix as mix_module
from drsl.adaptation.classmix import StrongAugment, step_generator
from drsl.adaptation.ema import EMATeacher
from drsl.config import Config, load_config
from drsl.configs import resolve_config_path
from drsl.data.classes import bind_class_set
from drsl.data.labels import IGNORE_INDEX
from drsl.models.segmentor import build_segmentor
from drsl.training import build_module

pytestmark = pytest.mark.parity

#: z of a two-sided 99.9% interval.
Z999 = 3.29
THING_CLASSES = [6, 7, 11, 12, 13, 14, 15, 16, 17, 18]


def binomial_interval(n: int, p: float) -> tuple[float, float]:
    """The 99.9% interval of a Binomial(n, p) count (normal approximation)."""
    half = Z999 * math.sqrt(n * p * (1 - p))
    return n * p - half, n * p + half


def mix_config(*extra: str, name: str = "synth/mix", crop: int = 32) -> Config:
    """A packaged mixing config on a tiny light network and crop."""
    return load_config(resolve_config_path(name), [
        "model.light_width=1", "init_checkpoint=null", "data.batch_size=2",
        f"data.source_augment.crop_size=[{crop},{crop}]", f"data.target_augment.crop_size=[{crop},{crop}]", *extra,
    ])


def host_augment() -> StrongAugment:
    """The strong augmentation that the packaged synth/mix host builds."""
    return build_module(mix_config()).strong  # type: ignore[return-value]


def test_colour_jitter_fires_on_80_percent_of_mixed_images() -> None:
    """dacs_transforms.color_jitter (DAFormer; DACS transformsgpu.colorJitter): the mixed image is
    jittered when ``color_jitter > p`` with ``color_jitter ~ U(0, 1)`` and p = 0.2 (DAFormer's
    uda/dacs.py ``color_jitter_probability``), so on 80% of the images."""
    strong = host_augment()
    strong.blur_prob = 0.0  # count the jitter alone
    n = 2000
    images = torch.rand(n, 3, 4, 4)
    out = strong(images, [step_generator(7, i) for i in range(n)])
    jittered = int((out != images).flatten(1).any(1).sum())
    low, high = binomial_interval(n, 1 - 0.2)
    assert low <= jittered <= high, jittered


def test_colour_jitter_is_kornia_05_colorjitter() -> None:
    """dacs_transforms.color_jitter calls kornia 0.5's ``ColorJitter(brightness=s, contrast=s,
    saturation=s, hue=s)`` with s = 0.2: factors drawn per image, brightness additive, contrast
    multiplicative, HSV saturation and hue (a shift of ``hue`` turns), in a random order. Its
    successor ``kornia.augmentation.ColorJiggle`` replays each image's drawn factors and order."""
    from drsl.adaptation.classmix import color_jitter

    kornia = pytest.importorskip("kornia")
    strong = host_augment()
    reference = kornia.augmentation.ColorJiggle(0.2, 0.2, 0.2, 0.2, p=1.0)
    images = torch.rand(40, 1, 3, 12, 12)
    images[:, :, :, :4] = torch.tensor([0.9, 0.5, 0.1]).view(1, 1, 3, 1, 1)  # saturated colour
    for i, image in enumerate(images):
        drawn = strong.draw(step_generator(3, i))
        params = reference.forward_parameters(image.shape)
        params.update(
            brightness_factor=torch.tensor([drawn.brightness]), contrast_factor=torch.tensor([drawn.contrast]),
            saturation_factor=torch.tensor([drawn.saturation]), hue_factor=torch.tensor([drawn.hue]),
            order=torch.tensor(drawn.order),
        )
        expected = reference(image, params=params)[0]
        torch.testing.assert_close(color_jitter(image[0], drawn), expected, atol=1e-5, rtol=0)


def test_colour_jitter_factors_are_kornia_05s_ranges() -> None:
    """kornia 0.5 ``ColorJitter.generate_parameters`` (``_range_bound``, ``random_color_jitter_generator``)
    for s = 0.2: brightness, contrast and saturation factors ~ U(0.8, 1.2), hue ~ U(-0.2, 0.2)
    (not a quarter of s), the order a uniform permutation of the four steps."""
    strong = host_augment()
    draws = [strong.draw(step_generator(11, i)) for i in range(3000)]
    uniform_sd = 1 / math.sqrt(12)
    for name, low, high in [("brightness", 0.8, 1.2), ("contrast", 0.8, 1.2), ("saturation", 0.8, 1.2), ("hue", -0.2, 0.2)]:
        values = np.array([getattr(d, name) for d in draws])
        width = high - low
        assert values.min() >= low and values.max() <= high, name
        assert values.min() < low + 0.01 * width and values.max() > high - 0.01 * width, name
        assert abs(values.mean() - (low + high) / 2) < Z999 * width * uniform_sd / math.sqrt(len(values)), name
    orders = {d.order for d in draws}
    assert len(orders) == 24 and all(sorted(o) == [0, 1, 2, 3] for o in orders)


def test_hue_turns_by_up_to_the_full_strength() -> None:
    """kornia 0.5 ``adjust_hue(img, hue_factor * 2 * pi)`` with hue_factor ~ U(-0.2, 0.2): the hue of
    a colour moves by up to a fifth of a turn (torchvision's ColorJitter(hue=0.05) by a twentieth)."""
    strong = host_augment()
    strong.jitter_prob, strong.blur_prob = 1.0, 0.0
    n = 400
    colour = torch.tensor([0.6, 0.4, 0.3])  # away from the [0, 1] bounds under +-20% factors
    images = colour.view(1, 3, 1, 1).expand(n, 3, 2, 2).clone()
    out = strong(images, [step_generator(5, i) for i in range(n)])[:, :, 0, 0]

    def hue(rgb: torch.Tensor) -> torch.Tensor:  # HSV hue in turns, written out
        r, g, b = rgb.unbind(-1)
        top, bottom = rgb.max(-1).values, rgb.min(-1).values
        delta = top - bottom
        h = torch.where(top == r, ((g - b) / delta) % 6, torch.where(top == g, (b - r) / delta + 2, (r - g) / delta + 4))
        return h / 6

    shift = (hue(out) - hue(colour)) % 1
    shift = torch.where(shift > 0.5, shift - 1, shift)
    assert shift.abs().max() <= 0.2 + 1e-4
    assert shift.abs().max() > 0.19 and shift.std() > 0.1  # U(-0.2, 0.2): sd 0.115


def test_blur_kernel_and_sigma() -> None:
    """dacs_transforms.gaussian_blur: blur when ``blur > 0.5`` (``blur ~ U(0, 1)``), sigma ~
    U(0.15, 1.15), kernel side ``floor(ceil(0.1 * side) - 0.5 + ceil(0.1 * side) % 2)`` per axis
    (kornia GaussianBlur2d). On an impulse the output is the kernel: its support gives the size,
    the ratio of neighbouring taps exp(-1 / (2 sigma^2)) gives sigma."""
    strong = host_augment()
    strong.jitter_prob = 0.0
    height, width, n = 64, 128, 400
    images = torch.zeros(n, 3, height, width)
    images[:, :, height // 2, width // 2] = 1.0
    out = strong(images, [step_generator(9, i) for i in range(n)])
    blurred = (out != images).flatten(1).any(1)
    low, high = binomial_interval(n, 0.5)
    assert low <= int(blurred.sum()) <= high
    kernel = lambda side: int(np.floor(np.ceil(0.1 * side) - 0.5 + np.ceil(0.1 * side) % 2))  # noqa: E731
    rows = (out[blurred, 0, :, width // 2] > 0).sum(1)
    cols = (out[blurred, 0, height // 2, :] > 0).sum(1)
    assert rows.max() == kernel(height) == 7 and cols.max() == kernel(width) == 13
    centre = out[blurred, 0, height // 2, width // 2].double()
    ratio = out[blurred, 0, height // 2, width // 2 + 1].double() / centre
    sigma = torch.sqrt(-1 / (2 * ratio.log()))
    assert sigma.min() >= 0.15 - 1e-3 and sigma.max() <= 1.15 + 1e-3
    assert sigma.min() < 0.2 and sigma.max() > 1.1
    assert abs(sigma.mean().item() - 0.65) < Z999 * (1 / math.sqrt(12)) / math.sqrt(len(sigma))


def test_ema_momentum_ramp() -> None:
    """DACS._update_ema(iter) (DAFormer dacs.py): ``alpha = min(1 - 1 / (iter + 1), alpha)``, called
    with iter = 1, 2, ... before the forward of each iteration after the first, i.e. after every
    optimiser step: teacher = alpha * teacher + (1 - alpha) * student over the parameters."""
    torch.manual_seed(0)
    student = nn.Linear(3, 2)
    teacher = EMATeacher([student], momentum=0.999)
    expected = [p.detach().clone() for p in student.parameters()]
    for it in range(1, 1201):
        with torch.no_grad():
            for p in student.parameters():
                p.copy_(torch.randn_like(p))
        teacher.update([student])
        alpha = min(1 - 1 / (it + 1), 0.999)
        expected = [alpha * e + (1 - alpha) * p.detach() for e, p in zip(expected, student.parameters())]
        if it in (1, 2, 100, 999, 1200):
            for got, want in zip(teacher.model.parameters(), expected):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_teacher_normalises_the_target_batch_with_its_own_statistics() -> None:
    """DACS.forward_train (DAFormer dacs.py) keeps the EMA model in train mode and only sets
    ``training = False`` on ``_DropoutNd`` and timm ``DropPath`` modules before labelling the target
    batch: BatchNorm layers use the batch's statistics (never the student's running ones, which
    ``_update_ema`` does not copy: it averages parameters only)."""
    module = build_module(mix_config()).train()  # the host's teacher
    segmentor = module.teacher_parts()[0]
    norms = [m for m in segmentor.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.training for m in norms)
    target = torch.rand(2, 3, 32, 32)
    before = module.teacher_predictions(target, torch.Size([32, 32]), 0)
    for m in norms:
        m.running_mean.add_(100.0)
    after = module.teacher_predictions(target, torch.Size([32, 32]), 0)
    assert torch.equal(before[0], after[0]) and torch.allclose(before[1], after[1])

    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout2d(0.5), DropPath(0.5))
    teacher = EMATeacher([student], momentum=0.99, batch_statistics=True).train()
    images = torch.randn(4, 3, 8, 8) * 3 + 1
    conv = teacher.model[0][0]
    features = conv(images)
    mean, var = features.mean((0, 2, 3), keepdim=True), features.var((0, 2, 3), unbiased=False, keepdim=True)
    expected = (features - mean) / torch.sqrt(var + 1e-5)  # batch statistics, no dropout, no drop path
    with torch.no_grad():
        torch.testing.assert_close(teacher.model[0](images), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(teacher.model[0](images), expected, rtol=1e-4, atol=1e-5)  # deterministic
    own = teacher.model[0][1].running_mean.clone()
    student[1].running_mean.fill_(7.0)
    teacher.update([student])
    assert torch.equal(teacher.model[0][1].running_mean, own)  # its own, moved by its own forwards


def test_teacher_confidence_is_the_softmax_of_upsampled_logits() -> None:
    """DACS.forward_train: ``ema_softmax = softmax(ema_model.encode_decode(target_img))``, and
    mmseg's ``EncoderDecoder.encode_decode`` resizes the logits to the image size (bilinear,
    align_corners False) before that softmax; the pseudo-label is its argmax, its confidence its max."""
    torch.manual_seed(0)
    module = build_module(mix_config()).train()
    with torch.no_grad():
        for param in module.teacher.parameters():
            param.mul_(4.0)  # sharper posteriors, far from uniform
    target = torch.rand(2, 3, 32, 32)
    predicted, score = module.teacher_predictions(target, torch.Size([32, 32]), 0)
    with torch.no_grad():
        logits = module.teacher_parts()[0](target).logits
    assert logits.shape[-1] < 32  # the logits are upsampled
    probs = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False).softmax(dim=1)
    top, expected = probs.max(dim=1)
    assert (predicted == expected).float().mean() > 0.999  # ties aside
    torch.testing.assert_close(score, -torch.log1p(-top.double()).float(), rtol=1e-3, atol=1e-3)


class Spy:
    """Records the (labels, weight) of every segmentation-loss call and the decoder outputs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: nn.Module) -> None:
        self.losses: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.logits: list[torch.Tensor] = []
        original = mix_module.segmentation_loss

        def spy(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None, **kw: Any) -> torch.Tensor:
            self.losses.append((labels, weight))
            return original(logits, labels, weight, **kw)

        monkeypatch.setattr(mix_module, "segmentation_loss", spy)
        module.segmentor.decoder.register_forward_hook(lambda _m, _i, out: self.logits.append(out[0].detach()))


def two_class_batch(size: int) -> dict[str, Any]:
    """Source crops whose left half is class 0 and right half class 2 (ClassMix pastes one of the
    two), random images."""
    labels = torch.zeros(2, size, size, dtype=torch.long)
    labels[:, :, size // 2:] = 2
    return {"source": {"image": torch.rand(2, 3, size, size), "label": labels},
            "target": {"image": torch.rand(2, 3, size, size)}}


def confident_first_image(module: nn.Module, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """A teacher that labels every target pixel class 5, all confident on image 0, none on image 1."""
    predicted = torch.full((2, size, size), 5)
    score = torch.stack([torch.full((size, size), 50.0), torch.zeros(size, size)])
    monkeypatch.setattr(module, "teacher_predictions", lambda *_: (predicted, score))


def test_pseudo_label_weight_is_one_scalar_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """DACS.forward_train: ``pseudo_weight = sum(pseudo_prob >= threshold) / size(pseudo_label)``
    over the whole batch, one scalar; pasted pixels weigh 1 (``gt_pixel_weight``)."""
    module = build_module(mix_config()).train()
    confident_first_image(module, monkeypatch, 32)
    spy = Spy(monkeypatch, module)
    module(two_class_batch(32), iteration=3)
    labels, weight = spy.losses[-1]
    assert weight is not None
    middle = slice(8, 24)  # clear of any ignored border rows
    pasted = labels[:, middle] != 5
    expected = torch.where(pasted, 1.0, 0.5)  # half the batch's pixels are confident
    assert pasted.any() and (~pasted).any()
    torch.testing.assert_close(weight[:, middle], expected)


def test_pseudo_weight_ignores_the_top_and_bottom_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """DACS.forward_train: ``pseudo_weight[:, :pseudo_weight_ignore_top, :] = 0`` and
    ``pseudo_weight[:, -pseudo_weight_ignore_bottom:, :] = 0`` before mixing (pasted pixels keep
    weight 1); DAFormer's final configs: 15 and 120 rows of a 512-row crop."""
    from drsl.adaptation.classmix import pseudo_weights

    config = load_config(resolve_config_path("gta5_cityscapes/daformer_mix"), [])
    share = torch.tensor(0.5)
    weight = pseudo_weights(share, torch.Size([2, 512, 8]), config.adapt.mix.pseudo_ignore_top_share,
                            config.adapt.mix.pseudo_ignore_bottom_share)
    expected = torch.full((2, 512, 8), 0.5)
    expected[:, :15] = 0
    expected[:, -120:] = 0
    torch.testing.assert_close(weight, expected)

    size = 64  # the same shares of a 64-row crop: 2 and 15 rows
    module = build_module(mix_config(crop=size)).train()
    confident_first_image(module, monkeypatch, size)
    spy = Spy(monkeypatch, module)
    module(two_class_batch(size), iteration=3)
    labels, weight = spy.losses[-1]
    pasted = labels != 5
    expected = torch.where(pasted, 1.0, 0.5)
    top, bottom = round(15 * size / 512), round(120 * size / 512)
    expected[:, :top] = torch.where(pasted[:, :top], 1.0, 0.0)
    expected[:, size - bottom:] = torch.where(pasted[:, size - bottom:], 1.0, 0.0)
    assert (top, bottom) == (2, 15)
    torch.testing.assert_close(weight, expected)


def test_daformer_configs_are_the_final_reference_configs() -> None:
    """DAFormer configs/daformer/gta2cs_uda_warm_fdthings_rcs_croppl_a999_daformer_mitb5_s0.py (and
    experiments.py id 7, the same for SYNTHIA) on uda/dacs.py, schedules adamw.py / poly10warm.py
    and the uda_*_512x512 datasets: alpha 0.999, pseudo_threshold 0.968, pseudo-weight borders 15
    and 120 rows, colour jitter s 0.2 when U > 0.2, blur when U > 0.5, thing-class feature distance
    0.005, rare-class temperature 0.01, 512x512 crops, batch 2, AdamW lr 6e-5 (head x10), betas
    (0.9, 0.999), weight decay 0.01, 1500 linear warm-up iterations from ratio 1e-6, poly power 1,
    40k iterations, evaluation every 4000."""
    for name in ("gta5_cityscapes/daformer_mix", "synthia_cityscapes/daformer_mix",
                 "gta5_cityscapes/daformer_drsl_mix", "synthia_cityscapes/daformer_drsl_mix"):
        config = load_config(resolve_config_path(name), [])
        adapt, mix, optim = config.adapt, config.adapt.mix, config.optim
        assert adapt.host == "mix" and adapt.ema_momentum == 0.999, name
        assert mix.confidence_threshold == 0.968 and mix.jitter_strength == 0.2, name
        assert mix.jitter_prob == pytest.approx(1 - 0.2) and mix.blur_prob == pytest.approx(1 - 0.5), name
        assert round(mix.pseudo_ignore_top_share * 512) == 15 and round(mix.pseudo_ignore_bottom_share * 512) == 120, name
        assert adapt.feature_distance.weight == 0.005 and adapt.feature_distance.classes == THING_CLASSES, name
        assert config.data.source_sampling.mode == "class_balanced" and config.data.source_sampling.temperature == 0.01
        assert config.data.source_augment.crop_size == [512, 512] == config.data.target_augment.crop_size
        assert config.data.batch_size == 2 and adapt.lambda_target == 1.0
        assert (optim.name, optim.lr, optim.head_lr_mult, list(optim.betas), optim.weight_decay) == (
            "adamw", 6e-5, 10.0, [0.9, 0.999], 0.01), name
        assert (optim.warmup_iters, optim.warmup_ratio, optim.poly_power) == (1500, 1e-6, 1.0), name
        assert config.train.iterations == 40000 and config.train.eval_every == 4000, name


def test_source_features_come_from_a_forward_over_the_source_crops(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """DACS.forward_train runs ``get_model().forward_train(img, ...)`` on the source crops alone,
    and a second forward on the mixed crops: a BatchNorm encoder normalises each with its own
    batch statistics, so at the ImageNet weights the thing-class feature distance
    (``calc_feat_dist``) of the source crops is 0."""
    config = mix_config()
    bind_class_set(config)
    torch.manual_seed(5)
    weights = tmp_path / "imagenet.pth"
    torch.save(build_segmentor(config.model).encoder.state_dict(), weights)
    module = build_module(mix_config("adapt.feature_distance.weight=0.005", f"model.pretrained={weights}")).train()
    spy = Spy(monkeypatch, module)
    batch = two_class_batch(32)
    batch["source"]["label"][:] = 13  # a thing class everywhere
    logs = module(batch, iteration=0).logs
    assert logs["feature_distance"].item() == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        alone = module.segmentor(batch["source"]["image"]).logits
    torch.testing.assert_close(torch.cat(spy.logits)[:2], alone)


def test_cross_entropy_averages_over_all_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    """mmseg 0.x losses/cross_entropy_loss.py ``cross_entropy`` with utils ``weight_reduce_loss``:
    ``F.cross_entropy(reduction='none', ignore_index=255)`` (0 at ignored pixels), times the pixel
    weight, then ``loss.mean()`` over every pixel of the batch, for the source and the mixed crops."""
    module = build_module(mix_config()).train()
    confident_first_image(module, monkeypatch, 32)
    spy = Spy(monkeypatch, module)
    batch = two_class_batch(32)
    batch["source"]["label"][:, :8] = IGNORE_INDEX  # a quarter of the source pixels ignored
    logs = module(batch, iteration=3).logs
    logits = torch.cat(spy.logits)
    per_pixel = lambda x, y: F.cross_entropy(  # noqa: E731
        F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False), y, ignore_index=IGNORE_INDEX, reduction="none",
    )
    source = per_pixel(logits[:2], batch["source"]["label"]).mean()
    mixed_labels, weight = spy.losses[-1]
    assert weight is not None
    mixed = (per_pixel(logits[2:], mixed_labels) * weight).mean()
    assert logs["loss_source"].item() == pytest.approx(source.item(), rel=1e-5)
    assert logs["loss_target"].item() == pytest.approx(mixed.item(), rel=1e-5)
