"""The run directory: resolved config, git hash and package versions saved next to the results."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from drsl.config import Config, dump_config
from drsl.fileio import atomic_write_json, atomic_write_text

_PACKAGES = ("drsl", "torch", "torchvision", "numpy", "pillow", "opencv-python-headless")


def git_hash() -> str | None:
    """The commit of the drsl source tree, if it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment() -> dict[str, object]:
    """Python, platform and package versions."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "git": git_hash(),
        "argv": sys.argv,
    }


def prepare_run_dir(config: Config) -> Path:
    """Create the work dir and write ``config.yaml`` and ``environment.json`` into it."""
    work_dir = Path(config.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(work_dir / "config.yaml", dump_config(config))
    atomic_write_json(work_dir / "environment.json", environment())
    return work_dir
