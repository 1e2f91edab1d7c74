"""MMDL head: per-pixel embedding and the class-aware von Mises-Fisher mixture over it.

Every class ``c`` owns ``K`` unit mean directions ``mu[c, k]`` with uniform mixing weights
``pi[c, k] = 1 / K`` (the balanced mode-assignment term already asks every mode for an equal
share of its class, so learned weights would only be pushed back to uniform). With a shared
concentration ``kappa`` the vMF normaliser cancels, and

    log p(c, k | z) = kappa * mu[c, k] . z - logsumexp_{c', k'} kappa * mu[c', k'] . z

(the ``log pi`` terms are equal for every class and cancel too).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drsl.adaptation.drsl.keys import count_keys
from drsl.adaptation.drsl.sinkhorn import balanced_assignment
from drsl.config import DRSLConfig
from drsl.engine.distributed import all_reduce_sum


def mode_logits(z: Tensor, means: Tensor, kappa: float) -> Tensor:
    """``kappa * mu[c, k] . z`` for embeddings (N, D) and means (C, K, D): (N, C, K), float32."""
    with torch.autocast(device_type=z.device.type, enabled=False):
        return kappa * torch.einsum("nd,ckd->nck", z.float(), means.float())


def mmdl_terms(
    logits: Tensor, labels: Tensor, valid: Tensor, kappa: float, sinkhorn_iters: int, sinkhorn_epsilon: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The two MMDL loss terms per pixel, and the balanced mode assignment.

    ``logits`` (N, C, K) from :func:`mode_logits`, ``labels`` (N,) class ids (any id where not
    ``valid``), ``valid`` (N,) the labelled pixels. Returns ``(nll, assign, q)``: ``-log p(y | z)``
    and the cross-entropy between ``p(k | z, y)`` and ``q``, each (N,) and zero where not valid;
    and ``q`` (N, K), the Sinkhorn assignment of each class's labelled pixels to its modes
    (balanced within the class, computed on the detached scores ``mu[y] . z``). The shapes never
    depend on the labels, so nothing waits for the device.
    """
    num_classes = logits.shape[1]
    nll = F.cross_entropy(logits.logsumexp(2), labels, reduction="none")
    own = logits.gather(1, labels.view(-1, 1, 1).expand(-1, 1, logits.shape[2]))[:, 0]
    groups = torch.where(valid, labels, num_classes)  # unlabelled pixels: a group of their own
    q = balanced_assignment(own.detach() / kappa, groups, num_classes + 1, sinkhorn_iters, sinkhorn_epsilon)
    assign = -(q * own.log_softmax(1)).sum(1)
    return nll * valid, assign * valid, q


class MMDLHead(nn.Module):
    """Per-pixel MLP (a 1x1 conv head) giving L2-normalised embeddings, plus the mode means.

    The hidden layer is normalised with LayerNorm over channels, not BatchNorm: pixels stay
    independent, so ``detach_source`` really stops all SMA gradient into the source features (batch
    statistics would carry it there), and training and evaluation compute the same function.
    The means are an ``nn.Parameter`` (normalised in every use) when ``cfg.mean_update`` is
    "gradient", else a buffer moved by :meth:`update_means`.
    """

    def __init__(self, in_channels: int, num_classes: int, cfg: DRSLConfig, seed: int = 0) -> None:
        super().__init__()
        self.kappa = cfg.kappa
        self.mean_ema = cfg.mean_ema
        self.net = nn.Sequential(
            nn.Linear(in_channels, cfg.hidden_dim, bias=False),
            nn.LayerNorm(cfg.hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.hidden_dim, cfg.embed_dim),
        )
        generator = torch.Generator().manual_seed(seed)
        init = torch.randn(num_classes, cfg.num_modes, cfg.embed_dim, generator=generator)
        init = F.normalize(init, dim=-1)
        if cfg.mean_update == "gradient":
            self.mu = nn.Parameter(init)
        else:
            self.register_buffer("mu", init)

    def forward(self, pixels: Tensor) -> Tensor:
        """Embeddings (N, D), unit norm, float32, of pixel features (N, F)."""
        return F.normalize(self.net(pixels).float(), dim=1)

    def embed_map(self, feats: Tensor) -> Tensor:
        """Embeddings (B, h, w, D) of a feature map (B, F, h, w)."""
        b, f, h, w = feats.shape
        return self(feats.permute(0, 2, 3, 1).reshape(-1, f)).view(b, h, w, -1)

    def means(self) -> Tensor:
        """Unit mode means (C, K, D)."""
        return F.normalize(self.mu, dim=-1)

    def logits(self, z: Tensor) -> Tensor:
        """``kappa * mu[c, k] . z``: (N, C, K)."""
        return mode_logits(z, self.means(), self.kappa)

    @torch.no_grad()
    def update_means(self, z: Tensor, labels: Tensor, modes: Tensor, valid: Tensor) -> None:
        """EMA step of the means ("ema" mode) toward the normalised mean of their labelled pixels.

        ``modes`` are hard assignments; sums and counts are added over every process, so all of
        them move their means alike; modes without pixels keep their mean.
        """
        c, k, d = self.mu.shape
        keys = labels * k + modes
        sums = z.new_zeros(c * k, d).index_add_(0, keys, z.float() * valid[:, None])
        sums = all_reduce_sum(sums).view(c, k, d)
        present = (all_reduce_sum(count_keys(keys, c * k, valid)) > 0).view(c, k, 1)
        moved = self.mean_ema * self.means() + (1 - self.mean_ema) * F.normalize(sums, dim=-1)
        self.mu.copy_(torch.where(present, F.normalize(moved, dim=-1), self.mu))
