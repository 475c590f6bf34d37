"""Datasets: KITTI raw, any video or folder of frames, and the built-in synthetic worlds, all turned
into training snippets.

``frames`` describes one training frame and reads split files; ``kitti`` and ``folder`` resolve the
two on-disk layouts into frames; ``snippets`` is the torch Dataset; ``build`` makes the dataset of a
config; ``synthetic`` renders worlds with exact ground truth in those same layouts.
"""
