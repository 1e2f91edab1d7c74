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


def packaged_config_path(name: str) -> Path:
    """The packaged config ``name`` (with or without .yaml), or a ConfigError listing them."""
    packaged = CONFIG_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
    if packaged.is_file():
        return packaged
    from drsl.config import ConfigError

    raise ConfigError(f"no packaged config '{name}' (packaged: {', '.join(available_configs())})")


def resolve_config_path(name: str) -> Path:
    """A YAML path as given, or the packaged config of that name (also written ``drsl::NAME``)."""
    path = Path(name)
    if path.is_file():
        return path
    from drsl.config import PACKAGED_SCOPE, ConfigError

    try:
        return packaged_config_path(name.removeprefix(PACKAGED_SCOPE))
    except ConfigError as exc:
        raise ConfigError(f"no config file '{name}' and {exc}") from None
