"""docs/your_own_data.md, run: its class file and configs are written, then every command of its
bash blocks runs through ``drsl`` (training shortened to two iterations on tiny images)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drsl.cli import main
from drsl.data.classes import load_class_set
from fixtures import random_image, save_image

DOC = Path(__file__).parent.parent / "docs" / "your_own_data.md"
SIZE = (40, 56)
#: Appended to `drsl train` commands only: the guide's schedules, shortened for a test.
SHORT = [
    "train.iterations=2", "train.checkpoint_every=2", "train.log_every=1", "data.batch_size=2",
    "data.num_workers=0", "model.light_width=1", "adapt.rounds=2", "optim.warmup_iters=0",
    "data.source_augment.crop_size=[32,32]", "data.target_augment.crop_size=[32,32]",
]


def write_folder(root: Path, count: int, values: list[int] | None, suffix: str, seed: int) -> None:
    """``count`` images (and masks of raw ``values``, when given) in the folder layout."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        name = f"sub/frame{index}" if index % 2 else f"frame{index}"
        save_image(root / "images" / f"{name}{suffix}", random_image(SIZE, rng))
        if values is not None:
            save_image(root / "masks" / f"{name}.png", rng.choice(np.array(values, dtype=np.uint8), SIZE))


def test_the_guide_runs_from_two_folders_to_a_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_folder(Path("my_data/sim"), 6, [0, 1, 2, 3, 255], ".png", 0)
    write_folder(Path("my_data/camera/train"), 4, None, ".jpg", 1)
    write_folder(Path("my_data/camera/val"), 2, [0, 50, 100, 150, 255], ".jpg", 2)
    text = DOC.read_text()
    files = re.findall(r"```yaml file=(\S+)\n(.*?)```", text, flags=re.DOTALL)
    assert [name for name, _ in files] == ["my_classes.yaml", "my_source_only.yaml", "my_drsl.yaml"]
    for name, content in files:
        Path(name).write_text(content)
    commands = [line for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
                for line in block.splitlines() if line.strip()]
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
