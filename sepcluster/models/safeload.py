"""Reading foreign checkpoint files without running code from them.

:func:`torch_load` unpickles with torch's weights-only unpickler (``weights_only=True``): tensors,
containers and primitives only, plus the globals a caller allowlists explicitly (the demucs model
classes, ``fractions.Fraction``). A pickle that names any other global (``os.system`` through a
``__reduce__``, a training config class, ...) is refused before anything is called; the error names
the file and the global. A truncated or corrupt file gets an error that says so.

:func:`load_yaml_tuples` reads a YAML mapping with the safe loader plus one tag, ``!!python/tuple``
(Music-Source-Separation-Training configs write ``freqs_per_bands`` that way); every other Python
tag is refused.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from typing import Any, Iterable

import torch
import yaml

from sepcluster import storage
from sepcluster.errors import ConfigError, DataError

_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")
_ZIP_MAGIC = b"PK\x03\x04"


def torch_load(uri: str, *, expected: str, allowed: Iterable[Any] = ()) -> Any:
    """Load a ``torch.save`` file (local path, ``file://`` or ``s3://``) with ``weights_only=True``.

    ``allowed`` are the extra globals the file may name (classes, or ``(obj, "module.Name")`` pairs
    as :func:`torch.serialization.safe_globals` takes them); ``expected`` describes the file for
    error messages ("a demucs model package (.th)"). Tensors are mapped to the CPU.

    Raises :class:`DataError` naming the file when the pickle names another global (nothing is
    called), when the file is truncated or corrupt, or when it is not a PyTorch file.
    """
    with storage.local_copy(uri) as path:
        _check_container(uri, path, expected)
        try:
            with torch.serialization.safe_globals(list(allowed)):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = _GLOBAL.search(str(exc))
            if found:
                raise DataError(f"{storage.redact(uri)}: refused to load: its pickle names {found.group(1)}, which is not "
                                f"allowed here (expected {expected})") from None
            raise DataError(f"{storage.redact(uri)}: cannot be unpickled safely ({_first_line(exc)}); expected {expected}") from None
        except (EOFError, OSError, RuntimeError, ValueError, zipfile.BadZipFile) as exc:
            raise DataError(f"{storage.redact(uri)}: truncated or corrupt file ({_first_line(exc)}); expected {expected}") from None


def _check_container(uri: str, path: str, expected: str) -> None:
    """Tell a truncated zip-format file and a file that is no torch file at all apart, up front."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise DataError(f"{storage.redact(uri)}: empty file; expected {expected}")
    if head == _ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            raise DataError(f"{storage.redact(uri)}: truncated or corrupt file (the zip archive has no central directory); "
                            f"expected {expected}")
        return
    if head[:1] != b"\x80":  # the legacy (pre-1.6) torch format is a pickle stream (protocol >= 2)
        raise DataError(f"{storage.redact(uri)}: not a PyTorch file; expected {expected}")


def load_error_text(exc: BaseException) -> str:
    """What went wrong in a ``torch.load(..., weights_only=True)``, in one line, without torch's advice
    to retry with ``weights_only=False`` (which would run whatever the file's pickle names)."""
    if isinstance(exc, pickle.UnpicklingError):
        found = _GLOBAL.search(str(exc))
        if found:
            return f"refused: its pickle names {found.group(1)}, which a plain checkpoint does not need"
        return "refused: it cannot be unpickled safely (not a plain checkpoint of tensors)"
    return f"truncated or corrupt ({_first_line(exc)})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


class _TupleSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also builds ``!!python/tuple`` sequences (and nothing else Python)."""


_TupleSafeLoader.add_constructor("tag:yaml.org,2002:python/tuple",
                                 lambda loader, node: tuple(loader.construct_sequence(node, deep=True)))


def load_yaml_tuples(uri: str) -> dict:
    """Read a YAML mapping (local path or URI), accepting ``!!python/tuple``; errors name the file."""
    try:
        text = storage.read_text(uri)
    except FileNotFoundError as exc:
        raise ConfigError(str(uri), "file not found") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(uri), "not a text (YAML) file") from exc
    try:
        data = yaml.load(text, Loader=_TupleSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(str(uri), f"not valid YAML: {' '.join(str(exc).split())[:300]}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(uri), f"expected a mapping at the top level, got {type(data).__name__}")
    return data


def state_mismatch(model: torch.nn.Module, state: Any, limit: int = 3) -> str | None:
    """``None`` when ``state`` loads strictly into ``model``, else a one-line description.

    Names the first ``limit`` missing keys, unexpected keys and shape mismatches (with both shapes).
    """
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        return "the state is not a mapping of names to tensors"
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatch (file vs model)", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts) or None
