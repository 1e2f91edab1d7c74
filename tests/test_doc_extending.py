"""docs/extending.md, run in a project folder: its package, class file and configs are written, its
Python runs, and every command of its bash blocks runs (``drsl`` in this process, training
shortened to two iterations on tiny images; ``pip install .`` into a temporary site folder)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from doc_blocks import SHORT, bash_commands, write_files, write_folder
from drsl.cli import main
from drsl.config import load_config
from drsl.data.classes import CLASS_SETS
from drsl.data.registry import LAYOUTS
from drsl.models.registry import BACKBONES, DECODERS

DOC = Path(__file__).parent.parent / "docs" / "extending.md"
PLUGIN_NAMES = {"tiny_net": BACKBONES, "tiny_head": DECODERS, "mycamera": LAYOUTS, "robot4": CLASS_SETS}


def pip_install(project: Path, site: Path) -> None:
    """``pip install .`` of ``project`` into ``site``, offline (the installed setuptools builds it)."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps",
               "--no-index", "--target", str(site), str(project)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def forget_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The project's names unregistered, its modules unloaded and its folder off the path: only an
    installed copy can give them now."""
    for name, registry in PLUGIN_NAMES.items():
        registry.pop(name)
    for module in [m for m in sys.modules if m.split(".")[0] == "robot_parts"]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != project])


@pytest.mark.usefixtures("clean_registries")
def test_the_guide_runs_from_a_project_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    write_folder(Path("my_data/sim"), 6, [0, 1, 2, 3, 255], ".png", 0)
    write_folder(Path("my_data/camera/train"), 4, None, ".jpg", 1, images="frames", nested=False)
    write_folder(Path("my_data/camera/val"), 2, [0, 50, 100, 150, 255], ".jpg", 2,
                 images="frames", masks="annotations", nested=False)
    text = DOC.read_text()
    assert write_files(text, tmp_path) == [
        "train.yaml", "robot_parts/__init__.py", "robot_parts/network.py", "robot_parts/data.py",
        "robot_parts/robot4.yaml", "timm.yaml", "pyproject.toml",
    ]
    snippets = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(snippets) == 1 and "pretrained=True" in snippets[0]
    exec(snippets[0].replace("pretrained=True", "pretrained=False"), {})  # noqa: S102 - no downloads in tests

    for command in bash_commands(text):
        if command.startswith("export PYTHONPATH=$PWD"):
            monkeypatch.syspath_prepend(str(tmp_path))
            continue
        if command.startswith("pip install ."):
            pip_install(tmp_path, tmp_path / "site")
            forget_project(tmp_path, monkeypatch)
            monkeypatch.syspath_prepend(str(tmp_path / "site"))
            continue
        argv = shlex.split(command.split("#")[0])
        assert argv[0] == "drsl", command
        extra = SHORT if argv[1] == "train" else []
        assert main([*argv[1:], *extra]) == 0, command

    out = capsys.readouterr().out
    assert "custom_imports:\n- robot_parts.network\n- robot_parts.data" in out  # drsl config show
    assert "eval_subsets: []" in out  # unset: evaluation reports the class set's own subsets
    assert "mycamera" in out and "obstacle" in out  # drsl data check through the installed plug-in
    assert "| backbone=tiny_net,decoder=tiny_head | on | 64x64 |" in out  # drsl bench networks
    scores = json.loads(Path("runs/robot_tiny/eval.json").read_text())
    assert scores["class_set"] == "robot4" and list(scores["miou"]) == ["4"]
    recorded = load_config(Path("runs/robot_convnext/config.yaml"))
    assert recorded.model.backbone == "timm/convnext_atto" and recorded.model.pretrained == "convnext_atto.pth"
    # the installed plug-in alone gives every name the guide's configs use
    config = load_config(None, ["model.backbone=tiny_net", "model.decoder=tiny_head", "data.classes=robot4",
                                "data.source.layout=mycamera"])
    assert config.custom_imports == [] and BACKBONES["tiny_net"].build(config.model).strides == [4, 8]
