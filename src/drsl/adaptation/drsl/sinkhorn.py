"""Balanced soft assignment of rows to columns (Sinkhorn-Knopp), one problem per row group."""

from __future__ import annotations

import torch
from torch import Tensor

from drsl.adaptation.drsl.keys import count_keys


def group_logsumexp(values: Tensor, groups: Tensor, num_groups: int) -> Tensor:
    """``logsumexp`` of the rows of ``values`` (N, K) within each group: (num_groups, K).

    Groups without rows get ``-inf``.
    """
    k = values.shape[1]
    index = groups[:, None].expand(-1, k)
    peak = values.new_full((num_groups, k), float("-inf"))
    peak = peak.scatter_reduce(0, index, values, reduce="amax", include_self=True)
    total = values.new_zeros((num_groups, k)).index_add_(0, groups, (values - peak[groups]).exp())
    return peak + total.log()


@torch.no_grad()
def balanced_assignment(
    scores: Tensor, groups: Tensor, num_groups: int, iters: int, epsilon: float
) -> Tensor:
    """Soft assignment (N, K) of every row to the K columns, balanced within each row group.

    Sinkhorn-Knopp in the log domain on ``exp(scores / epsilon)``, all groups at once: each
    iteration gives every column of a group a mass of ``n_g / K`` and then renormalises every row
    to sum to 1. The result is a distribution per row; its per-group column sums approach
    ``n_g / K`` as ``iters`` grows (``iters = 0`` is a plain softmax).
    """
    log_q = scores.float() / epsilon
    counts = count_keys(groups, num_groups).clamp_min(1).to(log_q.dtype)
    log_target = (counts / log_q.shape[1]).log()
    for _ in range(iters):
        log_q = log_q - group_logsumexp(log_q, groups, num_groups)[groups]
        log_q = log_q + log_target[groups, None]
        log_q = log_q - log_q.logsumexp(1, keepdim=True)
    return log_q.softmax(1)
