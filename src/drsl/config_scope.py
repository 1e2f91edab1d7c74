"""Which run reads which ``adapt`` keys: a value that the chosen method and host never read cannot
take effect, so ``drsl train`` refuses it when given on the command line and names it in a warning
when a config file sets it (config files inherit values from their ``_base_`` files).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from drsl.config import Config, ConfigError, config_to_dict, flat_items, nest, parse_override

log = logging.getLogger("drsl")


def _adapts(config: Config) -> bool:
    return config.adapt.method != "source_only"


def _regularised(config: Config) -> bool:
    return config.adapt.method == "drsl" and config.adapt.drsl.enabled


@dataclass(frozen=True)
class Scope:
    """A key (or a section, ending in ".") and the runs that read it."""

    key: str
    reads: Callable[[Config], bool]
    #: Which runs read it, for messages.
    readers: str

    def covers(self, key: str) -> bool:
        """True when ``key`` is this key or lies in this section."""
        return key.startswith(self.key) if self.key.endswith(".") else key == self.key


#: The first scope that covers a key decides; keys no scope covers are read by every run.
SCOPES = (
    Scope("adapt.drsl.enabled", lambda c: c.adapt.method == "drsl", "adapt.method=drsl"),
    Scope("adapt.drsl.", _regularised, "adapt.method=drsl with adapt.drsl.enabled=true"),
    Scope("adapt.mix.drsl_target", lambda c: _regularised(c) and c.adapt.host == "mix",
          "adapt.method=drsl on the mixing host (adapt.host=mix)"),
    Scope("adapt.mix.", lambda c: _adapts(c) and c.adapt.host == "mix",
          "the mixing host (adapt.host=mix) of adapt.method=self_training or drsl"),
    Scope("adapt.ema_momentum", lambda c: _adapts(c) and c.adapt.host in ("online", "mix"),
          "the online and mixing hosts (adapt.host=online or mix) of adapt.method=self_training or drsl"),
    Scope("adapt.online_portion", lambda c: _adapts(c) and c.adapt.host == "online",
          "the online host (adapt.host=online) of adapt.method=self_training or drsl"),
    Scope("adapt.host", _adapts, "adapt.method=self_training or drsl"),
    Scope("adapt.lambda_target", _adapts, "adapt.method=self_training or drsl"),
)


def unread_by(config: Config, key: str) -> str | None:
    """Which runs read ``key`` when ``config``'s run does not, else None."""
    scope = next((scope for scope in SCOPES if scope.covers(key)), None)
    return scope.readers if scope is not None and not scope.reads(config) else None


def _run(config: Config) -> str:
    return f"adapt.method={config.adapt.method}, adapt.host={config.adapt.host}"


def check_keys_take_effect(config: Config, overrides: list[str]) -> None:
    """ConfigError naming the first command-line override that ``config``'s run never reads; a
    warning naming the values the config files set (other than the defaults) that it never reads."""
    given: set[str] = set()
    for text in overrides:
        keys, value = parse_override(text)
        for key in flat_items(nest(keys, value)) if isinstance(value, dict) else [".".join(keys)]:
            given.add(key)
            if (readers := unread_by(config, key)) is not None:
                raise ConfigError(
                    f"command-line override '{text}': {key} is read only by {readers}, not by this run "
                    f"({_run(config)}), so it cannot take effect"
                )
    defaults = flat_items(config_to_dict(Config()))
    unread = [
        f"{key}={value!r}" for key, value in flat_items(config_to_dict(config)).items()
        if key not in given and value != defaults.get(key) and unread_by(config, key) is not None
    ]
    if unread:
        log.warning("the config sets %s, which this run (%s) never reads", ", ".join(unread), _run(config))
