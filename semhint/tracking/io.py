"""Clips to track (SuPer, SynthTissue, any folder/video + points file) and the tracker's outputs.

Layouts read here:

SuPer (UCSD ARCLab)::

    ROOT/rgb/NNNNNN-left.png         frames, numbered
    ROOT/labelPts.npy                dict with 'gt': F x P x 2 labelled points, (row, col) order,
                                     values <= 0 where a point is not labelled in that frame
    ROOT/eva_id.npy                  the F frame numbers those labels belong to
    ROOT/intrinsics.yaml             optional: fx fy cx cy (needed by the depth-based modes)

SynthTissue (semhint synth tissue)::

    OUT/data/SEQ/NNNNNN.png + intrinsics.yaml, OUT/gt_depth/SEQ/NNNNNN.png (uint16, mm * 256),
    OUT/gt_labels/SEQ/NNNNNN.png, OUT/tracks/SEQ.npz

Generic: a folder of frames (sorted by name) or a video file, plus a points file:
CSV with a header ``frame,point,x,y[,visible]`` (one row per labelled point and frame; rows left
out mean "not labelled"), or JSON ``{"frames": [f0, ...], "xy": [[[x, y] | null, ...], ...],
"visible": [[true|false, ...], ...] (optional)}``. Pixels are (x, y) of the stored frames.

Tracking starts at the first labelled frame, which must label every point (those are the queries);
earlier frames are dropped.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from semhint.core.fileio import (
    InputError,
    load_npz,
    read_depth_png,
    read_label_png,
    read_rgb,
    save_npz,
    write_json,
)
from semhint.core.geometry import resize_intrinsics
from semhint.core.video import Mp4Writer
from semhint.data.folder import INTRINSICS_NAMES, read_intrinsics, resolve_root
from semhint.data.frames import DirListing, image_hw

SUPER_FRAME = re.compile(r"^(\d+)-left\.(png|jpg|jpeg)$", re.I)


@dataclass
class PointTruth:
    """Labelled points: ``frames`` (F clip indices, the first is the query frame), ``xy`` F x N x 2
    with NaN where not labelled, ``visible`` F x N (labelled and visible), ``xyz`` F x N x 3 or None."""

    frames: np.ndarray
    xy: np.ndarray
    visible: np.ndarray
    xyz: np.ndarray | None = None


@dataclass
class Clip:
    """Frames on disk plus what is known about them. Frame 0 is the query frame."""

    name: str
    frame_paths: list[Path]
    queries: np.ndarray  # N x 2 (x, y) in frame 0
    K: np.ndarray | None = None  # 3 x 3, pixels of the stored frames
    truth: PointTruth | None = None
    depth_paths: list[Path] | None = None  # ground-truth depth (uint16 PNG, mm * 256)
    label_paths: list[Path] | None = None  # class maps (instrument = occluder)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame_paths)

    def frame(self, t: int) -> np.ndarray:
        return read_rgb(self.frame_paths[t])

    def gt_depth(self, t: int) -> np.ndarray:
        if self.depth_paths is None:
            raise InputError(f"{self.name}: this clip has no ground-truth depth (use --depth CHECKPOINT or none)")
        return read_depth_png(self.depth_paths[t])

    def labels(self, t: int) -> np.ndarray | None:
        return None if self.label_paths is None else read_label_png(self.label_paths[t])


# ---- loaders -------------------------------------------------------------------------------------
def load_clip(source: str | Path, points: str | Path | None = None, intrinsics: str | Path | None = None,
              labels: str | Path | None = None) -> Clip:
    """Recognise the layout of ``source`` (SuPer, SynthTissue sequence, or generic) and load it."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source}: not found (expected a folder of frames, a video, or a SuPer/SynthTissue folder)")
    if source.is_dir() and (source / "rgb").is_dir():
        return load_super(source, points, intrinsics)
    if source.is_dir() and (source.parent.parent / "tracks" / f"{source.name}.npz").is_file() and points is None:
        return load_synth_tissue(source)
    if points is None:
        raise InputError(f"{source}: --points is required for a generic folder or video (CSV or JSON of labelled points)")
    return load_generic(source, points, intrinsics, labels)


def load_super(root: str | Path, points: str | Path | None = None, intrinsics: str | Path | None = None) -> Clip:
    """The SuPer layout: rgb/NNNNNN-left.png, labelPts.npy ('gt' in (row, col) order) and eva_id.npy.

    The (row, col) order and the "<= 0 means unlabelled" rule follow the UCSD ARCLab Python-SuPer
    reader, which draws ``gt[k][0]`` as the row and scores only entries with both coordinates > 0.
    """
    root = Path(root)
    numbered = {}
    for p in (root / "rgb").iterdir():
        m = SUPER_FRAME.match(p.name)
        if m:
            numbered[int(m.group(1))] = p
    if not numbered:
        raise InputError(f"{root / 'rgb'}: no frames named NNNNNN-left.png")
    label_file = Path(points) if points else root / "labelPts.npy"
    ids_file = label_file.parent / "eva_id.npy"
    gt = _super_gt(label_file)
    ids = _load_npy(ids_file, allow_pickle=True)
    ids = np.asarray(ids).astype(np.int64).reshape(-1)
    if len(ids) != len(gt):
        raise InputError(f"{ids_file}: {len(ids)} frame ids but {label_file} has {len(gt)} labelled frames")
    missing = [int(i) for i in ids if int(i) not in numbered]
    if missing:
        raise InputError(f"{ids_file}: labelled frame(s) {missing[:5]} have no rgb/NNNNNN-left.png")
    valid = (gt[..., 0] > 0) & (gt[..., 1] > 0)
    xy = np.where(valid[..., None], gt[..., ::-1], np.nan)  # (row, col) -> (x, y)
    numbers = sorted(n for n in numbered if n >= ids.min())
    index = {n: i for i, n in enumerate(numbers)}
    truth = PointTruth(np.array([index[int(i)] for i in ids]), xy, valid)
    truth = _sorted_truth(truth, label_file)
    K = _optional_intrinsics(root, intrinsics, numbered[numbers[0]])
    return Clip(root.name, [numbered[n] for n in numbers], _queries(truth, label_file), K, truth)


def _super_gt(path: Path) -> np.ndarray:
    data = _load_npy(path, allow_pickle=True)  # the published file is a pickled dict
    if data.dtype == object and data.shape == ():
        data = data.item()
    if isinstance(data, dict):
        if "gt" not in data:
            raise InputError(f"{path}: labelled-points dict has no 'gt' entry (keys: {sorted(data)})")
        data = data["gt"]
    gt = np.asarray(data, dtype=np.float64)
    if gt.ndim != 3 or gt.shape[2] != 2:
        raise InputError(f"{path}: labelled points must be F x P x 2, got shape {gt.shape}")
    return gt


def _load_npy(path: Path, allow_pickle: bool = False):
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=allow_pickle)
    except Exception as exc:  # pickle / format errors all mean 'corrupt'
        raise InputError(f"{path}: cannot read ({exc.__class__.__name__}: {exc})".replace("\n", " ")) from None


def load_synth_tissue(seq_dir: str | Path) -> Clip:
    """One SynthTissue sequence: OUT/data/SEQ with its ground-truth depth, labels and tracks."""
    seq_dir = Path(seq_dir)
    out, name = seq_dir.parent.parent, seq_dir.name
    frames = DirListing().sorted_images(seq_dir)
    if not frames:
        raise InputError(f"{seq_dir}: no frames")
    K = _intrinsics_for(seq_dir / "intrinsics.yaml", frames[0])
    track_file = out / "tracks" / f"{name}.npz"
    tracks = _npz(track_file)
    xy = _key(tracks, track_file, "tracks_2d", 3)
    n_frames = xy.shape[0]
    if n_frames != len(frames):
        raise InputError(f"{track_file}: {n_frames} frames of tracks but {len(frames)} frames in {seq_dir}")
    vis = _key(tracks, track_file, "visibility", 2).astype(bool)
    xyz = _key(tracks, track_file, "tracks_3d", 3)
    start = int(tracks.get("query_frame", 0))  # 'queries' holds material coordinates (mm), not pixels
    if not 0 <= start < n_frames or not vis[start].all():
        raise InputError(f"{track_file}: query_frame {start} must be a frame where every query is visible")
    frames, xy, vis, xyz = frames[start:], xy[start:], vis[start:], xyz[start:]
    truth = PointTruth(np.arange(len(frames)), np.where(vis[..., None], xy, np.nan), vis,
                       np.where(vis[..., None], xyz, np.nan))
    depth = [out / "gt_depth" / name / f"{p.stem}.png" for p in frames]
    labels = [out / "gt_labels" / name / f"{p.stem}.png" for p in frames]
    return Clip(name, frames, xy[0].copy(), K, truth, depth if depth[0].is_file() else None,
                labels if labels[0].is_file() else None, {"source": "synth_tissue"})


def _npz(path: Path) -> dict[str, np.ndarray]:
    return load_npz(path)


def _key(data: dict, path: Path, key: str, ndim: int) -> np.ndarray:
    if key not in data:
        raise InputError(f"{path}: missing array {key!r} (has {sorted(data)})")
    if data[key].ndim != ndim:
        raise InputError(f"{path}: {key!r} must have {ndim} dimensions, got shape {data[key].shape}")
    return np.asarray(data[key], dtype=np.float64) if data[key].dtype != bool else data[key]


def load_generic(source: str | Path, points: str | Path, intrinsics: str | Path | None = None,
                 labels: str | Path | None = None) -> Clip:
    """A folder of frames (or a video file) + a CSV/JSON points file; optional label-map folder."""
    source = Path(source)
    folder = resolve_root(source)
    if folder != source:  # a decoded video: its frames sit in a sub-folder named after the file
        folder = folder / source.stem
    frames = DirListing().sorted_images(folder)
    if not frames:
        raise InputError(f"{folder}: no image frames (.png/.jpg)")
    points = Path(points)
    truth = _read_points(points)
    if truth.frames.max() >= len(frames):
        raise InputError(f"{points}: labels for frame {int(truth.frames.max())} but {folder} has only {len(frames)} frames")
    truth = _sorted_truth(truth, points)
    start = int(truth.frames[0])
    truth.frames = truth.frames - start
    label_paths = None
    if labels:
        label_paths = [Path(labels) / f"{p.stem}.png" for p in frames[start:]]
        absent = [p for p in label_paths if not p.is_file()]
        if absent:
            raise InputError(f"{absent[0]}: label map missing ({len(absent)} of {len(label_paths)} frames have none)")
    return Clip(folder.name if source.is_dir() else source.stem, frames[start:], _queries(truth, points),
                _optional_intrinsics(folder, intrinsics, frames[0]), truth, None, label_paths)


def _read_points(path: Path) -> PointTruth:
    if not path.is_file():
        raise InputError(f"{path}: points file not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _points_csv(path)
    if suffix == ".json":
        return _points_json(path)
    raise InputError(f"{path}: points file must be .csv or .json")


def _points_csv(path: Path) -> PointTruth:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"frame", "point", "x", "y"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise InputError(f"{path}: CSV header must contain frame,point,x,y (got {reader.fieldnames})")
        rows = []
        for lineno, row in enumerate(reader, start=2):
            try:
                if row["x"].strip() == "" or row["y"].strip() == "":
                    continue  # an explicitly unlabelled entry
                vis = row.get("visible")
                vis = True if vis in (None, "") else bool(int(float(vis)))
                rows.append((int(row["frame"]), int(row["point"]), float(row["x"]), float(row["y"]), vis))
            except (TypeError, ValueError):
                raise InputError(f"{path}:{lineno}: bad row {row} (frame,point integers; x,y numbers; visible 0/1)") from None
    if not rows:
        raise InputError(f"{path}: no labelled points")
    frames = np.array(sorted({r[0] for r in rows}))
    n_points = max(r[1] for r in rows) + 1
    if min(r[1] for r in rows) < 0 or frames.min() < 0:
        raise InputError(f"{path}: frame and point numbers must be >= 0")
    fi = {f: i for i, f in enumerate(frames)}
    xy = np.full((len(frames), n_points, 2), np.nan)
    vis = np.zeros((len(frames), n_points), bool)
    for f, p, x, y, v in rows:
        xy[fi[f], p] = (x, y)
        vis[fi[f], p] = v
    return PointTruth(frames, xy, vis)


def _points_json(path: Path) -> PointTruth:
    try:
        data = json.loads(path.read_text())
        frames = np.asarray(data["frames"], dtype=np.int64)
        entries = data["xy"]
        if len(entries) != len(frames):
            raise ValueError(f"{len(entries)} rows of xy for {len(frames)} frames")
        n_points = max(len(row) for row in entries)
        xy = np.full((len(frames), n_points, 2), np.nan)
        for i, row in enumerate(entries):
            for j, pt in enumerate(row):
                if pt is not None:
                    xy[i, j] = [float(pt[0]), float(pt[1])]
        labelled = np.isfinite(xy).all(-1)
        vis = labelled & np.asarray(data.get("visible", labelled), dtype=bool).reshape(labelled.shape)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"{path}: bad points JSON ({exc.__class__.__name__}: {exc}); expected "
                         '{"frames": [...], "xy": [[[x, y] or null, ...], ...]}') from None
    if len(frames) == 0 or frames.min() < 0:
        raise InputError(f"{path}: needs at least one labelled frame, numbered >= 0")
    return PointTruth(frames, xy, vis)


def _sorted_truth(truth: PointTruth, source: Path) -> PointTruth:
    order = np.argsort(truth.frames, kind="stable")
    if len(np.unique(truth.frames)) != len(truth.frames):
        raise InputError(f"{source}: a frame is labelled twice")
    return PointTruth(truth.frames[order], truth.xy[order], truth.visible[order],
                      None if truth.xyz is None else truth.xyz[order])


def _queries(truth: PointTruth, source: Path) -> np.ndarray:
    first = truth.visible[0]
    if not first.all():
        raise InputError(f"{source}: the first labelled frame must label every point visibly (points "
                         f"{np.flatnonzero(~first)[:10].tolist()} are not); tracking starts there")
    return truth.xy[0].copy()


def _optional_intrinsics(folder: Path, override: str | Path | None, frame: Path) -> np.ndarray | None:
    if override:
        return _intrinsics_for(Path(override), frame)
    for name in INTRINSICS_NAMES:
        if (folder / name).is_file():
            return _intrinsics_for(folder / name, frame)
    return None


def _intrinsics_for(path: Path, frame: Path) -> np.ndarray:
    """3 x 3 K in pixels of the stored frames (rescaled when the file names another width/height)."""
    K, hw = read_intrinsics(path)
    frame_hw = image_hw(frame)
    if hw is None or tuple(hw) == tuple(frame_hw):
        return K
    K4 = torch.eye(4)
    K4[:3, :3] = torch.as_tensor(K, dtype=torch.float32)
    return resize_intrinsics(K4, hw, frame_hw)[:3, :3].double().numpy()


# ---- outputs -------------------------------------------------------------------------------------
def save_tracks(out_dir: str | Path, xy: np.ndarray, visible: np.ndarray, xyz: np.ndarray | None = None,
                meta: dict | None = None) -> dict[str, Path]:
    """tracks.npz (arrays) and tracks.json (the same as lists, null for unknown), written atomically."""
    out_dir = Path(out_dir)
    arrays = {"tracks_2d": xy.astype(np.float32), "visibility": visible.astype(bool)}
    if xyz is not None:
        arrays["tracks_3d"] = xyz.astype(np.float32)
    save_npz(out_dir / "tracks.npz", **arrays)
    doc = {"meta": meta or {}, "tracks_2d": _nan_to_none(xy), "visibility": visible.astype(bool).tolist()}
    if xyz is not None:
        doc["tracks_3d"] = _nan_to_none(xyz)
    write_json(out_dir / "tracks.json", doc)
    return {"npz": out_dir / "tracks.npz", "json": out_dir / "tracks.json"}


def _nan_to_none(a: np.ndarray) -> list:
    rounded = np.round(a.astype(np.float64), 3)
    return np.where(np.isfinite(rounded), rounded, None).tolist()


def write_overlay(path: str | Path, clip: Clip, xy: np.ndarray, visible: np.ndarray, fps: float = 10.0) -> Path:
    """An mp4 (H.264 with the video extra, else mp4v) with each track drawn on its frame: green
    visible, red occluded, white tail, and the labelled ground truth (where a frame has it) as
    yellow crosses."""
    path = Path(path)
    gt_at = {} if clip.truth is None else {int(f): i for i, f in enumerate(clip.truth.frames)}
    first = clip.frame(0)
    with Mp4Writer(path, fps) as writer:
        for t in range(len(xy)):
            img = cv2.cvtColor(first if t == 0 else clip.frame(t), cv2.COLOR_RGB2BGR)
            _draw_frame(img, xy, visible, t, clip.truth, gt_at.get(t))
            writer.add(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return path


def _draw_frame(img, xy, visible, t, truth, gt_row) -> None:
    r = max(2, img.shape[1] // 160)
    for n in range(xy.shape[1]):
        tail = xy[max(0, t - 8): t + 1, n]
        tail = tail[np.isfinite(tail).all(1)]
        if len(tail) > 1:
            cv2.polylines(img, [np.round(tail).astype(np.int32)], False, (255, 255, 255), 1, cv2.LINE_AA)
        if np.isfinite(xy[t, n]).all():
            colour = (0, 200, 0) if visible[t, n] else (0, 0, 230)
            cv2.circle(img, tuple(int(v) for v in np.round(xy[t, n])), r, colour, -1, cv2.LINE_AA)
        if gt_row is not None and truth.visible[gt_row, n]:
            gx, gy = (int(v) for v in np.round(truth.xy[gt_row, n]))
            cv2.drawMarker(img, (gx, gy), (0, 220, 255), cv2.MARKER_CROSS, 2 * r + 2, 1)
