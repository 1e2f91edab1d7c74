"""Packaged configs: the generated benchmark and the paper lineage's GTA5/SYNTHIA -> Cityscapes."""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).parent


def available_configs() -> list[str]:
    """Names of the packaged configs, e.g. ``synth/drsl``."""
    return sorted(
        str(p.relative_to(CONFIG_DIR).with_suffix(""))
        for p in CONFIG_DIR.rglob("*.yaml")
        if not p.name.startswith("_")
    )


def resolve_config_path(name: str) -> Path:
    """A YAML path as given, or the packaged config of that name (with or without .yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    packaged = CONFIG_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
    if packaged.is_file():
        return packaged
    from drsl.config import ConfigError

    raise ConfigError(
        f"no config file '{name}' and no packaged config of that name "
        f"(packaged: {', '.join(available_configs())})"
    )
