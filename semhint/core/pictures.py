"""Pictures people would rather see than numbers: colour-mapped depth, panels, training curves.

Disparity is shown with the magma colormap normalised to its 95th percentile (the Monodepth2
convention): near things bright, far things dark, and a few very near pixels do not wash out the rest.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from semhint.core.conventions import IGNORE_INDEX, ClassSet, get_class_set
from semhint.core.fileio import atomic_path


def colorize(values: np.ndarray, cmap: str = "magma", vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """An H x W float map to uint8 H x W x 3 RGB; default range [min, 95th percentile]."""
    import matplotlib  # lazy: ~0.5 s, and the backend is chosen here, only when a picture is drawn

    values = np.asarray(values, dtype=np.float32)
    finite = values[np.isfinite(values)]
    lo = float(finite.min()) if vmin is None and finite.size else (vmin or 0.0)
    hi = float(np.percentile(finite, 95)) if vmax is None and finite.size else (vmax or 1.0)
    norm = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    rgba = matplotlib.colormaps[cmap](np.nan_to_num(norm))
    return (rgba[..., :3] * 255).astype(np.uint8)


def colorize_depth(depth: np.ndarray, valid: np.ndarray | None = None, disp_max: float | None = None) -> np.ndarray:
    """Depth shown as disparity (1 / depth) in magma; pixels without a value are black.

    ``disp_max`` fixes the colour scale (to compare maps of one scene); default: this map's 95th percentile.
    """
    depth = np.asarray(depth, dtype=np.float32)
    valid = depth > 0 if valid is None else valid
    disp = np.zeros_like(depth)
    disp[valid] = 1.0 / depth[valid]
    if disp_max is None:
        disp_max = float(np.percentile(disp[valid], 95)) if valid.any() else 1.0
    out = colorize(disp, vmin=0.0, vmax=disp_max)
    out[~valid] = 0
    return out


def _row_disp_max(row: dict[str, np.ndarray]) -> float | None:
    """The colour scale of a panel row: the 95th percentile disparity of its first depth map."""
    for image in row.values():
        if image.ndim == 2 and (image > 0).any():
            return float(np.percentile(1.0 / image[image > 0], 95))
    return None


def save_figure(fig, path: str | Path, dpi: int = 100) -> None:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt  # lazy: see import matplotlib above

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def depth_panels(rows: list[dict[str, np.ndarray]], path: str | Path, titles: list[str] | None = None) -> None:
    """A grid: one row per frame, one column per named image (RGB uint8 or depth float maps).

    Float 2-D maps are drawn as depth (magma on inverse depth) with one colour scale per row, taken
    from the row's first depth map (the ground truth), so depths of one frame compare by colour;
    uint8 H x W x 3 arrays are drawn as they are.
    """
    import matplotlib  # lazy: ~0.5 s, and the backend is chosen here, only when a picture is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: see import matplotlib above

    columns = list(rows[0].keys())
    h, w = next(iter(rows[0].values())).shape[:2]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(3.2 * len(columns), 3.2 * h / w * len(rows) + 0.4),
                             squeeze=False)
    for r, row in enumerate(rows):
        disp_max = _row_disp_max(row)
        for c, name in enumerate(columns):
            image = row[name]
            shown = image if image.ndim == 3 else colorize_depth(image, disp_max=disp_max)
            axes[r, c].imshow(shown)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(name if titles is None else titles[c], fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def read_metrics_csv(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning's CSV log as {column: [(step, value), ...]} skipping empty cells."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                series.setdefault(key, []).append((step, float(value)))
    return series


def training_curves(csv_paths: dict[str, Path], path: str | Path,
                    keys: tuple[str, ...] = ("train/loss_step", "train/photo", "train/automask_frac", "val/abs_rel")) -> None:
    """Loss / metric curves of one or more runs (one line per run), one subplot per key present."""
    import matplotlib  # lazy: ~0.5 s, and the backend is chosen here, only when a picture is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: see import matplotlib above

    runs = {name: read_metrics_csv(p) for name, p in csv_paths.items() if Path(p).is_file()}
    present = [k for k in keys if any(k in s for s in runs.values())]
    if not present:
        return
    fig, axes = plt.subplots(1, len(present), figsize=(4 * len(present), 3), squeeze=False)
    for ax, key in zip(axes[0], present):
        for name, series in runs.items():
            if key in series:
                steps, values = zip(*series[key])
                ax.plot(steps, values, label=name, marker="o" if len(steps) < 10 else None)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def label_palette(class_set: ClassSet | str | int) -> np.ndarray:
    """256 x 3 uint8 lookup table: a named set's own colours, or matplotlib's tab20 for a bare class count."""
    if isinstance(class_set, int):
        import matplotlib  # lazy: ~0.5 s, and the backend is chosen here, only when a picture is drawn

        lut = np.zeros((256, 3), np.uint8)
        n = min(class_set, IGNORE_INDEX)
        lut[:n] = (255 * matplotlib.colormaps["tab20"](np.arange(n) % 20)[:, :3]).astype(np.uint8)
        return lut
    return (get_class_set(class_set) if isinstance(class_set, str) else class_set).palette_array()


def colorize_labels(labels: np.ndarray, class_set: ClassSet | str | int) -> np.ndarray:
    """H x W class ids -> H x W x 3 uint8 preview in the set's palette (ignore and unknown ids black)."""
    arr = np.asarray(labels)
    if arr.dtype != np.uint8:
        arr = np.where((arr < 0) | (arr > IGNORE_INDEX), IGNORE_INDEX, arr).astype(np.uint8)
    return label_palette(class_set)[arr]


def compose_panels(panels: dict[str, np.ndarray], columns: int = 2, label_height: int = 12, gap: int = 2) -> np.ndarray:
    """Named pictures of one size as one labelled grid, filled row by row: uint8 H' x W' x 3.

    Each panel (uint8 H x W x 3, or H x W drawn in grey) gets its name written in white on a near-black
    strip of ``label_height`` pixels above it (0: no names); panels sit ``gap`` pixels apart on a
    dark grey ground, which also fills the cells left over in the last row. With rows =
    ceil(len(panels) / columns) and the columns capped at the number of panels,
    H' = rows * (label_height + H) + (rows - 1) * gap and W' = columns * W + (columns - 1) * gap.
    """
    from PIL import Image, ImageDraw, ImageFont  # lazy: only a training run that logs images draws a grid

    if not panels:
        raise ValueError("compose_panels: no panels")
    shown = {name: np.repeat(p[..., None], 3, axis=2) if p.ndim == 2 else p for name, p in panels.items()}
    h, w = next(iter(shown.values())).shape[:2]
    for name, p in shown.items():
        if p.shape != (h, w, 3) or p.dtype != np.uint8:
            raise ValueError(f"compose_panels: panel {name!r} is {p.dtype} {p.shape}, expected uint8 {(h, w, 3)}")
    columns = max(1, min(columns, len(shown)))
    rows = -(-len(shown) // columns)
    cell_h = label_height + h
    grid = np.full((rows * cell_h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), 64, np.uint8)
    font = ImageFont.load_default() if label_height > 0 else None
    for i, (name, p) in enumerate(shown.items()):
        top, left = (i // columns) * (cell_h + gap), (i % columns) * (w + gap)
        grid[top + label_height:top + cell_h, left:left + w] = p
        if font is not None:  # each name on its own strip: a long one is cut off, never spills over
            strip = Image.new("RGB", (w, label_height), (32, 32, 32))
            ImageDraw.Draw(strip).text((2, 0), name, fill=(255, 255, 255), font=font)
            grid[top:top + label_height, left:left + w] = np.asarray(strip)
    return grid
