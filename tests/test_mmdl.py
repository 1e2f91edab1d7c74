"""MMDL head: mixture likelihood, Sinkhorn balance, posteriors, mode usage, EMA means, state."""

from __future__ import annotations

import math

import pytest
import torch

from drsl.adaptation.drsl import DRSLRegularizer
from drsl.adaptation.drsl.mmdl_head import mmdl_terms, mode_logits
from drsl.adaptation.drsl.sinkhorn import balanced_assignment
from drsl.config import DRSLConfig

# 2 classes x 2 modes in 2-D, 3 unit embeddings.
MEANS = [[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.6, -0.8]]]
Z = [[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]]
LABELS = [0, 1, 1]
KAPPA = 2.0


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def hand_nll() -> float:
    """Mean of -log p(y | z) = -log(sum_k e^{kappa mu_yk.z} / sum_ck e^{kappa mu_ck.z})."""
    total = 0.0
    for z, y in zip(Z, LABELS):
        own = sum(math.exp(KAPPA * _dot(m, z)) for m in MEANS[y])
        every = sum(math.exp(KAPPA * _dot(m, z)) for cls in MEANS for m in cls)
        total += -math.log(own / every)
    return total / len(Z)


def hand_assign(epsilon: float) -> float:
    """Mean cross-entropy between softmax_k(mu_yk.z / eps) and p(k | z, y) (no Sinkhorn step)."""
    total = 0.0
    for z, y in zip(Z, LABELS):
        scores = [_dot(m, z) for m in MEANS[y]]
        target = [math.exp(s / epsilon) for s in scores]
        target = [t / sum(target) for t in target]
        model = [math.exp(KAPPA * s) for s in scores]
        total += -sum(t * math.log(m / sum(model)) for t, m in zip(target, model))
    return total / len(Z)


def test_mmdl_terms_match_hand_computation() -> None:
    logits = mode_logits(torch.tensor(Z), torch.tensor(MEANS), KAPPA)
    valid = torch.ones(3, dtype=torch.bool)
    nll, assign, q = mmdl_terms(logits, torch.tensor(LABELS), valid, KAPPA, 0, 0.5)
    assert nll.mean().item() == pytest.approx(hand_nll(), rel=1e-5)
    assert assign.mean().item() == pytest.approx(hand_assign(0.5), rel=1e-5)
    assert torch.allclose(q.sum(1), torch.ones(3))
    # An unlabelled pixel adds nothing and changes nothing for the others.
    more = torch.cat([logits, logits[:1]])
    nll4, assign4, _ = mmdl_terms(more, torch.tensor([*LABELS, 1]), torch.tensor([True] * 3 + [False]), KAPPA, 3, 0.5)
    nll3, assign3, _ = mmdl_terms(logits, torch.tensor(LABELS), valid, KAPPA, 3, 0.5)
    assert nll4[3] == 0 and assign4[3] == 0
    assert torch.allclose(nll4[:3], nll3) and torch.allclose(assign4[:3], assign3)


def test_sinkhorn_balances_skewed_scores_within_each_group() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(90, 3, generator=gen) * 0.2
    scores[:, 0] += 0.5  # every row prefers column 0
    groups = torch.cat([torch.zeros(60), torch.full((30,), 2)]).long()
    plain = balanced_assignment(scores, groups, 3, 0, 0.05)
    assert plain[:60].sum(0)[0] > 55  # the skew without balancing
    q = balanced_assignment(scores, groups, 3, 50, 0.05)
    assert torch.allclose(q.sum(1), torch.ones(90), atol=1e-5)
    assert torch.allclose(q[:60].sum(0), torch.full((3,), 20.0), atol=0.05)
    assert torch.allclose(q[60:].sum(0), torch.full((3,), 10.0), atol=0.05)
    few = balanced_assignment(scores, groups, 3, 3, 0.05)
    assert (few[:60].sum(0) - 20).abs().max() < (plain[:60].sum(0) - 20).abs().max() / 4


def test_class_posterior_sums_to_one() -> None:
    reg = DRSLRegularizer(6, 5, DRSLConfig(hidden_dim=8, embed_dim=4, num_modes=2)).eval()
    post = reg.class_posterior(torch.randn(2, 6, 5, 7))
    assert post.shape == (2, 5, 5, 7)
    assert torch.allclose(post.sum(1), torch.ones(2, 5, 7), atol=1e-5)
    assert (post >= 0).all()


def _cluster_batch(gen: torch.Generator, centres: torch.Tensor, b: int = 4, size: int = 16):
    """Features (B, F, h, w) drawn around ``centres`` (C, K, F), their class and cluster maps."""
    num_classes, num_modes, channels = centres.shape
    cls = torch.randint(0, num_classes, (b, size, size), generator=gen)
    cluster = torch.randint(0, num_modes, (b, size, size), generator=gen)
    noise = 0.3 * torch.randn(b, size, size, channels, generator=gen)
    return (centres[cls, cluster] + noise).permute(0, 3, 1, 2).contiguous(), cls, cluster


@pytest.mark.parametrize("mean_update", ["gradient", "ema"])
def test_modes_stay_in_use_and_recover_clusters(mean_update: str) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    centres = torch.randn(2, 3, 8, generator=gen) * 2.0
    cfg = DRSLConfig(hidden_dim=32, embed_dim=8, mean_update=mean_update)
    reg = DRSLRegularizer(8, 2, cfg)
    opt = torch.optim.Adam(reg.parameters(), lr=1e-2)
    for _ in range(100):
        src, src_y, _ = _cluster_batch(gen, centres)
        tgt, tgt_y, _ = _cluster_batch(gen, centres)
        loss, _ = reg(src, src_y, tgt, tgt_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (reg.usage > 0.1).all()
    reg.eval()
    feats, cls, cluster = _cluster_batch(gen, centres, b=8)
    with torch.no_grad():
        modes = reg.mode_map(feats, cls)
    for c in range(2):
        joint = torch.zeros(3, 3)
        joint.index_put_((cluster[cls == c], modes[cls == c]), torch.ones(1), accumulate=True)
        # every cluster maps (almost) entirely to one mode, and distinct clusters to distinct modes
        assert (joint.max(1).values / joint.sum(1) > 0.95).all()
        assert len(set(joint.argmax(1).tolist())) == 3


def test_ema_means_move_only_in_training() -> None:
    reg = DRSLRegularizer(6, 3, DRSLConfig(hidden_dim=8, embed_dim=4, mean_update="ema"))
    assert "head.mu" not in dict(reg.named_parameters())
    feats, labels = torch.randn(2, 6, 8, 8), torch.randint(0, 3, (2, 8, 8))
    before = reg.head.mu.clone()
    reg.eval()(feats, labels)
    assert torch.equal(reg.head.mu, before)
    loss, _ = reg.train()(feats, labels)
    loss.backward()  # the in-place EMA step must not break the graph
    assert not torch.allclose(reg.head.mu, before)
    assert torch.allclose(reg.head.mu.norm(dim=-1), torch.ones(3, 3), atol=1e-5)


@pytest.mark.parametrize("mean_update", ["gradient", "ema"])
def test_state_dict_round_trip(mean_update: str) -> None:
    cfg = DRSLConfig(hidden_dim=8, embed_dim=4, mean_update=mean_update)
    reg = DRSLRegularizer(6, 3, cfg, seed=1)
    feats, labels = torch.randn(2, 6, 8, 8), torch.randint(0, 3, (2, 8, 8))
    reg(feats, labels, feats + 0.1, labels)
    copy = DRSLRegularizer(6, 3, cfg, seed=2)
    copy.load_state_dict(reg.state_dict())
    reg.eval(), copy.eval()
    assert torch.equal(copy.usage, reg.usage)
    assert not torch.allclose(reg.usage, torch.full((3, 3), 1 / 3))
    assert torch.equal(copy.class_posterior(feats), reg.class_posterior(feats))
    assert torch.equal(copy.mode_map(feats, labels), reg.mode_map(feats, labels))
