"""The CPU memory trace behind docs/scaling.md's peak-memory estimates: live storage bytes are
counted once per storage (views share it), freed on release, and the peak is kept."""

from __future__ import annotations

import pytest
import torch

from drsl.bench.memory import LiveTensorBytes, fit_linear, trace_step
from drsl.config import load_config
from drsl.configs import resolve_config_path


def test_live_bytes_count_storages_once_and_release_them() -> None:
    weights = torch.zeros(250)  # 1000 bytes, existing before the trace
    with LiveTensorBytes([weights, weights[10:]]) as live:
        assert live.current == 1000
        a = torch.ones(1000)  # 4000 bytes
        view = a[:10].view(2, 5)
        b = a * 2  # 4000 more
        assert live.current == 9000 and live.peak == 9000
        del a, b
        assert live.current == 5000  # the view keeps a's storage
        del view
        assert live.current == 1000 and live.peak == 9000


def test_linear_fit_reads_the_target() -> None:
    fit = fit_linear([100, 200, 400], [110.0, 120.0, 140.0], 1000)
    assert fit["target_mb"] == pytest.approx(200.0) and max(map(abs, fit["residuals_mb"])) < 1e-9


def test_a_drsl_step_peaks_above_its_kept_state() -> None:
    config = load_config(resolve_config_path("synth/drsl_online"), ["model.light_width=1", "data.batch_size=2", "init_checkpoint=null"])
    small, large = trace_step(config, (32, 32)), trace_step(config, (64, 64))
    assert small["weights"] == large["weights"] > 0
    assert small["weights"] < small["between_steps"] < small["peak"] < large["peak"]
