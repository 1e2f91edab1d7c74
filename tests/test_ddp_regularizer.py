"""DDP correctness of the losses and the DRSL regulariser, 2 gloo processes against 1 process.

The global batch holds 2 + 2 source and 2 + 2 target images; the second process's half has no
labelled pixel at all, the first's has some ignored pixels. So the processes hold very different
numbers of valid pixels, and the second has nothing to feed the MMDL head with:

- every parameter must still receive a gradient on every process (else DDP's reducer stops);
- the losses are means over the valid pixels of *all* processes: with Sinkhorn balancing off
  (``sinkhorn_iters=0``, a per-pixel softmax) and SMA off, 2 processes equal 1 process;
- the mode usage (and the EMA mode means) are counted over all processes: equal on both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from processes import launch

WORKER = """
import json, sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from test_ddp_regularizer import run_cases
run_cases(json.loads(sys.argv[1]))
"""
CROP = (32, 32)
#: Equal to one process only when nothing is computed per process: no Sinkhorn balance, no SMA.
EXACT = ["adapt.drsl.sinkhorn_iters=0", "adapt.drsl.sma=false"]
#: The packaged DRSL settings (Sinkhorn, SMA) with EMA mode means.
FULL = ["adapt.drsl.mean_update=ema"]


def global_batch(step: int) -> dict[str, dict[str, torch.Tensor]]:
    """4 source + 4 target images; images 2-3 (the second process's) have no labelled pixel."""
    rng = np.random.default_rng(step)

    def labels(ignore: float) -> torch.Tensor:
        coarse = rng.integers(0, 19, (4, CROP[0] // 8, CROP[1] // 8))
        coarse[rng.random(coarse.shape) < ignore] = 255
        coarse[2:] = 255
        return torch.from_numpy(np.kron(coarse, np.ones((8, 8), dtype=np.int64)))

    def images() -> torch.Tensor:
        return torch.from_numpy(rng.integers(0, 256, (4, 3, *CROP), dtype=np.uint8))

    return {"source": {"image": images(), "label": labels(0.2)},
            "target": {"image": images(), "label": labels(0.5)}}


def run_cases(cases: list[dict[str, Any]]) -> None:
    """Train each case 2 steps on this process's share of the global batch; save what it saw."""
    from drsl.config import load_config
    from drsl.configs import resolve_config_path
    from drsl.engine.distributed import init_distributed
    from drsl.engine.logging import RunLogger
    from drsl.engine.trainer import Trainer
    from drsl.training import build_module

    dist = init_distributed("cpu")
    for case in cases:
        out = Path(case["out"])
        out.mkdir(parents=True, exist_ok=True)
        config = load_config(resolve_config_path("synth/drsl"), [
            "init_checkpoint=null", f"work_dir={out}", "model.light_width=1", "model.freeze_bn=true",
            "optim.lr=0.05", "optim.warmup_iters=0", "data.batch_size=4", *case["overrides"],
        ])
        torch.manual_seed(0)
        trainer = Trainer(config, build_module(config), dist, RunLogger(out, enabled=False))
        received: set[str] = set()
        for name, param in trainer.module.named_parameters():
            if param.requires_grad:
                param.register_post_accumulate_grad_hook(lambda p, name=name: received.add(name))
        share = slice(dist.rank * 4 // dist.world_size, (dist.rank + 1) * 4 // dist.world_size)
        usage = []
        for step in range(2):
            batch = {d: {k: v[share] for k, v in part.items()} for d, part in global_batch(step).items()}
            trainer.step(batch)
            usage.append(trainer.module.regularizer.usage.clone())
        torch.save({
            "params": {k: v.detach().clone() for k, v in trainer.module.named_parameters()},
            "trainable": sorted(k for k, v in trainer.module.named_parameters() if v.requires_grad),
            "received": sorted(received), "usage": usage, "mu": trainer.module.regularizer.head.mu.clone(),
        }, out / f"rank{dist.rank}.pt")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    base = tmp_path_factory.mktemp("ddp_reg")
    cases = {"exact": EXACT, "full": FULL}
    run_cases([{"out": str(base / f"{name}_single"), "overrides": o} for name, o in cases.items()])
    worker = WORKER.format(tests=str(Path(__file__).parent))
    launch(worker, [{"out": str(base / f"{name}_ddp"), "overrides": o} for name, o in cases.items()])
    load = lambda path: torch.load(path, weights_only=True)  # noqa: E731
    return {
        name: {"single": load(base / f"{name}_single" / "rank0.pt"),
               "ddp": [load(base / f"{name}_ddp" / f"rank{r}.pt") for r in range(2)]}
        for name in cases
    }


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_two_processes_equal_one_with_a_process_without_labels(results: dict[str, Any]) -> None:
    single, ddp = results["exact"]["single"], results["exact"]["ddp"]
    assert max_difference(ddp[0]["params"], ddp[1]["params"]) == 0.0
    assert max_difference(single["params"], ddp[0]["params"]) <= 1e-5
    for step in range(2):
        assert torch.allclose(single["usage"][step], ddp[0]["usage"][step], atol=1e-6)


@pytest.mark.parametrize("case", ["exact", "full"])
def test_every_parameter_gets_a_gradient_on_every_process(results: dict[str, Any], case: str) -> None:
    for rank in results[case]["ddp"]:
        assert rank["received"] == rank["trainable"]


def test_regulariser_statistics_are_reduced_over_processes(results: dict[str, Any]) -> None:
    single, (first, second) = results["full"]["single"], results["full"]["ddp"]
    for step in range(2):
        assert torch.equal(first["usage"][step], second["usage"][step])
    assert torch.equal(first["mu"], second["mu"])
    # Mode usage after the first step counts the same pixels as one process: modes come from the
    # (identical) initial weights, the counts are summed over processes.
    assert torch.allclose(single["usage"][0], first["usage"][0], atol=1e-6)
    assert not torch.allclose(first["usage"][0], torch.full_like(first["usage"][0], 1 / 3))
