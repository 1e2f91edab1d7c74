"""`drsl bench compare`: the aggregation against a hand computation, and a tiny end-to-end run
from a given source-only checkpoint with overrides typed after --variants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from drsl.bench.compare import aggregate, markdown, paired_differences
from drsl.cli import main, parse_args
from fixtures import CITYSCAPES19, write_cityscapes, write_gta5


def _record(variant: str, seed: int, miou: float, precision: float = 0.9) -> dict:
    per_class = {c: miou for c in CITYSCAPES19.names}
    return {
        "variant": variant, "seed": seed, "miou": {"19": miou, "16": miou, "13": miou},
        "per_class_iou": per_class, "seconds": 10.0 + seed,
        "pseudo_labels": [{"round": 0, "portion": 0.3, "precision": precision, "coverage": 0.3}],
    }


def test_aggregate_means_spreads_and_gap_closed() -> None:
    records = [
        _record("source_only", 0, 0.20), _record("oracle", 0, 0.40),
        _record("cbst", 0, 0.21, 0.8), _record("cbst", 1, 0.23, 0.9), _record("cbst", 2, 0.25, 1.0),
    ]
    table = aggregate(records)
    mean, std = table["cbst"]["miou19"]
    assert mean == pytest.approx(23.0) and std == pytest.approx(np.std([21, 23, 25], ddof=1))
    assert table["cbst"]["pseudo_labels"][0]["precision"][0] == pytest.approx(90.0)
    assert table["cbst"]["seconds"][0] == pytest.approx(11.0)
    text = markdown(table, "drsl bench compare", "hard")
    assert "shift preset `hard`" in text
    assert "| cbst | 23.0 ± 2.0 | 3 | 21.0, 23.0, 25.0 | 11 |" in text
    assert "- cbst: 15%" in text  # (23 - 20) / (40 - 20)
    assert "regulariser's own contribution" not in text  # no DRSL row, no pair


def test_paired_differences_match_seeds_not_positions() -> None:
    records = [_record("mix", 0, 0.300), _record("mix", 1, 0.310), _record("mix", 2, 0.320),
               _record("drsl_mix", 2, 0.340), _record("drsl_mix", 0, 0.305)]  # seed 1 missing, order shuffled
    table = aggregate(records)
    assert paired_differences(table, "drsl_mix", "mix") == pytest.approx({2: 2.0, 0: 0.5})
    text = markdown(table, "drsl bench compare", "aligned")
    assert "- drsl_mix − mix: +1.2 mIoU (seed 2 +2.00, seed 0 +0.50)" in text.split("own contribution")[1]


#: Overrides that make every run of a comparison tiny.
TINY = ["data.batch_size=2", "data.num_workers=0", "model.light_width=1", "train.checkpoint_every=0",
        "data.source_augment.crop_size=[32,32]", "data.target_augment.crop_size=[32,32]"]


def _tiny_benchmark(tmp_path: Path) -> Path:
    """A benchmark folder of fixture files in the GTA5 and Cityscapes layouts."""
    data = tmp_path / "data"
    write_gta5(data / "source", n=4, size=(32, 40))
    write_cityscapes(data / "target", "train", per_city=2, size=(32, 40))
    write_cityscapes(data / "target", "val", per_city=1, size=(32, 40))
    (data / "manifest.json").write_text("{}")
    return data


def test_compare_from_a_given_source_checkpoint(tmp_path: Path) -> None:
    data = _tiny_benchmark(tmp_path)
    source = tmp_path / "source_only"
    assert main(["train", "synth/source_only", f"data.source.root={data}/source", f"data.val.root={data}/target",
                 "train.iterations=2", "--work-dir", str(source), *TINY]) == 0
    out = tmp_path / "compare"
    code = main(["bench", "compare", "--out", str(out), "--data", str(data), "--variants", "cbst",
                 "source_only_continued", "--source-checkpoint", str(source / "checkpoints" / "latest.pt"),
                 "--seeds", "0", "train.iterations=3", "adapt.rounds=1", *TINY])  # overrides after --seeds
    assert code == 0
    assert not (out / "runs" / "source_only").exists()
    results = json.loads((out / "results.json").read_text())
    record, control = results["records"]
    assert record["variant"] == "cbst" and len(record["pseudo_labels"]) == 1
    assert control["variant"] == "source_only_continued" and not control["pseudo_labels"]
    control_config = yaml.safe_load((out / "runs" / "source_only_continued" / "seed0" / "config.yaml").read_text())
    assert control_config["init_checkpoint"] == str(source / "checkpoints" / "latest.pt")
    assert control_config["adapt"]["method"] == "source_only"
    assert results["shift"] == "hard"  # a manifest without a preset is the original, hard, shift
    assert json.loads((out / "runs" / "cbst" / "seed0" / "eval.json").read_text())["iteration"] == 3
    markdown = (out / "results.md").read_text()
    assert "| cbst |" in markdown
    cbst, control = (results["table"][name]["miou19"][0] for name in ("cbst", "source_only_continued"))
    assert (f"- cbst − source_only_continued: {cbst - control:+.1f} mIoU (seed 0 {cbst - control:+.2f})"
            in markdown.split("Gain over the equal-budget control")[1])


def test_compare_adapts_each_seed_from_its_own_source_only_run(tmp_path: Path) -> None:
    data = _tiny_benchmark(tmp_path)
    out = tmp_path / "compare"
    assert main(["bench", "compare", "--out", str(out), "--data", str(data), "--variants", "cbst",
                 "--seeds", "0", "1", "--source-per-seed", "train.iterations=2", "adapt.rounds=1",
                 *TINY]) == 0
    for seed in (0, 1):
        config = yaml.safe_load((out / "runs" / "cbst" / f"seed{seed}" / "config.yaml").read_text())
        assert config["init_checkpoint"] == str(out / "runs" / "source_only" / f"seed{seed}" / "checkpoints" / "latest.pt")
    assert "each seed's own source-only model" in (out / "results.md").read_text()
    assert list(json.loads((out / "results.json").read_text())["table"]) == ["cbst"]


def test_overrides_may_follow_the_options_that_take_several_values() -> None:
    args = parse_args(["bench", "compare", "a.b=1", "--variants", "cbst", "mix", "train.iterations=3",
                       "--seeds", "4", "5", "adapt.rounds=1", "--quick", "c=[1,2]"])
    assert args.variants == ["cbst", "mix"] and args.seeds == [4, 5]
    assert args.overrides == ["a.b=1", "train.iterations=3", "adapt.rounds=1", "c=[1,2]"]  # as typed
    assert parse_args(["bench", "compare"]).seeds == [0, 1, 2]


def test_compare_rejects_unknown_variants_and_missing_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "compare", "--out", str(tmp_path), "--variants", "drsl_bogus"]) == 2
    assert "unknown variant(s) ['drsl_bogus']" in capsys.readouterr().err
    assert main(["bench", "compare", "--out", str(tmp_path), "--source-checkpoint", str(tmp_path / "no.pt")]) == 2
    assert "no.pt is not a file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "compare", "--out", str(tmp_path), "--source-checkpoint", str(tmp_path / "so.pt"),
              "--source-per-seed"])
    assert "--source-per-seed: not allowed with argument --source-checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "compare", "--out", str(tmp_path), "--seeds", "train.iterations=3"])
    assert "argument --seeds: names no value" in capsys.readouterr().err
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text('{"shift": "hard"}')
    assert main(["bench", "compare", "--out", str(tmp_path / "out"), "--data", str(tmp_path / "data"), "--shift", "nope"]) == 2
    assert "unknown shift preset 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("network", ["light", "pretrained"])
def test_every_variant_has_a_packaged_config_for_every_network(tmp_path, network) -> None:
    """`--network` picks the config folder; every row of the table resolves in each, with its network."""
    from drsl.bench.variants import NETWORKS, VARIANTS, synth_config

    backbone = {"light": "light", "pretrained": "efficientnet_lite0"}[network]
    for variant in VARIANTS.values():
        config = synth_config(variant.config, tmp_path / "data", tmp_path / "run", 0, list(variant.overrides),
                              NETWORKS[network])
        assert config.model.backbone == backbone, variant.name
        assert config.data.source.root == str(tmp_path / "data" / ("target" if variant.name == "oracle" else "source"))
    # The equal-budget control trains on source only, for exactly the mixing host's schedule.
    control, mix = (synth_config(VARIANTS[name].config, tmp_path / "data", tmp_path / "run", 0,
                                 list(VARIANTS[name].overrides), NETWORKS[network])
                    for name in ("source_only_continued", "mix"))
    assert control.adapt.method == "source_only" and mix.adapt.method != "source_only"
    assert (control.train, control.optim, control.data.source_sampling) == (mix.train, mix.optim, mix.data.source_sampling)


def test_every_drsl_row_is_paired_with_its_host_without_the_regulariser(tmp_path) -> None:
    """Each DRSL row names as host the row that trains the same host with the regulariser off."""
    from drsl.bench.variants import VARIANTS, synth_config

    def config_of(name: str):
        variant = VARIANTS[name]
        return synth_config(variant.config, tmp_path, tmp_path / "run", 0, list(variant.overrides))

    drsl_rows = [name for name in VARIANTS if config_of(name).adapt.method == "drsl"]
    assert len(drsl_rows) == 9
    for name in drsl_rows:
        host = VARIANTS[name].host
        assert host is not None, name
        assert config_of(host).adapt.method == "self_training" and config_of(host).adapt.host == config_of(name).adapt.host, name
    assert all(VARIANTS[name].host is None for name in VARIANTS if name not in drsl_rows)


def test_compare_refuses_a_finished_run_of_another_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _tiny_benchmark(tmp_path)
    out = tmp_path / "compare"
    args = ["bench", "compare", "--out", str(out), "--data", str(data), "--variants", "source_only", "--seeds", "0",
            *TINY]
    assert main([*args, "train.iterations=2"]) == 0
    eval_file = out / "runs" / "source_only" / "seed0" / "eval.json"
    before = eval_file.read_bytes()
    assert main([*args, "train.iterations=2"]) == 0  # the same config: the finished run is reused
    assert eval_file.read_bytes() == before
    capsys.readouterr()
    assert main([*args, "train.iterations=3"]) != 0  # another schedule: never reported as the asked-for run
    err = capsys.readouterr().err
    assert str(out / "runs" / "source_only" / "seed0") in err and "train.iterations: 2 -> 3" in err
    assert "Traceback" not in err
    assert eval_file.read_bytes() == before
