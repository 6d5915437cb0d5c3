"""Test-only reference implementations.

``openunmix`` (1.3.0, installed with ``pip install --no-deps openunmix==1.3.0``) imports
torchaudio at import time; torchaudio is not usable here, so an empty placeholder module is
registered first (openunmix's model and torch-backend transforms do not use it).

``openunmix`` is None when the package is not installed; use ``needs_openunmix`` (a pytest
skip marker) on tests that compare against it.
"""

from __future__ import annotations

import sys
import types

import pytest

sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))

try:
    import openunmix  # noqa: E402
    import openunmix.model  # noqa: E402,F401
    import openunmix.transforms  # noqa: E402,F401
    import openunmix.utils  # noqa: E402,F401
except ImportError:  # pragma: no cover - depends on the environment
    openunmix = None

needs_openunmix = pytest.mark.skipif(
    openunmix is None, reason="openunmix not installed (pip install --no-deps openunmix==1.3.0)")


def require_openunmix():
    """Return the openunmix module, or skip the calling test when it is not installed."""
    if openunmix is None:
        pytest.skip("openunmix not installed (pip install --no-deps openunmix==1.3.0)")
    return openunmix
