"""semhint: self-supervised monocular depth that learns from noisy semantic labels (SemHint-MD)."""

__version__ = "0.1.0"
