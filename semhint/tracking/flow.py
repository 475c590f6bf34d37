"""2D point tracking by optical flow: DIS dense flow chained frame to frame and re-anchored to the
first frame, or pyramidal Lucas-Kanade as the sparse alternative.

Chaining frame-to-frame flow is robust to large accumulated motion but drifts (every step adds a
sub-pixel error) and follows an occluder that passes over a point. Flow computed directly from the
first frame has no drift but breaks once the scene has moved far. We use the chain as the default
and replace it by the direct estimate wherever the direct flow passes a forward-backward check,
which removes drift and lets a point that an instrument dragged away snap back when it reappears.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 RGB (or already grey H x W) -> uint8 H x W grey, as the flow methods want."""
    if rgb.ndim == 2:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2GRAY)


def sample_field(field_hwc: np.ndarray, xy: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Bilinearly sample an H x W (x C) float field at N pixel positions (x, y); N x C out.

    Positions outside the image read the nearest border value (callers decide visibility
    separately), so the result is always finite where the field is.
    """
    xy = np.asarray(xy, dtype=np.float32).reshape(-1, 1, 2)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    out = cv2.remap(np.ascontiguousarray(field_hwc, dtype=np.float32), xy[..., 0], xy[..., 1], interp,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(xy.shape[0], -1)


def inside(xy: np.ndarray, height: int, width: int, margin: float = 0.0) -> np.ndarray:
    """Whether pixel positions (x, y) lie inside the image (pixel centres run 0 .. W-1)."""
    x, y = xy[..., 0], xy[..., 1]
    return (x >= -0.5 + margin) & (y >= -0.5 + margin) & (x <= width - 0.5 - margin) & (y <= height - 0.5 - margin)


def fb_error(forward: np.ndarray, backward: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Follow ``forward`` flow from ``xy`` and ``backward`` flow back; return (target xy, round-trip error px)."""
    target = xy + sample_field(forward, xy)
    back = target + sample_field(backward, target)
    return target, np.linalg.norm(back - xy, axis=1)


@dataclass
class DISTracker:
    """Track points with chained DIS flow, re-anchored to the first frame by a forward-backward check.

    ``start`` takes the first frame and the query points; each ``step`` takes the next frame and
    returns the new positions and a per-point reliability flag (a forward-backward check passed,
    either on the direct flow from the first frame or on this step's flow).
    """

    preset: str = "medium"
    fb_threshold: float = 1.0  # px at the working resolution
    reanchor: bool = True
    work_width: int | None = None  # compute flow on frames downsized to this width (None: native)
    _scale: float = field(default=1.0, repr=False)
    _dis: object = field(default=None, repr=False)
    _first: np.ndarray | None = field(default=None, repr=False)
    _prev: np.ndarray | None = field(default=None, repr=False)
    _queries: np.ndarray | None = field(default=None, repr=False)
    _xy: np.ndarray | None = field(default=None, repr=False)

    def start(self, frame: np.ndarray, queries: np.ndarray) -> None:
        if self.preset not in DIS_PRESETS:
            raise ValueError(f"DIS preset must be one of {sorted(DIS_PRESETS)}, got {self.preset!r}")
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[self.preset])
        width = frame.shape[1]
        self._scale = min(1.0, self.work_width / width) if self.work_width else 1.0
        self._first = self._prev = self._gray(frame)
        # internal positions live at the working resolution (pixel-edge model: x -> (x + 0.5) s - 0.5)
        self._queries = ((np.asarray(queries, dtype=np.float32).reshape(-1, 2) + 0.5) * self._scale - 0.5)
        self._xy = self._queries.copy()

    def _gray(self, frame: np.ndarray) -> np.ndarray:
        gray = to_gray(frame)
        if self._scale < 1.0:
            h, w = gray.shape
            gray = cv2.resize(gray, (round(w * self._scale), round(h * self._scale)), interpolation=cv2.INTER_AREA)
        return gray

    def step(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gray = self._gray(frame)
        fwd = self._dis.calc(self._prev, gray, None)
        bwd = self._dis.calc(gray, self._prev, None)
        xy, err = fb_error(fwd, bwd, self._xy)
        reliable = err < self.fb_threshold
        if self.reanchor:
            direct_fwd = self._dis.calc(self._first, gray, None)
            direct_bwd = self._dis.calc(gray, self._first, None)
            direct, direct_err = fb_error(direct_fwd, direct_bwd, self._queries)
            anchored = direct_err < self.fb_threshold
            xy[anchored] = direct[anchored]
            reliable |= anchored
        self._prev, self._xy = gray, xy
        return (xy + 0.5) / self._scale - 0.5, reliable


@dataclass
class LKTracker:
    """Pyramidal Lucas-Kanade: chained from frame to frame, then refined directly from the first frame.

    The direct refinement starts from the chained estimate (OPTFLOW_USE_INITIAL_FLOW), so it only
    has to correct drift; it is kept where its own forward-backward check passes.
    """

    window: int = 21
    levels: int = 3
    fb_threshold: float = 1.0
    reanchor: bool = True
    _first: np.ndarray | None = field(default=None, repr=False)
    _prev: np.ndarray | None = field(default=None, repr=False)
    _queries: np.ndarray | None = field(default=None, repr=False)
    _xy: np.ndarray | None = field(default=None, repr=False)

    def start(self, frame: np.ndarray, queries: np.ndarray) -> None:
        self._first = self._prev = to_gray(frame)
        self._queries = np.asarray(queries, dtype=np.float32).reshape(-1, 2)
        self._xy = self._queries.copy()

    def _lk(self, a: np.ndarray, b: np.ndarray, pts: np.ndarray, guess: np.ndarray | None = None):
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
        kwargs = dict(winSize=(self.window, self.window), maxLevel=self.levels, criteria=criteria)
        if guess is not None:
            kwargs["flags"] = cv2.OPTFLOW_USE_INITIAL_FLOW
            nxt = guess.reshape(-1, 1, 2).astype(np.float32).copy()
        else:
            nxt = None
        out, status, _ = cv2.calcOpticalFlowPyrLK(a, b, pts.reshape(-1, 1, 2), nxt, **kwargs)
        back, status_b, _ = cv2.calcOpticalFlowPyrLK(b, a, out, pts.reshape(-1, 1, 2).copy(),
                                                     flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
                                                     winSize=kwargs["winSize"], maxLevel=self.levels, criteria=criteria)
        err = np.linalg.norm(back.reshape(-1, 2) - pts.reshape(-1, 2), axis=1)
        ok = (status.ravel() == 1) & (status_b.ravel() == 1) & (err < self.fb_threshold)
        return out.reshape(-1, 2), ok

    def step(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gray = to_gray(frame)
        xy, reliable = self._lk(self._prev, gray, self._xy)
        xy = np.where(np.isfinite(xy), xy, self._xy)
        if self.reanchor:
            direct, anchored = self._lk(self._first, gray, self._queries, guess=xy)
            xy[anchored] = direct[anchored]
            reliable |= anchored
        self._prev, self._xy = gray, xy.astype(np.float32)
        return xy.copy(), reliable


def make_flow_tracker(method: str = "dis", **kwargs) -> DISTracker | LKTracker:
    """'dis' (dense, default) or 'lk' (pyramidal Lucas-Kanade)."""
    if method == "dis":
        return DISTracker(**kwargs)
    if method == "lk":
        return LKTracker(**kwargs)
    raise ValueError(f"flow method must be 'dis' or 'lk', got {method!r}")
