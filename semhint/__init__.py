"""semhint: self-supervised monocular depth that learns from noisy semantic labels (SemHint-MD).

Three floors, data flowing one way (docs/ARCHITECTURE.md): ``semhint.core`` (geometry, configs,
files, conventions, checkpoints), the method (``data``, ``models``, ``losses``, ``refine``,
``training``, ``inference``, ``evaluation``, ``labelmaker``, ``tracking``, ``lab``), and
``semhint.app``, the only floor that runs commands.
"""

from semhint.core.version import __version__

__all__ = ["__version__"]
