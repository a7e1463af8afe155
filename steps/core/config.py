"""Loading params.yaml into frozen, self-checking dataclasses.

Every step's config is a frozen dataclass. ``load_section`` builds one from a
params.yaml section merged over ``base:``; a key that the dataclass does not
know is an error that names the file, the section, the key and the likely fix.
``params_of`` is the one way a params file (or an already-read dict) becomes a dict.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """A params.yaml value that does not fit; the message says where and how to fix it."""


def read_params(path: Path | str = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read a params file into a dict, with a clear error when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the repository root or pass --params PATH")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (base:, ingest:, ...), got {type(data).__name__}")
    return data


def params_of(params: Path | str | dict[str, Any] = DEFAULT_PARAMS, missing_ok: bool = False) -> dict[str, Any]:
    """``params`` itself when it is already a dict, else the params file read (``read_params``).

    Args:
        params: a params file, or its contents.
        missing_ok: a file that does not exist gives ``{}`` (every section at its defaults) instead of an error.
    """
    if isinstance(params, dict):
        return params
    if missing_ok and not Path(params).is_file():
        return {}
    return read_params(params)


def load_section(cls: type[T], section: str, params: Path | str | dict[str, Any] = DEFAULT_PARAMS, missing_ok: bool = False) -> T:
    """Build ``cls`` from ``base:`` plus the ``section:`` of params.yaml.

    Keys of ``base:`` that ``cls`` does not declare are ignored (base is shared
    by all steps); every key of the step's own section must be known. With
    ``missing_ok``, a params file that does not exist gives ``cls``'s defaults.
    """
    where = "params" if isinstance(params, dict) else str(params)
    data = params_of(params, missing_ok)
    base = data.get("base") or {}
    own = data.get(section) or {}
    if not isinstance(own, dict):
        raise ConfigError(f"{where}: section '{section}' must be a mapping, got {type(own).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    merged = {k: v for k, v in base.items() if k in known}
    merged.update(own)
    return from_dict(cls, merged, f"{where}: {section}")


def from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Recursively build a dataclass, rejecting unknown keys with a suggestion."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{where}: unknown key '{key}'{hint}; known keys: {', '.join(sorted(fields))}"
            )
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required key is missing
        raise ConfigError(f"{where}: {exc}") from exc


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where) if len(inner) == 1 else value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is Path:  # a step result read back from JSON (flows/dispatch.py); no config field is a Path
        return Path(value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected int, got {value!r}")
    return value
