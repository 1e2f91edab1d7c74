"""Configs outside the package: ``_base_: drsl::NAME``, ``custom_imports``, registries extended by
user code and by installed plug-ins' entry points, and defaults that follow the class set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from drsl.config import ConfigError, config_from_dict, config_to_dict, load_config
from drsl.configs import resolve_config_path
from drsl.data.classes import CLASS_SETS, bind_class_set
from drsl.data.registry import LAYOUTS
from drsl.evaluation.metrics import summarize
from drsl.models.mit import MIT_VARIANTS
from drsl.models.registry import BACKBONES, DECODERS, MIT_NAMES, Backbone

pytestmark = pytest.mark.usefixtures("clean_registries")

#: A user module registering a decode head (the ASPP head under another name).
HEAD_MODULE = """from drsl.models.registry import DECODERS
DECODERS["{name}"] = DECODERS["aspp"]
"""


def test_a_user_config_inherits_packaged_ones(tmp_path: Path) -> None:
    (tmp_path / "local.yaml").write_text("train: {iterations: 7}\n")
    (tmp_path / "mine.yaml").write_text("_base_: [drsl::synth/cbst, local.yaml]\nname: mine\n")
    config = load_config(tmp_path / "mine.yaml")
    packaged = load_config(resolve_config_path("synth/cbst"))
    assert (config.name, config.train.iterations) == ("mine", 7)
    assert config.adapt == packaged.adapt and config.data.source == packaged.data.source  # through cbst's own _base_
    assert load_config(resolve_config_path("drsl::synth/cbst")) == packaged  # the command line takes the scope too
    (tmp_path / "typo.yaml").write_text("_base_: drsl::synth/cbts\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: _base_ 'drsl::synth/cbts': no packaged config 'synth/cbts' \(packaged: .*synth/cbst"):
        load_config(tmp_path / "typo.yaml")


def test_custom_imports_come_first_and_add_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("head_a", "head_b", "head_c"):
        (tmp_path / f"{name}.py").write_text(HEAD_MODULE.format(name=name))
    # the base names a head that only the child's module registers
    (tmp_path / "base.yaml").write_text("custom_imports: [head_a]\nmodel: {decoder: head_b}\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\ncustom_imports: [head_b]\n")
    config = load_config(tmp_path / "child.yaml", ["model.decoder=head_c", "custom_imports=[head_c]"])
    assert config.model.decoder == "head_c" and config.custom_imports == ["head_a", "head_b", "head_c"]

    stored = config_to_dict(config)  # a checkpoint's config, read in a process that never imported them
    for name in ("head_a", "head_b", "head_c"):
        del DECODERS[name], sys.modules[name]
    assert config_from_dict(stored) == config and "head_c" in DECODERS

    with pytest.raises(ConfigError, match="config key 'custom_imports': expected a list"):
        load_config(None, ["custom_imports=head_a"])


def write_distribution(site: Path, entry_points: str, code: str) -> None:
    """An installed distribution ``plug`` (module ``plug``) with these entry points, as pip leaves it."""
    (site / "plug.py").write_text(code)
    info = site / "plug-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


PLUG = """from pathlib import Path
from drsl.data.folder import FolderDataset
from drsl.models.registry import DECODERS

IMPORTED = True
ASPP = DECODERS["aspp"]
CLASSES = Path(__file__).with_name("plug_classes.yaml")


class Tiles(FolderDataset):
    layout_name = "tiles"


NOT_A_BACKBONE = 3
"""


def test_entry_points_register_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_distribution(tmp_path, "\n".join([
        "[drsl.decoders]", "plug_head = plug:ASPP",
        "[drsl.layouts]", "tiles = plug:Tiles",
        "[drsl.class_sets]", "two = plug:CLASSES",
        "[drsl.backbones]", "not_a_backbone = plug:NOT_A_BACKBONE", "broken = plug_missing:X", "",
    ]), PLUG)
    (tmp_path / "plug_classes.yaml").write_text(
        "name: two\nclasses:\n  - {id: 0, name: a, color: [0, 0, 0]}\n  - {id: 1, name: b, color: [9, 9, 9]}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "plug_head" in DECODERS.names() and "plug" not in sys.modules  # listed, not imported
    config = load_config(None, ["model.decoder=plug_head", "data.source.layout=tiles", "data.classes=two"])
    assert DECODERS["plug_head"] is DECODERS["aspp"] and LAYOUTS["tiles"].layout_name == "tiles"
    assert bind_class_set(config).names == ("a", "b") and "two" in CLASS_SETS
    with pytest.raises(ConfigError, match=r"drsl.backbones entry point not_a_backbone = plug:NOT_A_BACKBONE \(package plug\) gives 3, not a drsl.models.registry.Backbone"):
        load_config(None, ["model.backbone=not_a_backbone"])
    with pytest.raises(ConfigError, match="entry point broken = plug_missing:X .*cannot be loaded: ModuleNotFoundError"):
        BACKBONES.lookup("broken")
    with pytest.raises(ConfigError, match=r"config key 'data.val.layout': unknown dataset layout 'tile' \(registered: gta5, synthia, cityscapes, folder, tiles;"):
        load_config(None, ["data.val={layout: tile, root: x}"])


def test_evaluation_subsets_follow_the_class_set(tmp_path: Path) -> None:
    (tmp_path / "classes.yaml").write_text("""name: four
classes:
  - {id: 0, name: a, color: [0, 0, 0]}
  - {id: 1, name: b, color: [1, 1, 1]}
  - {id: 2, name: c, color: [2, 2, 2]}
  - {id: 3, name: d, color: [3, 3, 3]}
subsets: {2: [c, d]}
""")
    own = load_config(resolve_config_path("synth/drsl_mix"), [f"data.classes={tmp_path / 'classes.yaml'}"])
    classes = bind_class_set(own)
    assert own.data.eval_subsets == [4, 2] and own.model.num_classes == 4
    assert list(summarize(np.diag([5, 5, 5, 0]), classes)["miou"]) == ["4", "2"]  # the evaluator's default too
    for name, subsets in (("synth/source_only", [19, 16, 13]), ("synth7/drsl", [7]), ("synthia_cityscapes/drsl", [16, 13])):
        config = load_config(resolve_config_path(name))
        bind_class_set(config)
        assert config.data.eval_subsets == subsets, name
    with pytest.raises(ConfigError, match=r"no 19-class subset \(it has: 4, 2; data.eval_subsets: \[\] evaluates them all\)"):
        bind_class_set(load_config(resolve_config_path("gta5_cityscapes/source_only"), [f"data.classes={tmp_path / 'classes.yaml'}"]))


def test_names_are_checked_without_importing_the_networks() -> None:
    """A config is checked against drsl's own names without importing torch (drsl config show)."""
    probe = ("import sys; from drsl.config import load_config; from drsl.configs import resolve_config_path; "
             "load_config(resolve_config_path('synth_pretrained/drsl_mix'), ['model.decoder=daformer']); "
             "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0
    assert set(MIT_NAMES) == set(MIT_VARIANTS) and isinstance(BACKBONES["mit_b2"], Backbone)
