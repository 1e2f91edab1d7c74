"""Run a guide in docs/: its files (```LANG file=NAME blocks), its commands (```bash blocks) and the
tiny folder data its examples read."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fixtures import random_image, save_image

SIZE = (40, 56)
#: Appended to `drsl train` commands only: a guide's schedules, shortened for a test.
SHORT = [
    "train.iterations=2", "train.checkpoint_every=2", "train.log_every=1", "data.batch_size=2",
    "data.num_workers=0", "model.light_width=1", "adapt.rounds=2", "optim.warmup_iters=0",
    "data.source_augment.crop_size=[32,32]", "data.target_augment.crop_size=[32,32]",
]


def file_blocks(text: str) -> list[tuple[str, str]]:
    """(name, content) of every ```LANG file=NAME block, in order."""
    return re.findall(r"```\w+ file=(\S+)\n(.*?)```", text, flags=re.DOTALL)


def write_files(text: str, folder: Path) -> list[str]:
    """Write every file block of ``text`` under ``folder``; returns their names."""
    blocks = file_blocks(text)
    for name, content in blocks:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content)
    return [name for name, _ in blocks]


def bash_commands(text: str) -> list[str]:
    """The non-empty lines of every ```bash block, in order."""
    return [line for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
            for line in block.splitlines() if line.strip()]


def write_folder(root: Path, count: int, values: list[int] | None, suffix: str, seed: int,
                 images: str = "images", masks: str = "masks", nested: bool = True) -> None:
    """``count`` images (and masks of raw ``values``, when given) in ``root/images`` and
    ``root/masks``, every other one in a sub-folder when ``nested``."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        name = f"sub/frame{index}" if nested and index % 2 else f"frame{index}"
        save_image(root / images / f"{name}{suffix}", random_image(SIZE, rng))
        if values is not None:
            save_image(root / masks / f"{name}.png", rng.choice(np.array(values, dtype=np.uint8), SIZE))
