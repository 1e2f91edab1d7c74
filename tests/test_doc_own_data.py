"""docs/your_own_data.md, run: its class file and configs are written, then every command of its
bash blocks runs through ``drsl`` (training shortened to two iterations on tiny images)."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from doc_blocks import SHORT, SIZE, bash_commands, write_files, write_folder
from drsl.cli import main
from drsl.data.classes import load_class_set

DOC = Path(__file__).parent.parent / "docs" / "your_own_data.md"


def test_the_guide_runs_from_two_folders_to_a_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_folder(Path("my_data/sim"), 6, [0, 1, 2, 3, 255], ".png", 0)
    write_folder(Path("my_data/camera/train"), 4, None, ".jpg", 1)
    write_folder(Path("my_data/camera/val"), 2, [0, 50, 100, 150, 255], ".jpg", 2)
    text = DOC.read_text()
    assert write_files(text, tmp_path) == ["my_classes.yaml", "my_source_only.yaml", "my_drsl.yaml"]
    commands = bash_commands(text)
    assert len(commands) == 8
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "drsl", command
        if argv[1] == "export" and importlib.util.find_spec("onnx") is None:
            continue  # the deploy extra is not installed
        extra = SHORT if argv[1] == "train" else []
        assert main([*argv[1:], *extra]) == 0, command
    classes = load_class_set("my_classes.yaml")
    assert classes.num_classes == 4 and load_class_set("runs/robot_drsl/classes.yaml") == classes
    labels = np.asarray(Image.open("predictions/labels/sub/frame1.png"))
    assert labels.shape == SIZE and labels.max() < 4
    html = Path("runs/report.html").read_text()
    assert all(name in html for name in ("robot_source_only", "robot_drsl", "obstacle", "person"))
