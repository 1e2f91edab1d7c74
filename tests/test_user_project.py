"""A user's own project, outside the package, driven from the command line in fresh processes: a
config that inherits a packaged one, a backbone of its own (from ``custom_imports``, or from an
installed plug-in's entry point), 4-class folder data with a class file and no other keys."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from doc_blocks import SHORT, write_folder
from drsl.cli import main

SRC = Path(__file__).parent.parent / "src"

#: The user's backbone module: one map at stride 4.
BACKBONE_CODE = '''
from torch import nn

from drsl.models.interfaces import Encoder
from drsl.models.registry import Backbone


class UserEncoder(Encoder):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 4, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.out_channels, self.strides = [8], [4]

    def forward(self, x):
        return [self.body(x)]


USER_NET = Backbone(build=lambda cfg: UserEncoder())
'''
REGISTER = 'from drsl.models.registry import BACKBONES\nBACKBONES["user_net"] = USER_NET\n'

CLASS_FILE = """name: garden4
classes:
  - {id: 0, name: lawn, color: [0, 160, 0]}
  - {id: 1, name: path, color: [200, 200, 160]}
  - {id: 2, name: hedge, color: [0, 90, 0]}
  - {id: 3, name: gnome, color: [220, 20, 60]}
"""


def user_config(imports: str) -> str:
    """The project's config: a packaged recipe, its own data, classes and backbone."""
    return f"""_base_: drsl::synth/drsl_mix
{imports}name: garden
work_dir: runs/garden
init_checkpoint: null
data:
  classes: classes.yaml
  source: {{layout: folder, root: data/sim}}
  target: {{layout: folder, root: data/yard/train}}
  val: {{layout: folder, root: data/yard/val}}
model: {{backbone: user_net}}
"""


def make_project(root: Path, imports: str) -> Path:
    """A project folder: the config, the class file and folder data whose masks hold class ids."""
    root.mkdir(parents=True)
    (root / "garden.yaml").write_text(user_config(imports))
    (root / "classes.yaml").write_text(CLASS_FILE)
    write_folder(root / "data/sim", 4, [0, 1, 2, 3, 255], ".png", 0)
    write_folder(root / "data/yard/train", 4, None, ".jpg", 1)
    write_folder(root / "data/yard/val", 2, [0, 1, 2, 3, 255], ".png", 2)
    return root


def drsl(project: Path, python_path: Path, *argv: str) -> str:
    """Run ``python -m drsl.cli ARGV`` in ``project`` with ``python_path`` importable; its stdout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(python_path)]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "drsl.cli", *argv], cwd=project, env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"drsl {' '.join(argv)}:\n{result.stderr[-3000:]}"
    return result.stdout


def test_a_project_with_its_own_backbone_trains_evaluates_predicts_and_exports(tmp_path: Path) -> None:
    project = make_project(tmp_path / "garden", "custom_imports: [garden_nets]\n")
    (project / "garden_nets.py").write_text(BACKBONE_CODE + REGISTER)
    drsl(project, project, "train", "garden.yaml", *SHORT)
    checkpoint = "runs/garden/checkpoints/latest.pt"
    scores = json.loads((project / "runs/garden/eval.json").read_text())
    assert scores["class_set"] == "garden4" and list(scores["miou"]) == ["4"]
    assert "gnome" in drsl(project, project, "evaluate", checkpoint)
    drsl(project, project, "predict", checkpoint, "data/yard/train/images", "--out", "predictions")
    labels = np.asarray(Image.open(project / "predictions/labels/sub/frame1.png"))
    assert labels.shape == (40, 56) and labels.max() < 4
    if importlib.util.find_spec("onnx") is not None:  # the deploy extra
        drsl(project, project, "export", checkpoint, "garden.onnx")
        assert (project / "garden.onnx").stat().st_size > 0


def write_plugin(site: Path) -> None:
    """An installed plug-in as pip leaves it: the package and its dist-info with entry points."""
    (site / "garden_plugin").mkdir(parents=True)
    (site / "garden_plugin/__init__.py").write_text(BACKBONE_CODE)
    info = site / "garden_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: garden-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[drsl.backbones]\nuser_net = garden_plugin:USER_NET\n")


def test_an_installed_plugin_needs_no_custom_imports(tmp_path: Path) -> None:
    project = make_project(tmp_path / "garden", "")
    write_plugin(tmp_path / "site")
    drsl(project, tmp_path / "site", "train", "garden.yaml", *SHORT)
    scores = json.loads((project / "runs/garden/eval.json").read_text())
    assert scores["class_set"] == "garden4" and list(scores["miou"]) == ["4"]


@pytest.mark.usefixtures("clean_registries")
@pytest.mark.parametrize("imports, problem", [
    ("", "unknown backbone 'user_net' (registered: light, "),
    ("custom_imports: [garden_nope]\n", "no module named 'garden_nope' (install it, or put the folder"),
    ("custom_imports: [garden_broken]\n", "importing module 'garden_broken' failed: ZeroDivisionError"),
])
def test_a_missing_backbone_or_module_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], imports: str, problem: str
) -> None:
    project = make_project(tmp_path / "garden", imports)
    (project / "garden_broken.py").write_text("1 / 0\n")
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    assert main(["train", "garden.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err and "garden.yaml" in err
