"""Config loading: _base_ layering, strict merge, overrides, packaged configs, the generated reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from drsl.config import ConfigError, config_from_dict, config_to_dict, load_config
from drsl.config_reference import reference_markdown
from drsl.configs import CONFIG_DIR, available_configs, resolve_config_path

DOCS = Path(__file__).parent.parent / "docs" / "configuration.md"


def test_base_layers_then_file_then_overrides(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("seed: 3\ntrain: {iterations: 10, log_every: 7}\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\ntrain: {iterations: 20}\n")
    config = load_config(tmp_path / "child.yaml", ["train.log_every=9", "optim.lr=1"])
    assert (config.seed, config.train.iterations, config.train.log_every) == (3, 20, 9)
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)


def test_renamed_keys_of_old_run_configs_are_read_under_their_new_names(tmp_path: Path) -> None:
    """A config recorded before adapt.mix.fd_weight became adapt.feature_distance.weight still loads."""
    recorded = config_to_dict(load_config(None))
    recorded["model"]["pretrained"], recorded["adapt"]["host"] = "w.pth", "mix"
    recorded["adapt"]["mix"].update(fd_weight=0.005, fd_classes=[13])
    del recorded["adapt"]["feature_distance"]
    config = config_from_dict(recorded)
    assert (config.adapt.feature_distance.weight, config.adapt.feature_distance.classes) == (0.005, [13])
    (tmp_path / "old.yaml").write_text("model: {pretrained: w.pth}\nadapt: {host: mix, mix: {fd_weight: 0.01}}\n")
    assert load_config(tmp_path / "old.yaml").adapt.feature_distance.weight == 0.01
    assert load_config(None, ["adapt.mix.fd_classes=[7]"]).adapt.feature_distance.classes == [7]


def test_the_old_method_name_cbst_is_read_as_self_training(tmp_path: Path) -> None:
    """Run folders and checkpoints recorded with adapt.method: cbst still load; no packaged config uses it."""
    recorded = config_to_dict(load_config(resolve_config_path("synth/mix")))
    recorded["adapt"]["method"] = "cbst"
    assert config_from_dict(recorded).adapt.method == "self_training"
    (tmp_path / "old.yaml").write_text("adapt: {method: cbst, host: mix}\ndata: {target: {root: t}}\n")
    assert load_config(tmp_path / "old.yaml").adapt.method == "self_training"
    assert load_config(resolve_config_path("synth/cbst"), ["adapt.method=cbst"]).adapt.method == "self_training"
    assert not [path for path in CONFIG_DIR.rglob("*.yaml") if "method: cbst" in path.read_text()]


def test_exponent_notation_without_a_dot_is_a_float(tmp_path: Path) -> None:
    """YAML 1.1 reads 1e-4 as a string; a float key takes it as the number, a str key keeps it."""
    (tmp_path / "run.yaml").write_text("optim: {lr: 6e-5}\n")
    config = load_config(tmp_path / "run.yaml", ["adapt.drsl.kappa=1E+1", "name=2e3"])
    assert config.optim.lr == 6e-5 and config.adapt.drsl.kappa == 10.0 and config.name == "2e3"
    with pytest.raises(ConfigError, match="expected float"):
        load_config(None, ["optim.lr=1e"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.iteratons=5", "unknown config key 'train.iteratons'"),
        ("train.iterations=1.5", "expected int"),
        ("model.backbone=vgg", "unknown backbone .vgg. .registered: light, .*timm/<name>"),
        ("data.batch_size=[1]", "expected int"),
        ("train", "must look like key.sub=value"),
        ("data.target.root=3", "expected str"),
        ("model.frozen_stages=2", "keeps loaded weights fixed: set model.pretrained"),
        ("model.frozen_stages=5", "model.frozen_stages"),
    ],
)
def test_strict_errors_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(None, [override])


def test_base_cycle_and_bad_yaml(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "b.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    (tmp_path / "evil.yaml").write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "evil.yaml")


@pytest.mark.parametrize("name", available_configs())
def test_packaged_configs_load_and_round_trip(name: str) -> None:
    config = load_config(resolve_config_path(name))
    assert config_from_dict(config_to_dict(config)) == config


def test_synthia_reports_16_and_13_never_19() -> None:
    for name in ("synthia_cityscapes/source_only", "synthia_cityscapes/drsl"):
        assert load_config(resolve_config_path(name)).data.eval_subsets == [16, 13]


def test_unknown_config_name() -> None:
    with pytest.raises(ConfigError, match="packaged: "):
        resolve_config_path("synth/nope")


def test_reference_doc_is_current() -> None:
    assert DOCS.read_text() == reference_markdown(), "regenerate: drsl config reference > docs/configuration.md"


def test_every_config_key_has_a_meaning() -> None:
    """Each row of the generated reference says what its key is (a ``#:`` comment in drsl/config.py)."""
    rows = [line for line in reference_markdown().splitlines() if line.startswith("| `")]
    assert len(rows) > 150
    empty = [row.split("|")[1].strip() for row in rows if not row.rstrip().removesuffix("|").rsplit("|", 1)[-1].strip()]
    assert empty == []
