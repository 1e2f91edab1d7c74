"""DRSL regulariser: MMDL loss on labelled/pseudo-labelled pixels plus stochastic mode alignment.

Labels come at image resolution and are reduced to the feature grid by majority (mode) pooling:
every image pixel falls in the feature cell ``(i * h // H, j * w // W)`` and the cell takes the most
frequent value among its pixels, "ignore" counting as one more value (ties go to the lowest class
id), so a cell that is mostly ignored stays ignored. The losses use the feature pixels on a grid of
stride ``cfg.grid_stride`` (offset 0); unlabelled ones take part with weight zero, so that no shape
depends on the labels (nothing waits for the device) and every parameter gets a gradient on every
process. The loss terms are means over the labelled pixels (MMDL) or aligned modes (SMA) of all
processes (:func:`drsl.engine.distributed.global_mean`), and the mode usage is counted over all of
them, so every process keeps the same statistics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drsl.adaptation.drsl.keys import count_keys
from drsl.adaptation.drsl.mmdl_head import MMDLHead, mmdl_terms
from drsl.adaptation.drsl.mode_alignment import sample_pairs, sma_loss
from drsl.config import DRSLConfig
from drsl.data.labels import IGNORE_INDEX
from drsl.engine.distributed import all_reduce_sum, global_mean

#: Momentum of the running mode-usage fractions.
USAGE_MOMENTUM = 0.9


def downsample_labels(labels: Tensor, size: tuple[int, int], num_classes: int, min_share: float = 0.0) -> Tensor:
    """Majority-pool labels (B, H, W) to ``size`` (h, w); values outside [0, C) are ignore.

    A cell without any image pixel (labels coarser than ``size``) is ignore, and so is a cell whose
    majority value covers less than ``min_share`` of its pixels (ignored pixels counting).
    """
    b, big_h, big_w = labels.shape
    h, w = size
    labels = labels.long()
    valid = (labels >= 0) & (labels < num_classes)
    if (big_h, big_w) == (h, w):
        return torch.where(valid, labels, IGNORE_INDEX)
    values = num_classes + 1
    rows = torch.arange(big_h, device=labels.device) * h // big_h
    cols = torch.arange(big_w, device=labels.device) * w // big_w
    cell = rows[:, None] * w + cols[None, :]
    image = torch.arange(b, device=labels.device)[:, None, None] * (h * w)
    index = (image + cell) * values + torch.where(valid, labels, num_classes)
    counts = count_keys(index.flatten(), b * h * w * values).view(b, h, w, values)
    top, out = counts.max(-1)
    mixed = top < min_share * counts.sum(-1)
    return torch.where((out == num_classes) | (top == 0) | mixed, IGNORE_INDEX, out)


class DRSLRegularizer(nn.Module):
    """The MMDL head, its mode means and mode usage, and the DRSL loss (docs/method.md).

    ``seed`` seeds the mode-mean initialisation and the generator that draws SMA samples. That
    generator lives on the device of the features (one of its own is seeded alike on first use
    on another device); its state is read and restored with :meth:`get_rng_state` /
    :meth:`set_rng_state`. The buffer ``usage`` (saved with the weights) holds the running
    fraction (C, K) of each class's labelled pixels assigned to each mode.
    """

    def __init__(self, in_channels: int, num_classes: int, cfg: DRSLConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.num_modes = cfg.num_modes
        self.seed = seed
        self.head = MMDLHead(in_channels, num_classes, cfg, seed)
        self.register_buffer("usage", torch.full((num_classes, cfg.num_modes), 1 / cfg.num_modes))
        self.generator = torch.Generator().manual_seed(seed)
        self._generator_device = torch.device("cpu")
        self._pending_rng: Tensor | None = None

    def get_rng_state(self) -> Tensor:
        """State of the SMA sampling generator."""
        return self._pending_rng if self._pending_rng is not None else self.generator.get_state()

    def set_rng_state(self, state: Tensor) -> None:
        """Restore the SMA sampling generator (applied on its device at the next draw)."""
        self._pending_rng = state

    def _generator(self, device: torch.device) -> torch.Generator:
        """The sampling generator on ``device``, with a restored state applied."""
        if device != self._generator_device:
            self.generator = torch.Generator(device).manual_seed(self.seed)
            self._generator_device = device
        state, self._pending_rng = self._pending_rng, None
        # A state saved on another kind of device (CPU vs CUDA generator) cannot continue here.
        if state is not None and state.numel() == self.generator.get_state().numel():
            self.generator.set_state(state)
        return self.generator

    def class_posterior(self, feats: Tensor) -> Tensor:
        """``p(c | z)`` (B, C, h, w) of encoder features (B, F, h, w)."""
        logits = self.head.logits(self.head.embed_map(feats).flatten(0, 2))
        b, _, h, w = feats.shape
        return logits.logsumexp(2).softmax(1).view(b, h, w, -1).permute(0, 3, 1, 2)

    def mode_map(self, feats: Tensor, labels: Tensor) -> Tensor:
        """``argmax_k p(k | z, y)`` (B, h, w), 255 where the label is ignore.

        ``labels`` (B, h, w) at feature resolution (other resolutions are majority-pooled).
        """
        b, _, h, w = feats.shape
        labels = downsample_labels(labels, (h, w), self.num_classes).flatten()
        logits = self.head.logits(self.head.embed_map(feats).flatten(0, 2))
        valid = labels != IGNORE_INDEX
        modes = logits[torch.arange(len(labels), device=labels.device), labels * valid].argmax(1)
        return torch.where(valid, modes, IGNORE_INDEX).view(b, h, w)

    def _grid_pixels(self, feats: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Features (N, F) and labels (N,) of the grid pixels of one domain."""
        stride = self.cfg.grid_stride
        labels = downsample_labels(labels, feats.shape[-2:], self.num_classes)
        grid = feats[:, :, ::stride, ::stride].permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
        return grid, labels[:, ::stride, ::stride].flatten()

    def _ramp(self, step: int | None) -> float:
        """Linear warm-up factor of both loss weights."""
        if step is None or self.cfg.warmup_iters <= 0:
            return 1.0
        return min(1.0, max(0, step) / self.cfg.warmup_iters)

    @torch.no_grad()
    def _track_usage(self, keys: Tensor, valid: Tensor) -> Tensor:
        """Update the running mode usage (training only) from the labelled pixels of every
        process; return the mean mode entropy of the classes present (1 = balanced, and 1 when
        none is present). The entropy of a class's mode fractions is divided by ``log K``.
        """
        counts = all_reduce_sum(count_keys(keys, self.usage.numel(), valid)).view_as(self.usage).float()
        total = counts.sum(1, keepdim=True)
        present = total > 0
        frac = counts / total.clamp_min(1)
        if self.training:
            moved = USAGE_MOMENTUM * self.usage + (1 - USAGE_MOMENTUM) * frac
            self.usage.copy_(torch.where(present, moved, self.usage))
        if self.num_modes == 1:
            return torch.ones((), device=keys.device)
        entropy = -(frac * frac.clamp_min(1e-12).log()).sum(1) / math.log(self.num_modes)
        classes = present[:, 0].sum()
        mean = (entropy * present[:, 0]).sum() / classes.clamp_min(1)
        return torch.where(classes > 0, mean, 1.0)

    def forward(
        self,
        src_feats: Tensor,
        src_labels: Tensor,
        tgt_feats: Tensor | None = None,
        tgt_labels: Tensor | None = None,
        step: int | None = None,
    ) -> tuple[Tensor, dict[str, Tensor | float]]:
        """``ramp * (lambda_mm * MMDL + lambda_sma * SMA)`` and its logs (0-d device tensors).

        Features (B, F, h, w) keep their graph (the loss reaches the encoder); labels (B, H, W)
        with 255 = ignore. Without target features or labels only the source enters MMDL and SMA
        is zero.
        """
        cfg = self.cfg
        domains = [(src_feats, src_labels)]
        if tgt_feats is not None and tgt_labels is not None:
            domains.append((tgt_feats, tgt_labels))
        grids = [self._grid_pixels(f, y) for f, y in domains]
        feats = torch.cat([f for f, _ in grids])
        labels = torch.cat([y for _, y in grids])
        valid = labels != IGNORE_INDEX
        classes = torch.where(valid, labels, 0)
        z = self.head(feats)
        logits = self.head.logits(z)
        nll, assign, q = mmdl_terms(logits, classes, valid, cfg.kappa, cfg.sinkhorn_iters, cfg.sinkhorn_epsilon)
        count = valid.sum()
        nll, assign = global_mean(nll.sum(), count), global_mean(assign.sum(), count)
        mmdl = nll + assign
        modes = logits.detach().gather(1, classes.view(-1, 1, 1).expand(-1, 1, self.num_modes))[:, 0].argmax(1)
        keys = classes * self.num_modes + modes
        sma, pairs = z.sum() * 0.0, torch.zeros((), dtype=torch.long, device=z.device)
        if cfg.sma and len(domains) > 1:
            space = z if cfg.sma_space == "embedding" else F.normalize(feats.float(), dim=1)
            sma, pairs = self._sma(space, keys, valid, len(grids[0][1]))
        entropy = self._track_usage(keys, valid)
        if self.training and cfg.mean_update == "ema":
            self.head.update_means(z.detach(), classes, q.argmax(1), valid)
        ramp = self._ramp(step)
        loss = ramp * (cfg.lambda_mm * mmdl + cfg.lambda_sma * sma)
        logs: dict[str, Tensor | float] = {
            "loss": loss.detach(),
            "mmdl": mmdl.detach(),
            "mmdl_nll": nll.detach(),
            "mmdl_assign": assign.detach(),
            "sma": sma.detach(),
            "sma_pairs": pairs,
            "mode_entropy": entropy,
            "labelled_pixels": count,
            "ramp": ramp,
        }
        return loss, logs

    def _sma(self, vectors: Tensor, keys: Tensor, valid: Tensor, num_source: int) -> tuple[Tensor, Tensor]:
        """SMA loss between the source (first ``num_source``) and target vectors; aligned keys."""
        sample = sample_pairs(
            keys[:num_source], valid[:num_source], keys[num_source:], valid[num_source:],
            self.usage.numel(), self.cfg.min_pixels_per_mode, self.cfg.samples_per_mode,
            self._generator(keys.device),
        )
        total, aligned = sma_loss(
            vectors[:num_source], vectors[num_source:], sample, self.usage.numel(),
            self.cfg.sma_distance, self.cfg.detach_source, self.cfg.sma_margin,
        )
        return global_mean(total, aligned), aligned
