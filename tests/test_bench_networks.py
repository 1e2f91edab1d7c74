"""``drsl bench networks``: one row per (variant, layout, crop), timed in the same process."""

from __future__ import annotations

import json
from pathlib import Path

from drsl.bench import networks


def test_networks_table(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "rows.json"
    code = networks.main([
        "--variants", "backbone=light,light_width=1", "backbone=light,light_width=1,decoder=deeplabv3plus",
        "--channels-last", "both", "--crops", "32x48", "--batch", "2", "--warmup", "0", "--rounds", "1",
        "--json", str(out),
    ])
    rows = json.loads(out.read_text())["rows"]
    assert code == 0 and len(rows) == 4
    assert {(r["variant"].endswith("deeplabv3plus"), r["channels_last"]) for r in rows} == {
        (False, False), (False, True), (True, False), (True, True)
    }
    assert all(r["crop"] == [32, 48] and r["cpu_s"] > 0 and r["step_s"] > 0 for r in rows)
    assert "| backbone=light,light_width=1 | off | 32x48 |" in capsys.readouterr().out


def test_network_step_builds_the_configured_model() -> None:
    # Options applied when the model is built (frozen BatchNorm here) are part of what is timed.
    from torch import nn

    step = networks.NetworkStep("backbone=light,light_width=1,freeze_bn=true", False, (32, 32), 2)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in step.net.modules())
