"""Contact sheets of rendered worlds: image, depth (magma on inverse depth), semantics, tracks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semhint.core.conventions import ClassSet
from semhint.core.fileio import atomic_path
from semhint.core.pictures import colorize_labels


def inverse_depth_colour(depth: np.ndarray) -> np.ndarray:
    """H x W x 3 float: magma on inverse depth (near = bright), invalid/sky black.

    Inverse depth spreads near and far structure evenly, the way depth networks predict it.
    """
    import matplotlib  # lazy: ~0.5 s, and the backend is chosen here, only when a picture is drawn

    valid = np.isfinite(depth) & (depth > 0)
    inv = np.zeros_like(depth, dtype=np.float64)
    inv[valid] = 1.0 / depth[valid]
    hi = np.percentile(inv[valid], 99) if valid.any() else 1.0
    lo = inv[valid].min() if valid.any() else 0.0
    norm = np.clip((inv - lo) / max(hi - lo, 1e-9), 0, 1)
    rgb = matplotlib.colormaps["magma"](norm)[..., :3]
    rgb[~valid] = 0
    return rgb


def contact_sheet(path: str | Path, frames: list[dict], class_set: ClassSet, title: str, tracks: bool = False) -> None:
    """Write a PNG grid: one column per frame; rows image, depth, semantics (and tracks on the image)."""
    import matplotlib  # lazy: ~0.5 s, and the backend is chosen here, only when a picture is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: see import matplotlib above

    n = len(frames)
    h, w = frames[0]["image"].shape[:2]
    rows = 3
    fig_w = min(16.0, 3.2 * n * max(w / h / 1.4, 1.0))
    fig, axes = plt.subplots(rows, n, figsize=(fig_w, fig_w / n * h / w * rows + 0.6), squeeze=False)
    for j, fr in enumerate(frames):
        axes[0, j].imshow(fr["image"])
        if tracks and "tracks" in fr:
            _draw_tracks(axes[0, j], fr)
            axes[0, j].set_xlim(-0.5, w - 0.5)
            axes[0, j].set_ylim(h - 0.5, -0.5)
        axes[0, j].set_title(f"frame {fr['frame']}", fontsize=8)
        axes[1, j].imshow(inverse_depth_colour(fr["depth"]))
        axes[2, j].imshow(colorize_labels(fr["labels"], class_set))
    for i, name in enumerate(["image" + (" + tracks" if tracks else ""), "depth (inverse, magma)", "semantics"]):
        axes[i, 0].set_ylabel(name, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _draw_tracks(ax, fr: dict) -> None:
    """Visible query points, coloured by index, with their trail over the previous frames."""
    import matplotlib  # lazy: ~0.5 s, and the backend is chosen here, only when a picture is drawn

    trail = fr["trail"]  # T' x N x 2 up to this frame
    vis = fr["tracks"]["visible"]
    colours = matplotlib.colormaps["hsv"](np.linspace(0, 1, vis.shape[0], endpoint=False))
    for k in np.flatnonzero(vis):
        ax.plot(trail[:, k, 0], trail[:, k, 1], "-", color=colours[k], lw=0.7)
    xy = fr["tracks"]["xy"]
    ax.scatter(xy[vis, 0], xy[vis, 1], s=4, c=colours[vis], linewidths=0)
