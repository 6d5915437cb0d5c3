"""Compatibility shims for the stack.

scaper 1.6.5 uses ``np.Inf`` and friends, which NumPy 2 removed. Import scaper only as
``from sepcluster.compat import scaper`` so the aliases exist first.
"""


import numpy as np

for _name, _value in (("Inf", np.inf), ("NaN", np.nan), ("float_", np.float64), ("complex_", np.complex128)):
    if not hasattr(np, _name):
        setattr(np, _name, _value)


import scaper  # noqa: E402  (must come after the aliases)

__all__ = ["scaper"]
