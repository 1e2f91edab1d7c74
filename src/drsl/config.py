"""Typed configuration: dataclass schema, layered YAML loading, strict merge, dotted overrides.

A config file may name ``_base_`` files (a path or a list, relative to itself, or a packaged config
as ``drsl::synth/source_only``); they are merged first, in order, then the file itself, then
command-line overrides ``key.sub=value``. Every merge is strict: an unknown key or a value of the
wrong type is a :class:`ConfigError` naming the key. The modules named by ``custom_imports`` are
imported before any of it is checked, so the names they register are valid.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from drsl.errors import parse_problem, shorten
from drsl.fileio import read_text_file
from drsl.yaml_io import load_yaml


class ConfigError(ValueError):
    """A configuration problem, with the offending key or file in the message."""


@dataclass(frozen=True)
class Bounds:
    """The range of a number, or the length and order of a list, in an ``Annotated`` schema hint.

    Checked whenever a value is merged (config files, overrides, checkpoints) and by the command
    line's number options, so every value is in range before any work starts.
    """

    low: float | None = None
    high: float | None = None
    #: The bound itself is excluded.
    low_open: bool = False
    high_open: bool = False
    #: Lists: exact length, least length, values in non-decreasing order.
    length: int | None = None
    min_length: int | None = None
    increasing: bool = False

    def describe(self) -> str:
        """The rule in words, e.g. 'at least 1' or 'in (0, 1]'."""
        if self.length is not None or self.min_length is not None or self.increasing:
            size = f"{self.length} values" if self.length is not None else f"at least {self.min_length} value"
            return size + (", low to high" if self.increasing else "")
        low, high = (str(int(v)) if v is not None and v == int(v) else f"{v:g}" if v is not None else "" for v in (self.low, self.high))
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'above' if self.low_open else 'at least'} {low}"
        return f"{'below' if self.high_open else 'at most'} {high}"

    def holds(self, value: Any) -> bool:
        """Whether ``value`` (a number, or a list for the list rules) is within these bounds."""
        if isinstance(value, list):
            return (
                (self.length is None or len(value) == self.length)
                and (self.min_length is None or len(value) >= self.min_length)
                and (not self.increasing or all(a <= b for a, b in zip(value, value[1:])))
            )
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return low_ok and high_ok


@dataclass(frozen=True)
class Registered:
    """A name that must be in a registry (``module:attribute``, a :class:`drsl.plugins.Registry`),
    in an ``Annotated`` schema hint; checked when merged, against what is registered then."""

    registry: str

    def describe(self) -> str:
        """Where the names come from, in words."""
        return f"a name registered in {self.registry.replace(':', '.')}"

    def check(self, value: str, key: str) -> None:
        """Raise ConfigError naming ``key`` when ``value`` is not registered."""
        module, attribute = self.registry.split(":")
        getattr(importlib.import_module(module), attribute).check(value, key)


#: Schema types with a range (numbers) or a shape (lists).
Count = Annotated[int, Bounds(low=1)]
NonNegativeInt = Annotated[int, Bounds(low=0)]
Seed = Annotated[int, Bounds(0, 2**32 - 1)]
Positive = Annotated[float, Bounds(low=0, low_open=True)]
NonNegative = Annotated[float, Bounds(low=0)]
Probability = Annotated[float, Bounds(0, 1)]
#: A share of pixels to keep: more than nothing, at most everything.
Portion = Annotated[float, Bounds(0, 1, low_open=True)]
#: An exponential moving average's momentum: 1 would never move.
Momentum = Annotated[float, Bounds(0, 1, high_open=True)]
#: Most pixels a side of an image, crop or resize may have (PIL refuses larger images as bombs).
MAX_SIDE = 65536
#: [height, width] in pixels.
Size = Annotated[list[Annotated[int, Bounds(1, MAX_SIDE)]], Bounds(length=2)]
#: A number of classes: class ids stay below 255, the ignore value.
ClassCount = Annotated[int, Bounds(1, 254)]
Scales = Annotated[list[Positive], Bounds(min_length=1)]
#: How the MMDL posterior joins pseudo-label selection (docs/method.md); the CLI and
#: ``drsl.adaptation.posterior.fuse`` take these names.
Fusion = Literal["none", "agree", "confident", "product"]
FUSIONS: tuple[str, ...] = typing.get_args(Fusion)


@dataclass
class DatasetConfig:
    """One dataset in its official on-disk layout."""

    #: On-disk layout: the official gta5, synthia or cityscapes folders, folder (images/ and masks/
    #: of your own: docs/your_own_data.md), or a layout registered by a plug-in (docs/extending.md).
    layout: Annotated[str, Registered("drsl.data.registry:LAYOUTS")] = "gta5"
    #: The dataset's root folder, laid out as ``layout`` expects.
    root: str = ""
    #: Cityscapes split (train/val/test); ignored by gta5/synthia/folder.
    split: str = "train"
    #: Optional text file of sample names (one per line) restricting the dataset.
    list_file: str | None = None
    #: Which mapping of the class file (data.classes) turns raw label values into classes; null:
    #: the layout's own (cityscapes for gta5/cityscapes, synthia for synthia; folder: class_map,
    #: else ids: the masks hold class ids).
    mapping: str | None = None
    #: folder layout only: YAML/JSON file mapping raw mask values to class ids or names (255 =
    #: ignore); null: ROOT/class_map.yaml if there is one. Used when mapping is null.
    class_map: str | None = None
    #: Resize every image (and label, nearest) to this [height, width] before augmentation.
    resize: Size | None = None
    #: What to do with broken samples (size mismatch, unreadable, unknown label values).
    on_error: Literal["skip", "fail"] = "skip"


@dataclass
class AugmentConfig:
    """Joint image+mask augmentation applied to training crops."""

    #: [height, width] of the random training crop, taken after rescaling (padded when smaller).
    crop_size: Size = field(default_factory=lambda: [512, 512])
    #: [smallest, largest] random rescaling factor.
    scale_range: Annotated[list[Positive], Bounds(length=2, increasing=True)] = field(default_factory=lambda: [0.5, 1.5])
    #: Flip each crop horizontally with probability 0.5.
    hflip: bool = True
    #: Colour jitter, blur and noise on the image (the keys below); the mask is untouched.
    photometric: bool = True
    #: Colour jitter: brightness scaled by a random factor in [1 - this, 1 + this].
    brightness: NonNegative = 0.4
    #: Colour jitter: contrast scaled by a random factor in [1 - this, 1 + this].
    contrast: NonNegative = 0.4
    #: Colour jitter: saturation scaled by a random factor in [1 - this, 1 + this].
    saturation: NonNegative = 0.4
    #: Colour jitter: hue shifted by up to this fraction of the colour wheel either way.
    hue: Annotated[float, Bounds(0, 0.5)] = 0.05
    #: Probability of a Gaussian blur of the crop.
    blur_prob: Probability = 0.3
    #: Standard deviation of the Gaussian noise added to the image (pixel values in [0, 1]).
    noise_std: NonNegative = 0.03


@dataclass
class SourceSamplingConfig:
    """How source images are drawn: uniform epochs, or class-balanced (rare classes more often)."""

    #: uniform: every source image once per epoch; class_balanced: images holding rare classes more often
    #: (DAFormer's rare-class sampling).
    mode: Literal["uniform", "class_balanced"] = "uniform"
    #: Class-balanced: P(class) is proportional to exp((1 - pixel share) / temperature) (DAFormer: 0.01).
    temperature: Positive = 0.01
    #: Class-balanced: an image holds a class when it covers more than this share of its label's
    #: pixels (DAFormer: 3000 pixels of a 1914x1052 GTA5 label, 0.00149).
    min_share: Probability = 0.00149
    #: Class-balanced: a crop is made afresh (up to 10 times) while it holds no more than
    #: min_crop_ratio * min_share * the label's pixel count of the drawn class (DAFormer: 0.5; 0: one crop).
    min_crop_ratio: NonNegative = 0.5


@dataclass
class DataConfig:
    """Source (labelled), target (unlabelled) and target validation sets."""

    #: The class set: a packaged name (cityscapes19, cityscapes7, synthia16, synthia13) or the
    #: path of a class file (names, colours, evaluation subsets, raw label mappings).
    classes: str = "cityscapes19"
    source: DatasetConfig = field(default_factory=DatasetConfig)
    target: DatasetConfig | None = None
    val: DatasetConfig | None = None
    source_augment: AugmentConfig = field(default_factory=AugmentConfig)
    target_augment: AugmentConfig = field(default_factory=AugmentConfig)
    source_sampling: SourceSamplingConfig = field(default_factory=SourceSamplingConfig)
    #: Source images per optimiser step over all processes (the global batch); self-training adds as many
    #: target images.
    batch_size: Count = 2
    #: DataLoader worker processes per training process (0: load in the training process).
    num_workers: NonNegativeInt = 2
    #: Evaluation subsets of the class set, by size (e.g. 19/16/13); the first is the headline
    #: mIoU. Empty: every subset the class set defines, the whole set first.
    eval_subsets: list[ClassCount] = field(default_factory=list)


@dataclass
class ModelConfig:
    """Segmentor: a registered encoder and decode head (drsl.models)."""

    #: Encoder (drsl.models.registry.BACKBONES): torchvision ResNet-101/50 (dilated; ImageNet files),
    #: resnet101_deeplab (DeepLab-v2's Caffe ResNet-101: the COCO init file), the light dilated CPU
    #: backbone, timm's EfficientNet-Lite0 (ImageNet weights bundled offline), or SegFormer's Mix
    #: Transformer MiT-B0 ... B5 (four maps at strides 4 to 32; SegFormer or Hugging Face ImageNet files).
    #: timm/NAME is any timm encoder with features_only (its ImageNet normalisation, weights from
    #: model.pretrained); plug-ins register more (docs/extending.md).
    backbone: Annotated[str, Registered("drsl.models.registry:BACKBONES")] = "resnet101"
    #: Stride of the deepest encoder map: deeper stages are dilated instead (light: 8 only; MiT: 32 only).
    output_stride: Literal[8, 16, 32] = 8
    #: Decode head (drsl.models.registry.DECODERS): "aspp" is DeepLab-v2's ASPP classifier on the
    #: deepest encoder map (the map DRSL's MMDL head then reads); "deeplabv3plus" a light
    #: DeepLab-v3+ decoder (1x1 + image-pooling ASPP, stride-4 skip; MMDL reads its stride-4 output);
    #: "daformer" DAFormer's context-aware fusion of all maps at the shallowest map's stride (MMDL
    #: reads the fusion).
    decoder: Annotated[str, Registered("drsl.models.registry:DECODERS")] = "aspp"
    #: ASPP variant: "full" sums rates 6/12/18/24; "rates_6_12" is the two-branch variant of some public code.
    aspp: Literal["full", "rates_6_12"] = "full"
    #: Width of the deeplabv3plus decoder (its fused features).
    decoder_channels: Count = 128
    #: Classes predicted; null: the size of the class set (data.classes), which it must equal.
    num_classes: ClassCount | None = None
    #: Width multiplier of the light backbone (stage channels 16w, 32w, 64w, 128w).
    light_width: Count = 2
    #: Residual blocks per stage of the light backbone.
    light_depth: Count = 1
    #: Initial encoder weights: a weights file (torchvision ImageNet, DeepLab init, ...: see
    #: docs/datasets.md), "bundled" for the file an installed package ships (efficientnet_lite0),
    #: or null for random initialisation.
    pretrained: str | None = None
    #: Encoder stages, counted from the input (the stem belongs to the first), whose weights and
    #: BatchNorm statistics stay as loaded from model.pretrained (mmsegmentation's frozen_stages).
    frozen_stages: Annotated[int, Bounds(0, 4)] = 0
    #: Every encoder BatchNorm keeps the statistics it was loaded with (the DeepLab-v2 practice at
    #: small batches; needed for DDP on CPU, which has no SyncBatchNorm).
    freeze_bn: bool = False
    #: BatchNorm statistics computed over all processes of a multi-GPU run (SyncBatchNorm; CUDA only).
    sync_bn: bool = False


@dataclass
class OptimConfig:
    """SGD or AdamW with poly learning-rate decay; the heads get ``head_lr_mult`` times the base LR."""

    #: sgd (the DeepLab-v2 lineage) or adamw (DAFormer: lr 6e-5, weight_decay 0.01).
    name: Literal["sgd", "adamw"] = "sgd"
    #: Base learning rate (the encoder's; the heads get head_lr_mult times it), at the end of any warm-up.
    lr: Positive = 2.5e-4
    #: SGD only.
    momentum: Momentum = 0.9
    #: AdamW only: (beta1, beta2).
    betas: Annotated[list[Momentum], Bounds(length=2)] = field(default_factory=lambda: [0.9, 0.999])
    #: L2 weight decay (SGD) or decoupled weight decay (AdamW).
    weight_decay: NonNegative = 5e-4
    #: Weight decay also on the encoder's normalisation layers and on position terms (DAFormer:
    #: false; the heads' normalisation layers are decayed either way, as in DAFormer).
    decay_norms: bool = True
    #: poly: warm-up ramp (i+1)/W to the base LR, then (1 - i/T)^power. daformer: (1 - i/T)^power
    #: throughout, times a linear ramp from warmup_ratio to 1 over warmup_iters (mmcv, DAFormer).
    schedule: Literal["poly", "daformer"] = "poly"
    #: Exponent of the poly decay (1 - i/T)^power over the T = train.iterations iterations.
    poly_power: NonNegative = 0.9
    #: Learning-rate multiplier of the decode head and the MMDL head over the encoder's.
    head_lr_mult: Positive = 10.0
    #: Iterations of learning-rate warm-up at the start (0: none); the ramp's shape follows optim.schedule.
    warmup_iters: NonNegativeInt = 0
    #: daformer schedule: the LR multiplier at iteration 0 of the warm-up.
    warmup_ratio: Annotated[float, Bounds(0, 1, low_open=True)] = 1e-6


@dataclass
class TrainConfig:
    """The iteration loop."""

    #: Optimiser steps of the whole run (all rounds of the rounds host together).
    iterations: NonNegativeInt = 20000
    #: Split every batch into this many micro-batches (gradient accumulation).
    grad_accum: Count = 1
    #: Mixed precision of the training forward: bf16 or fp16 autocast (fp16 with a gradient scaler), none: float32.
    amp: Literal["none", "bf16", "fp16"] = "none"
    #: Model and image batches in NHWC memory layout; "auto": on CUDA only (cuDNN prefers NHWC).
    channels_last: bool | Literal["auto"] = "auto"
    #: cuDNN autotuning of convolution algorithms; "auto": on for CUDA unless ``deterministic``.
    cudnn_benchmark: bool | Literal["auto"] = "auto"
    #: torch.compile the segmentor (first steps are slow while it compiles; CUDA or a C++ compiler).
    compile: bool = False
    #: Iterations between two log records (metrics.jsonl, TensorBoard, train.log), each the mean since the last
    #: (0: none).
    log_every: NonNegativeInt = 50
    #: Iterations between two evaluations on data.val during training (0: only the final one).
    eval_every: NonNegativeInt = 0
    #: Iterations between two checkpoints (latest.pt and iter_N.pt, the last 3 kept; 0: only the final one).
    checkpoint_every: NonNegativeInt = 1000
    #: Iterations between two TensorBoard panels of a source and a target image with their predictions (0: none).
    panel_every: NonNegativeInt = 0
    #: Ask torch for deterministic algorithms (GPU: cuDNN's deterministic kernels, slower); CPU runs are
    #: deterministic anyway.
    deterministic: bool = False
    #: Experiment trackers that also receive the logged scalars and panels (each needs its
    #: package installed: wandb needs `pip install wandb`).
    trackers: list[Literal["wandb"]] = field(default_factory=list)


@dataclass
class EvalConfig:
    """Inference used by evaluation, pseudo-labelling and prediction."""

    #: whole: the full image in one forward; slide: overlapping crop_size windows at stride, averaged.
    mode: Literal["whole", "slide"] = "whole"
    #: slide mode: [height, width] of each window.
    crop_size: Size = field(default_factory=lambda: [512, 1024])
    #: slide mode: [rows, columns] between window starts (at most crop_size, so windows overlap or touch).
    stride: Size = field(default_factory=lambda: [341, 683])
    #: Average the prediction with that of the horizontally flipped image.
    flip: bool = False
    #: Image scales whose predictions are averaged (multi-scale inference; [1.0]: the image as it is).
    scales: Scales = field(default_factory=lambda: [1.0])
    #: Resize inputs to this [height, width] before inference; predictions return to label size.
    resize: Size | None = None
    #: Images per inference batch (consecutive images of one size are batched).
    batch_size: Count = 4
    #: Autocast dtype of the inference forward; "train" follows train.amp. Probabilities, their
    #: upsampling to label size and the argmax stay float32.
    amp: Literal["train", "none", "bf16", "fp16"] = "train"


@dataclass
class PseudoLabelConfig:
    """Class-balanced pseudo-label selection (CBST)."""

    #: Rounds host: share of each class's predicted target pixels kept as pseudo-labels in the first round.
    portion_start: Portion = 0.2
    #: Rounds host: how much the kept share grows each round.
    portion_step: Annotated[float, Bounds(0, 1)] = 0.1
    #: Rounds host: the largest kept share.
    portion_max: Portion = 0.5
    #: MMDL fusion into selection: none, agree (both heads must agree), confident (veto only where
    #: the MMDL head disagrees and is the more confident head), product (fused posterior).
    #: It starts once the MMDL head is trained: from round 1 (rounds host) or after
    #: adapt.drsl.warmup_iters iterations (online host).
    fusion: Fusion = "agree"
    #: Pseudo-labelling passes (rounds host, drsl pseudo-label) also average the flipped image's prediction.
    flip: bool = False
    #: Image scales whose predictions pseudo-labelling passes (rounds host, drsl pseudo-label) average.
    scales: Scales = field(default_factory=lambda: [1.0])


@dataclass
class DRSLConfig:
    """The DRSL regulariser: MMDL head and stochastic mode alignment (docs/method.md)."""

    #: The regulariser (MMDL head and mode alignment) is built and trained; false: adapt.method=drsl trains
    #: as self-training.
    enabled: bool = True
    #: Modes K per class: each class is modelled as a mixture of K von Mises-Fisher directions.
    num_modes: Count = 3
    #: Dimension of the MMDL head's L2-normalised pixel embeddings.
    embed_dim: Count = 32
    #: Width of the MMDL head's hidden layer (before LayerNorm and ReLU).
    hidden_dim: Count = 128
    #: Concentration of every von Mises-Fisher mode: larger makes p(class, mode | embedding) sharper.
    kappa: Positive = 10.0
    #: Weight of the MMDL loss (class and mode likelihood of source and pseudo-labelled target pixels).
    lambda_mm: NonNegative = 0.3
    #: Weight of the stochastic mode alignment loss (target embeddings pulled to source ones of the same
    #: class and mode).
    lambda_sma: NonNegative = 1.0
    #: Iterations over which both weights ramp linearly from 0 to their value.
    warmup_iters: NonNegativeInt = 0
    #: Mode means learned by gradient, or tracked as an EMA of the embeddings assigned to them.
    mean_update: Literal["gradient", "ema"] = "gradient"
    #: mean_update=ema: momentum of the mode means' moving average.
    mean_ema: Momentum = 0.99
    #: Sinkhorn iterations balancing each class's pixels over its modes (keeps every mode in use).
    sinkhorn_iters: NonNegativeInt = 3
    #: Entropy weight of the Sinkhorn balancing: smaller gives harder assignments.
    sinkhorn_epsilon: Positive = 0.05
    #: Embeddings are sampled on a grid with this stride (in feature pixels) for the losses.
    grid_stride: Count = 1
    #: Mode alignment: pixels drawn per class, mode and domain in each batch (at most).
    samples_per_mode: Count = 32
    #: Mode alignment: pixels a (class, mode) needs in both domains of a batch to be aligned.
    min_pixels_per_mode: Count = 4
    #: Stochastic mode alignment on (false: the MMDL loss alone).
    sma: bool = True
    #: centroid_cosine: 1 - cosine to the centroid of the sampled source embeddings; pairwise: mean squared
    #: distance between the samples.
    sma_distance: Literal["centroid_cosine", "pairwise"] = "centroid_cosine"
    #: No mode-alignment gradient into the source side: only target embeddings move.
    detach_source: bool = True
    #: Optional margin push of target embeddings away from other modes' source centroids (0 = off).
    sma_margin: NonNegative = 0.0
    #: Which features SMA aligns: the MMDL head embeddings or the encoder features.
    sma_space: Literal["embedding", "encoder"] = "embedding"


@dataclass
class MixConfig:
    """The mixing host (DACS, Tranheden et al. 2021; DAFormer, Hoyer et al. 2022)."""

    #: Teacher confidence at or above which a target pixel counts as confident; the teacher-labelled
    #: pixels of a batch weigh its share of confident pixels (DAFormer's pseudo_threshold).
    confidence_threshold: Annotated[float, Bounds(0, 1, high_open=True)] = 0.968
    #: Strong augmentation of the mixed image (kornia 0.5's ColorJitter, as DAFormer): with
    #: probability ``jitter_prob`` a colour jitter whose brightness, contrast, saturation and hue
    #: factors all have this strength, then with probability ``blur_prob`` a Gaussian blur.
    #: DAFormer: strength 0.2; it jitters when U(0, 1) > 0.2 (color_jitter_probability), i.e. with
    #: probability 0.8, and blurs with probability 0.5.
    jitter_strength: Annotated[float, Bounds(0, 1)] = 0.2
    #: Probability of the colour jitter of the mixed image.
    jitter_prob: Probability = 0.8
    #: Probability of the Gaussian blur of the mixed image.
    blur_prob: Probability = 0.5
    #: Shares of the crop's rows, at its top and at its bottom, where the teacher's labels weigh 0
    #: (pasted source pixels keep weight 1): image borders where a camera's rectification and its
    #: own vehicle make the labels unreliable. Each rounds to the nearest row. Shares rather than
    #: DAFormer's rows (pseudo_weight_ignore_top / _bottom: 15 and 120 of its 512-row crops, i.e.
    #: 0.0293 and 0.2344) so that a config keeps its meaning at any crop size.
    pseudo_ignore_top_share: Probability = 0.0
    #: Share of the crop's rows at its bottom where the teacher's labels weigh 0 (see the top share).
    pseudo_ignore_bottom_share: Probability = 0.0
    #: The target pixels of the mixed crop that the DRSL regulariser reads (MMDL and mode
    #: alignment): those at or above ``confidence_threshold`` or every pixel the teacher labels.
    drsl_target: Literal["confident", "all"] = "confident"


@dataclass
class FeatureDistanceConfig:
    """ImageNet feature distance (DAFormer) for pretrained encoders, in source-only training and
    the mixing host: the distance between the encoder's deepest features of the source crops and
    those of a frozen copy of its ImageNet weights (model.pretrained)."""

    #: Weight of the distance in the loss (0 = off; DAFormer: 0.005).
    weight: NonNegative = 0.0
    #: The classes whose source pixels it is measured on (DAFormer: the thing classes).
    classes: list[NonNegativeInt] = field(default_factory=lambda: [6, 7, 11, 12, 13, 14, 15, 16, 17, 18])
    #: A feature cell counts when one class covers at least this share of its label pixels (ignored
    #: pixels counting), else it is left out (DAFormer's fdist_scale_min_ratio: 0.75).
    cell_min_share: Probability = 0.75


@dataclass
class AdaptConfig:
    """How target images are used."""

    #: source_only (also the oracle, whose source is the labelled target), self_training (target
    #: pseudo-labels made by the host, no regulariser; "cbst" is read as this) or drsl (self-training
    #: with the DRSL regulariser).
    method: Literal["source_only", "self_training", "drsl"] = "source_only"
    #: How target pseudo-labels are made: rounds (class-balanced sets, CBST), online (an EMA
    #: teacher labels each target batch) or mix (EMA teacher plus cross-domain ClassMix).
    host: Literal["rounds", "online", "mix"] = "rounds"
    #: Self-training rounds (rounds host); train.iterations is split evenly between them.
    rounds: Count = 2
    #: Weight of the target pseudo-label loss (mixing host: of the mixed crop's loss) beside the source loss.
    lambda_target: NonNegative = 1.0
    #: EMA teacher momentum (online and mix hosts).
    ema_momentum: Momentum = 0.999
    #: Online host: portion of each class kept per batch (class-balanced, like CBST).
    online_portion: Portion = 0.5
    pseudo_label: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    feature_distance: FeatureDistanceConfig = field(default_factory=FeatureDistanceConfig)
    drsl: DRSLConfig = field(default_factory=DRSLConfig)


#: A wait in seconds: more than nothing, at most a day.
Seconds = Annotated[float, Bounds(0, 86400, low_open=True)]


@dataclass
class DistConfig:
    """Several processes (torchrun or RANK/WORLD_SIZE set by hand): how long they wait for each
    other. Launch settings, not part of a run: changing them on resume needs no --change-config."""

    #: Seconds every process waits at start-up for all processes of the job to join; when it runs
    #: out, the missing ranks are named. Covers nodes that start minutes apart (a batch queue).
    start_timeout: Seconds = 300.0
    #: Seconds a collective operation (gradient all-reduce, barrier) waits for the slowest process
    #: before the job fails; must cover the longest work rank 0 does alone (checkpoint writes).
    collective_timeout: Seconds = 1800.0


@dataclass
class Config:
    """A whole run."""

    #: Run name: heads progress lines, logs and report rows.
    name: str = "run"
    #: Python modules imported before the config is checked: their code registers backbones,
    #: decoders, layouts or class sets (docs/extending.md). The lists of a file, its bases and the
    #: overrides add up.
    custom_imports: list[str] = field(default_factory=list)
    #: Seed of everything random in the run: initial weights, sampling, augmentation, regulariser draws.
    seed: Seed = 0
    #: The run folder: checkpoints, config.yaml, train.log, metrics.jsonl, eval.json, pseudo-labels.
    work_dir: str = "runs/run"
    #: Checkpoint to start from (weights only), for example the shared source-only model.
    init_checkpoint: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    dist: DistConfig = field(default_factory=DistConfig)


def check_config(config: Config) -> Config:
    """Check the rules that tie keys together (each key's own type and range is checked when it
    is merged); a ConfigError names the keys. Returns the config."""
    adapt, pseudo, evaluation = config.adapt, config.adapt.pseudo_label, config.eval
    rules = [
        (adapt.method in ("self_training", "drsl") and config.data.target is None,
         f"adapt.method={adapt.method} needs data.target (the unlabelled target images)"),
        (config.data.batch_size % config.train.grad_accum != 0,
         f"data.batch_size={config.data.batch_size} must be divisible by train.grad_accum={config.train.grad_accum}"),
        (adapt.host == "mix" and adapt.method != "source_only"
         and config.data.source_augment.crop_size != config.data.target_augment.crop_size,
         f"adapt.host=mix pastes source pixels onto target crops: data.source_augment.crop_size="
         f"{config.data.source_augment.crop_size} must equal data.target_augment.crop_size="
         f"{config.data.target_augment.crop_size}"),
        (adapt.mix.pseudo_ignore_top_share + adapt.mix.pseudo_ignore_bottom_share >= 1,
         f"adapt.mix.pseudo_ignore_top_share={adapt.mix.pseudo_ignore_top_share} and pseudo_ignore_bottom_share="
         f"{adapt.mix.pseudo_ignore_bottom_share} together cover every row of the crop"),
        (config.model.frozen_stages > 0 and not config.model.pretrained,
         f"model.frozen_stages={config.model.frozen_stages} keeps loaded weights fixed: set model.pretrained"),
        (adapt.feature_distance.weight > 0 and not config.model.pretrained,
         "adapt.feature_distance.weight > 0 compares features with the encoder's ImageNet weights: set model.pretrained"),
        (adapt.feature_distance.weight > 0 and adapt.method != "source_only" and adapt.host != "mix",
         f"adapt.feature_distance is used by source-only training and the mixing host, not adapt.host={adapt.host}"),
        (pseudo.portion_start > pseudo.portion_max,
         f"adapt.pseudo_label.portion_start={pseudo.portion_start} exceeds portion_max={pseudo.portion_max}"),
        (evaluation.mode == "slide" and any(s > c for s, c in zip(evaluation.stride, evaluation.crop_size)),
         f"eval.stride={evaluation.stride} must not exceed eval.crop_size={evaluation.crop_size} (windows would leave gaps)"),
    ]
    for broken, message in rules:
        if broken:
            raise ConfigError(message)
    return config


#: Numbers in exponent notation without a dot (1e-4), which YAML 1.1 leaves as strings.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_type(value: Any, annotation: Any, key: str) -> Any:
    """Return ``value`` coerced to ``annotation`` (int -> float only), or raise ConfigError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        value = _check_type(value, args[0], key)
        for bounds in args[1:]:
            if isinstance(bounds, Registered):
                bounds.check(value, key)
            elif not bounds.holds(value):
                raise ConfigError(f"config key '{key}': {shorten(value)} is out of range (must be {bounds.describe()})")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_type(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}': {shorten(value)} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {type(value).__name__}")
        return [_check_type(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {type(value).__name__}")
        return merge_dict(annotation(), value, prefix=f"{key}.")
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value):
        value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    if annotation is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key}': {shorten(value)} is not a finite number")
    if annotation in (int, float, str, bool):
        if type(value) is not annotation:
            raise ConfigError(
                f"config key '{key}': expected {annotation.__name__}, got {type(value).__name__} "
                f"({shorten(value)})"
            )
        return value
    raise ConfigError(f"config key '{key}': unsupported type {annotation}")


def merge_dict(obj: Any, updates: dict[str, Any], prefix: str = "") -> Any:
    """Strictly merge a nested dict into a dataclass instance (in place) and return it."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {shorten(full)} (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        annotation = hints[key]
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            merge_dict(current, value, prefix=f"{full}.")
        else:
            setattr(obj, key, _check_type(value, annotation, full))
    return obj


#: Keys renamed since runs were first recorded: old dotted key -> new one. Files, overrides and the
#: configs recorded in old run folders and checkpoints are read with the new names.
RENAMED_KEYS = {
    "adapt.mix.fd_weight": "adapt.feature_distance.weight",
    "adapt.mix.fd_classes": "adapt.feature_distance.classes",
}


#: Values renamed since runs were first recorded: dotted key -> {old value: new value}; read like
#: renamed keys.
RENAMED_VALUES = {"adapt.method": {"cbst": "self_training"}}


def current_value(key: str, value: Any) -> Any:
    """``value`` of the dotted ``key`` under its current name (see :data:`RENAMED_VALUES`)."""
    renames = RENAMED_VALUES.get(key, {})
    return renames.get(value, value) if isinstance(value, str) else value


def _parent(data: dict[str, Any], key: str) -> tuple[dict[str, Any] | None, str]:
    """The mapping of ``data`` that holds the dotted ``key`` (None when absent), and its last part."""
    *path, last = key.split(".")
    parent: Any = data
    for part in path:
        parent = parent.get(part) if isinstance(parent, dict) else None
    return (parent if isinstance(parent, dict) else None), last


def rename_keys(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a nested config mapping, changed in place) with each renamed key moved to its new
    place (a value already at the new place wins) and each renamed value given its new name."""
    for old, new in RENAMED_KEYS.items():
        parent, last = _parent(data, old)
        if parent is None or last not in parent:
            continue
        *path, new_last = new.split(".")
        target: Any = data
        for key in path:
            target = target.setdefault(key, {}) if isinstance(target, dict) else None
        if isinstance(target, dict):  # else the merge names the key that is not a mapping
            target.setdefault(new_last, parent.pop(last))
    for key in RENAMED_VALUES:
        parent, last = _parent(data, key)
        if parent is not None and last in parent:
            parent[last] = current_value(key, parent[last])
    return data


def import_custom(data: dict[str, Any]) -> list[str]:
    """Import the modules a config mapping's ``custom_imports`` names (checked: a list of module
    names) and return them."""
    names = _check_type(data.get("custom_imports", []), list[str], "custom_imports")
    from drsl.plugins import import_modules

    import_modules(names, "config key 'custom_imports'")
    return names


def merge_root(config: Config, data: dict[str, Any]) -> Config:
    """Strictly merge a whole nested config mapping (renamed keys read under their new names); its
    ``custom_imports`` are imported first and added to the config's."""
    if "custom_imports" in data:
        added = import_custom(data)
        data = {**data, "custom_imports": list(dict.fromkeys([*config.custom_imports, *added]))}
    return merge_dict(config, rename_keys(data))


def file_error(path: Path, problem: str) -> ConfigError:
    """A ConfigError naming a file and its problem (``PATH: PROBLEM``)."""
    return ConfigError(f"{path}: {problem}")


def _read_yaml(path: Path) -> dict[str, Any]:
    text = read_text_file(path, "config file", file_error)
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {parse_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return data


def _layers(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """The YAML layers of ``path``: its _base_ files (recursively) first, then itself."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config file {path} includes itself through _base_")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(base, str) and base for base in bases):
        raise ConfigError(
            f"config file {path}: _base_ must be a file name or a list of file names, got {shorten(bases)}"
        )
    layers: list[tuple[Path, dict[str, Any]]] = []
    for base in bases:
        layers += _layers(_base_path(base, path), seen + (path,))
    return layers + [(path, data)]


#: The scope of packaged configs in ``_base_``: ``drsl::synth/source_only``.
PACKAGED_SCOPE = "drsl::"


def _base_path(base: str, including: Path) -> Path:
    """The file a ``_base_`` entry of ``including`` names: a packaged config (``drsl::NAME``) or a
    path relative to ``including``'s folder."""
    if not base.startswith(PACKAGED_SCOPE):
        return including.parent / base
    from drsl.configs import packaged_config_path

    try:
        return packaged_config_path(base[len(PACKAGED_SCOPE):])
    except ConfigError as exc:
        raise ConfigError(f"config file {including}: _base_ {shorten(base)}: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` (value as YAML) into its key path and value."""
    if "=" not in text:
        raise ConfigError(f"override {shorten(text)} must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        problem = parse_problem(exc)
        raise ConfigError(f"command-line override {shorten(text)}: the value is not valid YAML ({problem})") from None
    return key.strip().split("."), value


def nest(keys: list[str], value: Any) -> dict[str, Any]:
    """Turn ['a', 'b'], v into {'a': {'b': v}}."""
    out: Any = value
    for key in reversed(keys):
        out = {key: out}
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a Config from defaults, a YAML file with its bases, and dotted overrides."""
    config = Config()
    if path is not None:
        layers = _layers(Path(path))
        for layer_path, data in layers:  # every layer's modules first: a base may name what a child imports
            try:
                import_custom(data)
            except ConfigError as exc:
                raise ConfigError(f"{layer_path}: {exc}") from None
        for layer_path, data in layers:
            try:
                merge_root(config, data)
            except ConfigError as exc:
                raise ConfigError(f"{layer_path}: {exc}") from None
    return apply_overrides(config, overrides or [])


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply dotted ``key.sub=value`` overrides strictly (in place) and return the config; the
    modules of a ``custom_imports=[...]`` override are imported before any override is merged."""
    parsed = [(text, *parse_override(text)) for text in overrides]
    for text, keys, value in parsed:
        if keys == ["custom_imports"]:
            try:
                import_custom({"custom_imports": value})
            except ConfigError as exc:
                raise ConfigError(f"command-line override '{text}': {exc}") from None
    for text, keys, value in parsed:
        try:
            merge_root(config, nest(keys, value))
        except ConfigError as exc:
            raise ConfigError(f"command-line override {shorten(text)}: {exc}") from None
    return check_config(config)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass (for YAML dumps and checkpoints)."""
    return dataclasses.asdict(config)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from :func:`config_to_dict` output, strictly."""
    return check_config(merge_root(Config(), data))


def flat_items(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}`` (mappings flattened, lists kept whole)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat_items(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_diff(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """The dotted keys whose values differ between two configs: key -> (old value, new value)."""
    a, b = flat_items(config_to_dict(old)), flat_items(config_to_dict(new))
    return {key: (a.get(key), b.get(key)) for key in sorted(a.keys() | b.keys()) if a.get(key) != b.get(key)}


def dump_config(config: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
