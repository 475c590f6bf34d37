"""Downstream endoscopic tissue tracking: 2D flow, depth lifting, and a depth-driven deformation graph.

``track(clip, mode, depth)`` runs one of four modes on a :class:`~semhint.tracking.io.Clip`:

- ``flow``: DIS (or LK) flow, chained and re-anchored to the first frame; 2D only;
- ``flow+lift``: the same 2D tracks lifted to 3D with depth (2D error independent of depth!);
- ``graph``: the embedded-deformation graph driven by depth alone (point-to-plane, like SuPer);
- ``graph+flow``: the graph with flow residuals added.

``evaluate_tracks(result, clip)`` scores a result against the clip's labelled points and always
reports the zero-motion baseline beside it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from semhint.core.conventions import TISSUE
from semhint.core.errors import InputError
from semhint.inference import load_predictor
from semhint.tracking.flow import inside, make_flow_tracker, sample_field
from semhint.tracking.graph import DeformationGraph, GraphConfig
from semhint.tracking.io import Clip, load_clip
from semhint.tracking.lift import SCALE_POLICIES, ScaledDepth, backproject_points, corrupt_depth, sample_depth
from semhint.tracking.metrics import edge_points, high_motion_frames, score

MODES = ("flow", "flow+lift", "graph", "graph+flow")
# The two graph presets. Depth only (mirrors SuPer) gets a weak prior against sliding, because
# point-to-plane cannot see tissue slide along its own surface and would otherwise drift. Depth +
# flow needs no such prior (flow sees the sliding); its flow weight is low enough that depth still
# decides the motion along the normals and shows in the 2D error.
GRAPH_PRESETS = {"graph": GraphConfig(w_slide=0.02), "graph+flow": GraphConfig(w_flow=0.2)}
DepthFn = Callable[[int], np.ndarray]


@dataclass
class TrackResult:
    xy: np.ndarray  # T x N x 2 pixels
    visible: np.ndarray  # T x N bool
    xyz: np.ndarray | None  # T x N x 3 camera frame, depth units (mm for endoscopy); None in 2D mode
    mode: str
    seconds: float  # tracking time excluding frame decoding of frame 0 and set-up of depth networks

    @property
    def fps(self) -> float:
        return (len(self.xy) - 1) / max(self.seconds, 1e-9)


def resolve_scale(clip: Clip, depth: str | DepthFn, scale: str) -> str:
    """'auto' -> 'metric' for ground truth, 'first-frame' for a network when the clip has reference depth.

    A monocular network's depth is known only up to scale; with no reference it stays 'metric'
    (its own units), and its 3D tracks are then only meaningful up to that unknown factor.
    """
    if scale != "auto":
        return scale
    is_network = not (callable(depth) or depth in ("gt", "none"))
    return "first-frame" if is_network and clip.depth_paths is not None else "metric"


def depth_source(clip: Clip, depth: str | DepthFn, scale: str = "auto", noise: float = 0.0, seed: int = 0,
                 device: str = "cpu") -> DepthFn | None:
    """Per-frame depth for a clip: 'none', 'gt', a checkpoint path, or a callable t -> depth.

    ``noise`` > 0 corrupts each frame with smooth relative noise (seeded per frame, so the draw
    never depends on call order); the scale policy then maps it to the reference units.
    """
    if isinstance(depth, str) and depth == "none":
        return None
    if callable(depth):
        raw = depth
    elif depth == "gt":
        clip.gt_depth(0)  # fails early, naming the clip, when there is none
        raw = clip.gt_depth
    else:
        raw = _checkpoint_depth(Path(depth), clip, device)
    predict = raw
    if noise > 0:
        def noisy(t: int) -> np.ndarray:
            return corrupt_depth(raw(t), noise, np.random.default_rng([seed, t]))

        predict = noisy
    scale = resolve_scale(clip, depth, scale)
    if scale not in SCALE_POLICIES:
        raise InputError(f"--scale must be one of {', '.join(SCALE_POLICIES)}, got {scale!r}")
    reference = clip.gt_depth if clip.depth_paths is not None else None
    if scale != "metric" and reference is None:
        raise InputError(f"{clip.name}: scale policy {scale!r} needs ground-truth depth to measure the scale against")
    return _Cached(ScaledDepth(predict, scale, reference))


class _Cached:
    """Remember the last frame's depth: a tracker step and the lifting both ask for it."""

    def __init__(self, fn: DepthFn):
        self.fn, self.key, self.value = fn, None, None

    def __call__(self, t: int) -> np.ndarray:
        if self.key != t:
            self.key, self.value = t, self.fn(t)
        return self.value


def _checkpoint_depth(path: Path, clip: Clip, device: str) -> DepthFn:
    if not path.is_file():
        raise InputError(f"{path}: --depth must be 'gt', 'none' or an existing checkpoint file")
    predictor = load_predictor(path, device=device)
    return lambda t: np.asarray(predictor.predict_depth(clip.frame(t)), dtype=np.float32)


def default_occluders() -> tuple[int, ...]:
    """The instrument class(es) of the endoscopic class set (semhint.data.labels.TISSUE), which
    SynthTissue renders and label maps given with --labels are expected to follow."""
    return tuple(int(c) for c in TISSUE.groups["instrument"])


def track(clip: Clip, mode: str = "flow", depth: str | DepthFn = "none", *, flow: str = "dis", scale: str = "auto",
          depth_noise: float = 0.0, seed: int = 0, graph: GraphConfig | None = None, use_labels: bool = True,
          occluder_classes: tuple[int, ...] | None = None, flow_width: int | None = None, device: str = "cpu",
          progress: bool = True) -> TrackResult:
    """Track the clip's query points through all its frames (see the module docstring for modes).

    ``flow_width`` computes DIS flow on frames downsized to that width (about 4x faster at 640 x 480
    for 320, at some sub-pixel accuracy); ``graph`` replaces the mode's preset (GRAPH_PRESETS) of
    the deformation graph (its ``semantic`` switch uses the clip's label maps to keep skinning
    within one class).
    """
    if mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    needs_depth = mode != "flow"
    if needs_depth and isinstance(depth, str) and depth == "none":
        raise InputError(f"mode {mode!r} needs depth: pass --depth gt or --depth CHECKPOINT")
    if needs_depth and clip.K is None:
        raise InputError(f"{clip.name}: mode {mode!r} needs camera intrinsics (intrinsics.yaml beside the frames or --intrinsics)")
    if resolve_scale(clip, depth, scale) == "per-frame-median" and mode.startswith("graph"):
        raise InputError("scale policy 'per-frame-median' is for evaluation only: inside the graph tracker it "
                         "injects fake motion along the rays; use 'metric' or 'first-frame'")
    depth_at = depth_source(clip, depth, scale, depth_noise, seed, device) if needs_depth else None
    occluders = default_occluders() if occluder_classes is None else tuple(occluder_classes)
    labels_at = clip.labels if use_labels and clip.label_paths is not None else (lambda t: None)
    cfg = replace(graph or GRAPH_PRESETS.get(mode, GraphConfig()), occluder_classes=occluders)
    if mode == "graph":
        cfg = replace(cfg, w_flow=0.0)
    if mode == "graph+flow" and cfg.w_flow <= 0:
        raise InputError("mode 'graph+flow' needs a graph config with w_flow > 0")
    flow_kwargs = {"work_width": flow_width} if flow == "dis" and flow_width else {}
    return _run(clip, mode, depth_at, labels_at, make_flow_tracker(flow, **flow_kwargs), cfg, progress)


def _run(clip, mode, depth_at, labels_at, flow_tracker, cfg, progress) -> TrackResult:
    n_frames, queries = len(clip), np.asarray(clip.queries, dtype=np.float64)
    n = len(queries)
    xy = np.zeros((n_frames, n, 2))
    xyz = np.full((n_frames, n, 3), np.nan) if mode != "flow" else None
    vis = np.ones((n_frames, n), bool)
    xy[0] = queries
    frame0 = clip.frame(0)
    start = time.perf_counter()
    graph = None
    if mode.startswith("graph"):
        graph = DeformationGraph(cfg)
        graph.start(depth_at(0), clip.K, queries, labels_at(0))
        xyz[0] = graph.queries
    elif mode == "flow+lift":
        xyz[0] = backproject_points(queries, sample_depth(depth_at(0), queries), clip.K)
    if mode == "graph":
        flow_tracker = None
    else:
        points = queries if graph is None else np.vstack([queries, graph.sample_xy])
        flow_tracker.start(frame0, points)
    for t in tqdm(range(1, n_frames), desc=f"tracking {clip.name} ({mode})", unit="frame", disable=not progress):
        labels = labels_at(t)
        fxy = fok = None
        if flow_tracker is not None:
            fxy, fok = flow_tracker.step(clip.frame(t))
        if graph is not None:
            flow_xy = None if fxy is None else fxy[n:]
            flow_ok = None if fok is None else fok[n:]
            xy[t], xyz[t], vis[t] = graph.step(depth_at(t), labels, flow_xy, flow_ok)
            continue
        xy[t] = fxy[:n]
        h, w = frame0.shape[:2]
        vis[t] = inside(xy[t], h, w) & fok[:n] & ~_on_class(labels, xy[t], cfg.occluder_classes)
        if xyz is not None:
            xyz[t] = backproject_points(xy[t], sample_depth(depth_at(t), xy[t]), clip.K)
    return TrackResult(xy, vis, xyz, mode, time.perf_counter() - start)


def _on_class(labels: np.ndarray | None, xy: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    if labels is None or not classes:
        return np.zeros(len(xy), bool)
    lab = sample_field(labels.astype(np.float32)[..., None], xy, nearest=True)[:, 0].astype(np.int64)
    return np.isin(lab, classes)


def zero_motion(clip: Clip) -> TrackResult:
    """The 'points never move' baseline: every frame repeats the queries (and their first 3D points)."""
    n_frames = len(clip)
    xy = np.repeat(np.asarray(clip.queries, dtype=np.float64)[None], n_frames, 0)
    xyz = None
    if clip.truth is not None and clip.truth.xyz is not None and clip.truth.frames[0] == 0:
        xyz = np.repeat(clip.truth.xyz[:1], n_frames, 0)
    return TrackResult(xy, np.ones(xy.shape[:2], bool), xyz, "zero", 0.0)


def evaluate_tracks(result: TrackResult, clip: Clip, edge_px: float = 8.0, high_motion_px: float | None = None,
                    survival_px: float = 16.0) -> dict:
    """Scores of ``result`` and of the zero-motion baseline on the clip's labelled frames (query frame excluded)."""
    truth = clip.truth
    if truth is None:
        raise InputError(f"{clip.name}: no labelled points to evaluate against")
    keep = truth.frames > 0
    frames = truth.frames[keep]
    gt_xy, valid = truth.xy[keep], truth.visible[keep]
    gt_xyz = None if truth.xyz is None else truth.xyz[keep]
    labels0 = clip.labels(0)
    edge = None if labels0 is None else edge_points(clip.queries, labels0, edge_px)
    high = high_motion_frames(gt_xy, valid, clip.queries, high_motion_px)
    out = {"frames_scored": int(len(frames)), "points": int(len(clip.queries)),
           "high_motion_frames": int(high.sum()), "edge_points": None if edge is None else int(edge.sum())}
    for name, res in (("method", result), ("zero_motion", zero_motion(clip))):
        pred_xyz = None if res.xyz is None else res.xyz[frames]
        out[name] = score(res.xy[frames], gt_xy, valid, pred_xyz, gt_xyz, edge, high, survival_px)
    out["method"]["fps"] = result.fps
    return out


__all__ = ["MODES", "GRAPH_PRESETS", "TrackResult", "GraphConfig", "Clip", "load_clip", "track", "evaluate_tracks", "zero_motion", "resolve_scale",
           "depth_source", "track_command"]
