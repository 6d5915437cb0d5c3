"""YAML loading and field validation shared by recipes and job configs."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from . import storage
from .errors import ConfigError


def load_yaml(uri: str) -> dict:
    """Read a YAML mapping from a local path or URI; errors name the file."""
    try:
        text = storage.read_text(uri)
    except FileNotFoundError as exc:
        raise ConfigError(str(uri), "file not found") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(uri), f"not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(uri), f"expected a mapping at the top level, got {type(data).__name__}")
    return data


def check(cond: Any, field: str, problem: str) -> None:
    """Raise ConfigError(field, problem) unless ``cond`` holds."""
    if not cond:
        raise ConfigError(field, problem)


def number(data: dict, key: str, prefix: str = "", *, default: Any = ..., minimum: float | None = None,
           maximum: float | None = None, exclusive_min: bool = False, integer: bool = False):
    """Fetch ``data[key]`` as a number with range checks; ``prefix`` names the parent field."""
    field = f"{prefix}{key}"
    if key not in data or data[key] is None:
        if default is ...:
            raise ConfigError(field, "is required")
        return default
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, f"must be a number, got {value!r}")
    if integer and int(value) != value:
        raise ConfigError(field, f"must be an integer, got {value!r}")
    if minimum is not None:
        if exclusive_min and value <= minimum:
            raise ConfigError(field, f"must be > {minimum}, got {value!r}")
        if not exclusive_min and value < minimum:
            raise ConfigError(field, f"must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(field, f"must be <= {maximum}, got {value!r}")
    return int(value) if integer else value


def reject_unknown(data: dict, allowed: set[str], prefix: str = "") -> None:
    """Raise ConfigError for any key of ``data`` not in ``allowed`` (catches typos)."""
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{prefix}{key}", f"unknown field (allowed: {', '.join(sorted(allowed))})")


def comma_list(value: Any) -> list[str]:
    """A list option's value as a list: ``"a,b"`` -> ``["a", "b"]``; a list (from a YAML config)
    is split item by item. The command-line edge parses lists; library functions take lists."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [p.strip() for item in items for p in str(item).split(",") if p.strip()]


class ListOption(argparse.Action):
    """argparse action for list options: ``--targets vocals,drums`` and ``--targets vocals drums``
    (and a list in a ``--config`` YAML) all give ``["vocals", "drums"]``. Use with ``nargs="+"``."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, comma_list(values) or None)
