"""From a checkpoint to depth: a Predictor for images, folders and videos; point clouds; export.

A checkpoint carries its resolved config (see ``training.py``), so ``load_predictor(path)`` needs
nothing else. Inputs of any size are resized to the network resolution; disparity is upsampled
back to the input size before it is inverted to depth (inverting first would blur depth edges into
wrong intermediate depths).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from semhint.core import geometry
from semhint.core.config import Config, ConfigError, from_dict
from semhint.core.fileio import InputError, atomic_path, read_rgb, save_image, save_npy, write_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> tuple[Config, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(config, depth-net state dict, pose-net state dict) of a semhint checkpoint; InputError otherwise."""
    from semhint.training import CONFIG_KEY

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle garbage, not a torch file at all
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or CONFIG_KEY not in ckpt or "state_dict" not in ckpt:
        raise InputError(f"{path}: not a semhint checkpoint (no '{CONFIG_KEY}' entry; was it written by `semhint train`?)")
    try:
        cfg = from_dict(ckpt[CONFIG_KEY], f"{path} (stored config)")
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    state = ckpt["state_dict"]
    return cfg, _strip(state, "depth_net."), _strip(state, "pose_net.")


def _strip(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_depth_net(path: str | Path) -> tuple[Config, torch.nn.Module]:
    """The depth network of a checkpoint, in eval mode, on CPU."""
    from semhint.models import build_depth_net

    cfg, depth_state, _ = read_checkpoint(path)
    net = build_depth_net(cfg.model)
    try:
        net.load_state_dict(depth_state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"{path}: weights do not match the stored model config ({first})") from None
    return cfg, net.eval()


# ----------------------------------------------------------------------------------------------
# the predictor
# ----------------------------------------------------------------------------------------------
class Predictor:
    """Depth for uint8 RGB images of any size with one loaded network.

    On CPU the network runs in channels_last memory format (weights and input), which measured
    10-20% faster for the ResNet depth net at 192x640 than the default layout, with the same output
    to float rounding. ``channels_last`` forces it on or off (None: on for CPU only). Like the move
    to ``device``, the conversion applies to ``net`` itself.
    """

    def __init__(self, net: torch.nn.Module, config: Config, device: str | torch.device = "cpu",
                 channels_last: bool | None = None):
        self.device = torch.device(device)
        self.channels_last = self.device.type == "cpu" if channels_last is None else channels_last
        self.net = net.to(self.device).eval()
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.config = config

    @property
    def size(self) -> tuple[int, int]:
        """Network input (height, width)."""
        return self.config.data.height, self.config.data.width

    def _to_tensor(self, images: list[np.ndarray]) -> torch.Tensor:
        import cv2

        h, w = self.size
        batch = []
        for rgb in images:
            if rgb.ndim != 3 or rgb.shape[2] != 3:
                raise InputError(f"expected an H x W x 3 RGB image, got shape {rgb.shape}")
            resized = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if rgb.shape[1] > w else cv2.INTER_LINEAR)
            batch.append(torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1))
        x = torch.stack(batch).to(self.device, dtype=torch.float32) / 255.0
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _scaled_disparity(self, images: list[np.ndarray]) -> torch.Tensor:
        """B x 1 x h x w scaled disparity (1 / depth) at network resolution."""
        with torch.inference_mode():
            sigmoid = self.net(self._to_tensor(images))["disp/0"].float()
        m = self.config.model
        scaled, _ = geometry.disp_to_depth(sigmoid, m.min_depth, m.max_depth)
        return scaled

    def predict_disparity(self, rgb: np.ndarray) -> np.ndarray:
        """Scaled disparity (h x w float32) at network resolution: what the Eigen protocol resizes itself."""
        return self.predict_disparity_batch([rgb])[0]

    def predict_disparity_batch(self, images: list[np.ndarray]) -> np.ndarray:
        return self._scaled_disparity(images)[:, 0].cpu().numpy()

    def predict_depth(self, rgb: np.ndarray) -> np.ndarray:
        """Depth (H x W float32, config unit, up to the monocular scale) at the input image's size."""
        return self.predict_depth_batch([rgb])[0]

    def predict_depth_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Per-image depth at each image's own size (inputs may differ in size)."""
        scaled = self._scaled_disparity(images)
        out = []
        for disp, rgb in zip(scaled, images):
            up = F.interpolate(disp[None], size=rgb.shape[:2], mode="bilinear", align_corners=False)
            out.append((1.0 / up[0, 0].clamp_min(1e-6)).cpu().numpy().astype(np.float32))
        return out


def load_predictor(checkpoint: str | Path, device: str | torch.device = "cpu") -> Predictor:
    """A Predictor from a semhint checkpoint; InputError for a missing, corrupt or foreign file."""
    cfg, net = load_depth_net(checkpoint)
    return Predictor(net, cfg, device)


# ----------------------------------------------------------------------------------------------
# point clouds
# ----------------------------------------------------------------------------------------------
def depth_to_point_cloud(depth: np.ndarray, K: np.ndarray, rgb: np.ndarray | None = None, max_depth: float | None = None
                         ) -> tuple[np.ndarray, np.ndarray | None]:
    """(N x 3 float32 points in the camera frame, N x 3 uint8 colours) of valid depth pixels.

    ``K`` must be in pixels of ``depth``'s resolution (3 x 3 or 4 x 4).
    """
    points = geometry.depth_to_points(torch.from_numpy(np.asarray(depth, np.float32)), torch.as_tensor(K, dtype=torch.float32))
    points = points.numpy()
    valid = np.isfinite(points).all(1) & (points[:, 2] > 0)
    if max_depth is not None:
        valid &= points[:, 2] <= max_depth
    colors = rgb.reshape(-1, 3)[valid] if rgb is not None else None
    return points[valid].astype(np.float32), colors


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray | None = None, binary: bool = True) -> None:
    """A PLY point cloud (binary little-endian or ASCII), written atomically."""
    n = len(points)
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", f"element vertex {n}",
              "property float x", "property float y", "property float z"]
    if colors is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")] + ([("r", "u1"), ("g", "u1"), ("b", "u1")] if colors is not None else [])
    rows = np.empty(n, dtype=fields)
    rows["x"], rows["y"], rows["z"] = points[:, 0], points[:, 1], points[:, 2]
    if colors is not None:
        rows["r"], rows["g"], rows["b"] = colors[:, 0], colors[:, 1], colors[:, 2]
    with atomic_path(path, suffix=".ply") as tmp:
        with open(tmp, "wb") as fh:
            fh.write(("\n".join(header) + "\n").encode("ascii"))
            if binary:
                fh.write(rows.tobytes())
            else:
                fmt = "%.6g %.6g %.6g" + (" %d %d %d" if colors is not None else "")
                np.savetxt(fh, np.array(rows.tolist()), fmt=fmt)


def read_intrinsics_file(path: str | Path, image_hw: tuple[int, int]) -> np.ndarray:
    """3 x 3 K scaled to ``image_hw`` from a folder-dataset intrinsics file (YAML/JSON, fx fy cx cy)."""
    from semhint.data.folder import read_intrinsics

    K, K_hw = read_intrinsics(path)
    K4 = torch.eye(4)
    K4[:3, :3] = torch.as_tensor(np.asarray(K)[:3, :3], dtype=torch.float32)
    if K_hw is not None and tuple(K_hw) != tuple(image_hw):
        K4 = geometry.resize_intrinsics(K4, tuple(K_hw), tuple(image_hw))
    return K4[:3, :3].numpy()


# ----------------------------------------------------------------------------------------------
# inputs: images, folders, videos
# ----------------------------------------------------------------------------------------------
@dataclass
class Source:
    """One user input: a list of images or a video, with a name for the output files."""

    path: Path
    kind: str  # image | folder | video


def classify_inputs(inputs: list[str | Path]) -> list[Source]:
    """Sort each CLI input into image / folder / video, failing on anything else up front."""
    sources = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
                raise InputError(f"{path}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
            sources.append(Source(path, "folder"))
        elif not path.exists():
            raise InputError(f"{path}: input not found")
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            sources.append(Source(path, "image"))
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            sources.append(Source(path, "video"))
        else:
            raise InputError(f"{path}: unsupported input type (images: {IMAGE_SUFFIXES}, videos: {VIDEO_SUFFIXES})")
    return sources


def iter_video(path: Path) -> Iterator[tuple[np.ndarray, float]]:
    """RGB frames of a video file (and its fps); an unreadable file is an InputError."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read() if cap.isOpened() else (False, None)
    if not ok:
        cap.release()
        raise InputError(f"{path}: cannot read video (not a video file, corrupt, or codec unsupported by OpenCV)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    try:
        while ok:
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), fps
            ok, frame = cap.read()
    finally:
        cap.release()


def iter_frames(source: Source) -> Iterator[tuple[str, np.ndarray]]:
    """(output name, RGB uint8 frame) for every frame of a source."""
    if source.kind == "image":
        yield source.path.stem, read_rgb(source.path)
    elif source.kind == "folder":
        for p in sorted(q for q in source.path.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES):
            yield f"{source.path.name}/{p.stem}", read_rgb(p)
    else:
        for i, (rgb, _) in enumerate(iter_video(source.path)):
            yield f"{source.path.stem}/{i:06d}", rgb


# ----------------------------------------------------------------------------------------------
# the predict command
# ----------------------------------------------------------------------------------------------
@dataclass
class PredictOptions:
    out_dir: Path
    png16: bool = True
    ply: bool = False
    intrinsics: str | None = None
    ply_ascii: bool = False


def _save_depth_png16(path: Path, depth: np.ndarray) -> None:
    from semhint.core.conventions import DEPTH_PNG_SCALE

    # the PNG's range ends at 65535 / 256 units; the .npy beside it keeps the exact values
    from semhint.core.fileio import write_depth_png

    # the PNG's range ends at 65535 / 256 units; the .npy beside it keeps the exact values
    write_depth_png(path, np.minimum(depth, 65535 / DEPTH_PNG_SCALE))


def _write_frame_outputs(name: str, rgb: np.ndarray, depth: np.ndarray, opts: PredictOptions, K: np.ndarray | None,
                         max_depth: float) -> np.ndarray:
    """depth .npy, 16-bit PNG, colour preview and optional PLY for one frame; returns the preview."""
    from semhint.core.pictures import colorize_depth

    base = opts.out_dir / name
    save_npy(base.with_name(base.name + "_depth.npy"), depth)
    if opts.png16:
        _save_depth_png16(base.with_name(base.name + "_depth.png"), depth)
    preview = colorize_depth(depth)
    save_image(base.with_name(base.name + "_preview.png"), preview)
    if K is not None:
        points, colors = depth_to_point_cloud(depth, K, rgb, max_depth=max_depth)
        write_ply(base.with_name(base.name + ".ply"), points, colors, binary=not opts.ply_ascii)
    return preview


class _SideBySideVideo:
    """Input | colour-mapped depth, written to a temp file and renamed when complete."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps, self.writer, self.tmp = path, fps, None, None

    def add(self, rgb: np.ndarray, preview: np.ndarray) -> None:
        import cv2

        frame = np.concatenate([rgb, preview], axis=1)
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = self.path.with_name(f".{self.path.stem}.tmp.mp4")
            h, w = frame.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
        self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.tmp.replace(self.path)


def predict_inputs(checkpoint: str | Path, inputs: list[str | Path], out_dir: str | Path, device: str = "cpu",
                   png16: bool = True, ply: bool = False, intrinsics: str | None = None, ply_ascii: bool = False
                   ) -> dict:
    """The `semhint predict` command: depth files for every frame of every input; returns a summary."""
    from tqdm import tqdm

    if ply and not intrinsics:
        raise InputError("--ply needs --intrinsics FILE (fx fy cx cy of the input images) to place points in 3-D")
    sources = classify_inputs(inputs)
    predictor = load_predictor(checkpoint, device)
    opts = PredictOptions(Path(out_dir), png16=png16, ply=ply, intrinsics=intrinsics, ply_ascii=ply_ascii)
    frames, seconds = 0, 0.0
    for source in sources:
        video = _SideBySideVideo(opts.out_dir / f"{source.path.stem}_depth.mp4", _video_fps(source)) \
            if source.kind == "video" else None
        try:
            for name, rgb in tqdm(iter_frames(source), desc=source.path.name, unit="frame", leave=False):
                t0 = time.perf_counter()
                depth = predictor.predict_depth(rgb)
                seconds += time.perf_counter() - t0
                frames += 1
                K = read_intrinsics_file(intrinsics, rgb.shape[:2]) if ply else None
                preview = _write_frame_outputs(name, rgb, depth, opts, K, predictor.config.model.max_depth)
                if video is not None:
                    video.add(rgb, preview)
        finally:
            if video is not None:
                video.close()
    fps = frames / seconds if seconds > 0 else float("nan")
    summary = {"frames": frames, "network_fps": fps, "out_dir": str(opts.out_dir), "checkpoint": str(checkpoint)}
    write_json(opts.out_dir / "predict_summary.json", summary)
    print(f"predicted {frames} frame(s) at {fps:.1f} frames/s (network only) -> {opts.out_dir}")
    return summary


def _video_fps(source: Source) -> float:
    import cv2

    cap = cv2.VideoCapture(str(source.path))
    fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    cap.release()
    return fps if fps and fps > 0 else 10.0


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------
class DisparityOnly(torch.nn.Module):
    """The depth network with a single tensor output (sigmoid disparity at scale 0) for export."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)["disp/0"]


def export_model(checkpoint: str | Path, fmt: str, out: str | Path | None = None, seed: int = 0) -> dict:
    """The `semhint export` command: the depth net alone as ONNX or TorchScript, dynamic batch, verified.

    Verification runs the exported model and PyTorch on a random batch of 2 (the export traced
    batch 1, so this also proves the batch axis is dynamic) and reports the max absolute difference.
    """
    if fmt not in ("onnx", "torchscript"):
        raise InputError(f"--format must be onnx or torchscript, got {fmt!r}")
    cfg, net = load_depth_net(checkpoint)
    model = DisparityOnly(net).eval()
    h, w = cfg.data.height, cfg.data.width
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    out = Path(out) if out is not None else Path(checkpoint).with_suffix(suffix)
    example = torch.rand(1, 3, h, w)
    test = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = model(test).numpy()
    if fmt == "onnx":
        got = _export_onnx(model, example, test, out)
    else:
        got = _export_torchscript(model, example, test, out)
    max_diff = float(np.abs(got - expected).max())
    result = {"format": fmt, "path": str(out), "input": [-1, 3, h, w], "max_abs_diff": max_diff}
    print(f"exported {fmt} -> {out}  (input N x 3 x {h} x {w}; max |exported - PyTorch| = {max_diff:.2e} on a random batch of 2)")
    return result


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, test: torch.Tensor, out: Path) -> np.ndarray:
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError("ONNX export needs the onnx extra: pip install 'semhint[onnx]'") from None
    with atomic_path(out, suffix=".onnx") as tmp, warnings.catch_warnings():
        # the TorchScript-based exporter (dynamo=False: no onnxscript graph capture needed) warns
        # about its own deprecation and constant folding; the max-diff check below is what counts
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(tmp), input_names=["image"], output_names=["disparity"],
                          dynamic_axes={"image": {0: "batch"}, "disparity": {0: "batch"}}, opset_version=17,
                          dynamo=False)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        return session.run(None, {"image": test.numpy()})[0]


def _export_torchscript(model: torch.nn.Module, example: torch.Tensor, test: torch.Tensor, out: Path) -> np.ndarray:
    with atomic_path(out, suffix=".pt") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still the TorchScript path
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # size-dependent padding: H x W are fixed by design
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False)
        traced.save(str(tmp))
        loaded = torch.jit.load(str(tmp))
        with torch.inference_mode():
            return loaded(test).numpy()
