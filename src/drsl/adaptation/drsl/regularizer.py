"""DRSL regulariser: MMDL loss on labelled/pseudo-labelled pixels plus stochastic mode alignment.

Labels come at image resolution and are reduced to the feature grid by majority (mode) pooling:
every image pixel falls in the feature cell ``(i * h // H, j * w // W)`` and the cell takes the most
frequent value among its pixels, "ignore" counting as one more value (ties go to the lowest class
id), so a cell that is mostly ignored stays ignored. The losses use the feature pixels on a grid of
stride ``cfg.grid_stride`` (offset 0) and keep the labelled ones.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drsl.adaptation.drsl.mmdl_head import MMDLHead, mmdl_terms
from drsl.adaptation.drsl.mode_alignment import sample_pairs, sma_loss
from drsl.config import DRSLConfig
from drsl.data.labels import IGNORE_INDEX

#: Momentum of the running mode-usage fractions.
USAGE_MOMENTUM = 0.9


def downsample_labels(labels: Tensor, size: tuple[int, int], num_classes: int) -> Tensor:
    """Majority-pool labels (B, H, W) to ``size`` (h, w); values outside [0, C) are ignore.

    A cell without any image pixel (labels coarser than ``size``) is ignore.
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
    counts = torch.bincount(index.flatten(), minlength=b * h * w * values).view(b, h, w, values)
    top, out = counts.max(-1)
    return torch.where((out == num_classes) | (top == 0), IGNORE_INDEX, out)


class DRSLRegularizer(nn.Module):
    """The MMDL head, its mode means and mode usage, and the DRSL loss (docs/method.md).

    ``seed`` seeds the mode-mean initialisation and the generator that draws SMA samples; the
    generator's state is read and restored with :meth:`get_rng_state` / :meth:`set_rng_state`.
    """

    def __init__(self, in_channels: int, num_classes: int, cfg: DRSLConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.num_modes = cfg.num_modes
        self.head = MMDLHead(in_channels, num_classes, cfg, seed)
        self.register_buffer("usage", torch.full((num_classes, cfg.num_modes), 1 / cfg.num_modes))
        self.generator = torch.Generator().manual_seed(seed)

    def get_rng_state(self) -> Tensor:
        """State of the SMA sampling generator."""
        return self.generator.get_state()

    def set_rng_state(self, state: Tensor) -> None:
        """Restore the SMA sampling generator."""
        self.generator.set_state(state)

    def mode_usage(self) -> Tensor:
        """Running fraction (C, K) of each class's labelled pixels assigned to each mode."""
        return self.usage

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
    def _track_usage(self, labels: Tensor, modes: Tensor) -> float:
        """Update the running mode usage (training only); return the batch's mean mode entropy.

        The entropy of each present class's mode fractions, divided by ``log K`` (1 = balanced).
        """
        counts = torch.bincount(labels * self.num_modes + modes, minlength=self.usage.numel())
        counts = counts.view_as(self.usage).float()
        present = counts.sum(1) > 0
        frac = counts[present] / counts[present].sum(1, keepdim=True)
        if self.training:
            self.usage[present] = USAGE_MOMENTUM * self.usage[present] + (1 - USAGE_MOMENTUM) * frac
        if self.num_modes == 1 or not bool(present.any()):
            return 1.0
        entropy = -(frac * frac.clamp_min(1e-12).log()).sum(1) / math.log(self.num_modes)
        return float(entropy.mean())

    def forward(
        self,
        src_feats: Tensor,
        src_labels: Tensor,
        tgt_feats: Tensor | None = None,
        tgt_labels: Tensor | None = None,
        step: int | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """``ramp * (lambda_mm * MMDL + lambda_sma * SMA)`` and float logs.

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
        domain = torch.cat([torch.full_like(y, d) for d, (_, y) in enumerate(grids)])
        keep = labels != IGNORE_INDEX
        feats, labels, domain = feats[keep], labels[keep], domain[keep]
        z = self.head(feats)
        zero = z.sum() * 0.0
        mmdl, nll, assign, sma, pairs, entropy = zero, zero, zero, zero, 0, 1.0
        if len(labels) > 0:
            logits = self.head.logits(z)
            nll, assign, q = mmdl_terms(
                logits, labels, cfg.kappa, cfg.sinkhorn_iters, cfg.sinkhorn_epsilon
            )
            mmdl = nll + assign
            modes = logits.detach()[torch.arange(len(labels), device=z.device), labels].argmax(1)
            if cfg.sma and len(domains) > 1:
                space = z if cfg.sma_space == "embedding" else F.normalize(feats.float(), dim=1)
                sma, pairs = self._sma(space, labels * self.num_modes + modes, domain)
            entropy = self._track_usage(labels, modes)
            if self.training and cfg.mean_update == "ema":
                self.head.update_means(z.detach(), labels, q.argmax(1))
        ramp = self._ramp(step)
        loss = ramp * (cfg.lambda_mm * mmdl + cfg.lambda_sma * sma)
        logs = {
            "loss": float(loss.detach()),
            "mmdl": float(mmdl.detach()),
            "mmdl_nll": float(nll.detach()),
            "mmdl_assign": float(assign.detach()),
            "sma": float(sma.detach()),
            "sma_pairs": float(pairs),
            "mode_entropy": entropy,
            "labelled_pixels": float(len(labels)),
            "ramp": ramp,
        }
        return loss, logs

    def _sma(self, vectors: Tensor, keys: Tensor, domain: Tensor) -> tuple[Tensor, int]:
        """SMA loss between source (domain 0) and target (domain 1) vectors, and aligned pairs."""
        src, tgt = domain == 0, domain == 1
        sample = sample_pairs(
            keys[src],
            keys[tgt],
            self.usage.numel(),
            self.cfg.min_pixels_per_mode,
            self.cfg.samples_per_mode,
            self.generator,
        )
        loss = sma_loss(
            vectors[src],
            vectors[tgt],
            sample,
            self.usage.numel(),
            self.cfg.sma_distance,
            self.cfg.detach_source,
            self.cfg.sma_margin,
        )
        return loss, len(sample.aligned)
