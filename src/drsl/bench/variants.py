"""The method rows of the generated benchmark: which packaged config and overrides each row trains,
and the packaged config pointed at a benchmark folder. Shared by `drsl bench compare` and `drsl demo`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drsl.config import Config, load_config
from drsl.configs import resolve_config_path


@dataclass(frozen=True)
class Variant:
    """One row of the table: a packaged synth config plus overrides. ``adapts``: it starts from the
    source-only checkpoint; ``host``: for a DRSL row, the row without the regulariser it is paired
    with seed by seed (the regulariser's own contribution)."""

    name: str
    config: str
    overrides: tuple[str, ...] = ()
    adapts: bool = True
    host: str | None = None


#: The equal-budget control: source-only training continued from the adaptation start for the
#: mixing host's schedule (iterations, LR, source sampler); no target data.
CONTROL = "source_only_continued"
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("source_only", "source_only", adapts=False),
        Variant("oracle", "oracle", adapts=False),
        Variant(CONTROL, "mix", ("adapt.method=source_only",)),
        Variant("cbst", "cbst"),
        Variant("drsl", "drsl", host="cbst"),
        Variant("drsl_no_sma", "drsl", ("adapt.drsl.sma=false",), host="cbst"),
        # Both DRSL hosts use the labels as they are; the paper's fusion filter is the variant.
        Variant("drsl_fusion", "drsl", ("adapt.pseudo_label.fusion=agree",), host="cbst"),
        Variant("drsl_k1", "drsl", ("adapt.drsl.num_modes=1",), host="cbst"),
        Variant("drsl_k5", "drsl", ("adapt.drsl.num_modes=5",), host="cbst"),
        Variant("mix", "mix"),
        Variant("drsl_mix", "drsl_mix", host="mix"),
        Variant("drsl_mix_fusion", "drsl_mix", ("adapt.pseudo_label.fusion=agree",), host="mix"),
        Variant("drsl_mix_no_sma", "drsl_mix", ("adapt.drsl.sma=false",), host="mix"),
        Variant("drsl_mix_no_mmdl", "drsl_mix", ("adapt.drsl.lambda_mm=0",), host="mix"),
    )
}
#: The comparison `drsl bench compare` runs by default: baselines and the equal-budget control, both
#: hosts with and without the regulariser, and the regulariser's ablations on the mixing host (the
#: best host, BENCHMARKS.md); the rounds host's ablations run when named.
DEFAULT_VARIANTS = ("source_only", "oracle", CONTROL, "cbst", "drsl", "mix", "drsl_mix",
                    "drsl_mix_fusion", "drsl_mix_no_sma", "drsl_mix_no_mmdl")
#: ``--quick``: one seed of the baselines, CBST and the mixing host with and without the regulariser.
QUICK_VARIANTS = ("source_only", "oracle", "cbst", "mix", "drsl_mix")
#: Folders of packaged configs a comparison can draw its variants from: the light network trained
#: from scratch, or the ImageNet-pretrained EfficientNet-Lite0 network (BENCHMARKS.md).
NETWORKS = {"light": "synth", "pretrained": "synth_pretrained"}


def synth_config(
    name: str, data_root: Path, work_dir: Path, seed: int, extra: list[str] | None = None, folder: str = "synth"
) -> Config:
    """The packaged config ``folder/name`` (a generated-benchmark config) pointed at ``data_root`` and ``work_dir``."""
    return load_config(resolve_config_path(f"{folder}/{name}"), [
        f"data.source.root={data_root / ('target' if name == 'oracle' else 'source')}",
        f"data.target.root={data_root / 'target'}",
        f"data.val.root={data_root / 'target'}",
        f"work_dir={work_dir}",
        f"seed={seed}",
        *(extra or []),
    ])
