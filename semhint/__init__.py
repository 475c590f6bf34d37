"""semhint: self-supervised monocular depth that learns from noisy semantic labels (SemHint-MD).

Three floors, data flowing one way (docs/ARCHITECTURE.md): ``semhint.core`` (geometry, configs,
files, conventions, checkpoints), the method (``data``, ``models``, ``losses``, ``refine``,
``training``, ``inference``, ``evaluation``, ``labelmaker``, ``tracking``, ``lab``), and
``semhint.app``, the only floor that runs commands.

The Python API::

    import semhint
    predictor = semhint.load("runs/x/checkpoints/last.ckpt")
    depth = predictor.predict_depth(rgb)        # H x W x 3 RGB, uint8 or float in [0, 1]
    result = predictor.predict(rgb)             # .depth, .labels (None without a segmentation branch)

``import semhint`` stays light (no torch): the API names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from semhint.core.version import __version__

# name -> module that defines it; resolved on first access (PEP 562), so `import semhint` and
# `semhint --help` do not pay for torch
_API = {"load": "semhint.inference", "Predictor": "semhint.inference", "Prediction": "semhint.inference",
        "check_image": "semhint.inference"}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'semhint' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
