"""The hostile-input battery: one row per bad input, each run through the CLI as a user would.

Every row builds a small world of inputs (frames, a KITTI-like tree, label maps, ground truth, a
config), breaks one thing, runs `semhint ...` in-process and asserts what docs/RELIABILITY.md
promises: exit status 2 (not 0, 1 or a crash), one error line on stderr that names the file or
config key at fault, no traceback, and not one input file changed or added (the input tree is
hashed before and after). Rows that may crash the process (non-finite geometry reaching the grid
sampler) also run in a subprocess, marked slow.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from semhint.app.cli import main
from semhint.core.config import from_dict
from semhint.training import SemHintModule, save_model_checkpoint

H, W = 32, 48  # frames of the folder dataset
KH, KW = 24, 80  # frames of the KITTI-like tree
DATE, DRIVE = "2011_01_01", "2011_01_01_drive_7_sync"


# ----------------------------------------------------------------------------------------------
# the world of inputs every row starts from
# ----------------------------------------------------------------------------------------------
@dataclass
class World:
    root: Path  # tmp_path: inputs/ is hashed, out/ is where outputs go
    checkpoint: Path

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def frames(self) -> Path:
        return self.inputs / "frames"

    @property
    def seq(self) -> Path:
        return self.frames / "seq"

    @property
    def labels(self) -> Path:
        return self.inputs / "labels"

    @property
    def kitti(self) -> Path:
        return self.inputs / "kitti"

    @property
    def drive_images(self) -> Path:
        return self.kitti / DATE / DRIVE / "image_02" / "data"

    @property
    def velo(self) -> Path:
        return self.kitti / DATE / DRIVE / "velodyne_points" / "data"

    @property
    def cam_to_cam(self) -> Path:
        return self.kitti / DATE / "calib_cam_to_cam.txt"

    @property
    def split(self) -> Path:
        return self.inputs / "split.txt"

    @property
    def gt(self) -> Path:
        return self.inputs / "gt.npz"

    @property
    def config(self) -> Path:
        return self.inputs / "train.yaml"

    @property
    def ckpt(self) -> Path:
        return self.inputs / "model.ckpt"

    def train(self, *overrides: str) -> list[str]:
        """`semhint train` of the folder dataset, one step, its run folder outside the inputs."""
        return ["train", str(self.config), f"trainer.out_dir={self.out / 'run'}", *overrides]


def _save_rgb(path: Path, seed: int, hw: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*hw, 3), dtype=np.uint8)).save(path)


def _save_labels(path: Path, hw: tuple[int, int] = (H, W), top: int = 3, dtype=np.uint8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = (np.arange(hw[0] * hw[1]).reshape(hw) % (top + 1)).astype(dtype)
    Image.fromarray(labels).save(path)


def _kitti_calib(P2: str = "40 0 39.5 0 0 40 11.5 0 0 0 1 0", S2: str = f"{KW}.0 {KH}.0",
                 R: str = "0 -1 0 0 0 -1 1 0 0") -> tuple[str, str]:
    cam = f"calib_time: 01-Jan-2011 00:00:00\nS_rect_02: {S2}\nR_rect_00: 1 0 0 0 1 0 0 0 1\nP_rect_02: {P2}\n"
    return cam, f"R: {R}\nT: 0 0 0\n"


def build_world(root: Path, checkpoint: Path) -> World:
    w = World(root, checkpoint)
    for i in range(4):
        _save_rgb(w.seq / f"{i:04d}.png", i)
        _save_labels(w.labels / "seq" / f"{i:04d}.png")
    (w.seq / "intrinsics.yaml").write_text("fx: 30\nfy: 30\ncx: 24\ncy: 16\n")
    cam, velo = _kitti_calib()
    (w.kitti / DATE).mkdir(parents=True)
    w.cam_to_cam.write_text(cam)
    (w.kitti / DATE / "calib_velo_to_cam.txt").write_text(velo)
    w.velo.mkdir(parents=True)
    for i in range(3):
        _save_rgb(w.drive_images / f"{i:010d}.png", 10 + i, (KH, KW))
        np.array([[10.0, 0.0, 0.0, 0.5]], dtype=np.float32).tofile(w.velo / f"{i:010d}.bin")
    w.split.write_text(f"{DATE}/{DRIVE} 1 l\n")
    gt = np.zeros((2, KH, KW), np.float32)
    gt[:, 5:20, 10:70] = 10.0
    np.savez(w.gt, gt_depths=gt)
    w.config.write_text(
        "name: battery\n"
        f"data: {{kind: folder, path: {w.frames}, height: 32, width: 48, num_workers: 0, augment: false}}\n"
        "optim: {batch_size: 1, max_steps: 1, epochs: 1}\n"
        "trainer: {accelerator: cpu, progress_bar: false, log_every_n_steps: 1}\n")
    w.ckpt.write_bytes(checkpoint.read_bytes())
    w.out.mkdir()
    return w


def tree_hash(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------
# ways to break things
# ----------------------------------------------------------------------------------------------
def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def foreign(path: Path) -> Path:
    """A readable PyTorch file that is not a semhint checkpoint."""
    torch.save({"state_dict": {}, "weights": 1}, path)
    return path


def file_at(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a folder\n")
    return path


def as_jpeg(w: World, index: int = 1) -> Path:
    """Replace frame ``index`` of the folder sequence by a JPEG (same name order)."""
    png = w.seq / f"{index:04d}.png"
    jpg = png.with_suffix(".jpg")
    Image.open(png).convert("RGB").save(jpg, quality=95)
    png.unlink()
    return jpg


def predictions(w: World, array: np.ndarray | None = None, **arrays: np.ndarray) -> Path:
    path = w.inputs / ("pred.npz" if arrays else "pred.npy")
    if arrays:
        np.savez(path, **arrays)
    else:
        np.save(path, array)
    return path


def good_preds() -> np.ndarray:
    return np.full((2, KH, KW), 0.1, np.float32)


def predict_cmd(w: World, *extra: str, inputs: list[str] | None = None, out: Path | None = None) -> list[str]:
    return ["predict", str(w.ckpt), *(inputs or [str(w.seq)]), "--out", str(out or w.out / "pred"), *extra]


def export_cmd(w: World, output: Path | None = None) -> list[str]:
    return ["kitti", "export-gt", "--data-path", str(w.kitti), "--split", str(w.split),
            "--output", str(output or w.out / "gt.npz")]


def no_label_maps_written(w: World) -> None:
    assert not list((w.out / "noisy").rglob("*.png")), "labels corrupt wrote maps before finding the bad input"


# ----------------------------------------------------------------------------------------------
# the rows: (id, make the bad input and return the command line, what the message must name)
# ----------------------------------------------------------------------------------------------
@dataclass
class Row:
    id: str
    make: Callable[[World], list[str]]
    names: Callable[[World], str]  # a substring the error line must contain: the file or key at fault
    check: Callable[[World], None] | None = None
    marks: list = field(default_factory=list)


ROWS = [
    # --- outputs that cannot be written, or would overwrite the input ---------------------------
    Row("predict-out-is-a-file", lambda w: predict_cmd(w, out=file_at(w.out / "f")), lambda w: str(w.out / "f")),
    Row("predict-out-under-a-file", lambda w: predict_cmd(w, out=file_at(w.out / "f") / "sub"), lambda w: str(w.out / "f")),
    Row("predict-out-inside-input", lambda w: predict_cmd(w, out=w.seq / "depth"), lambda w: str(w.seq)),
    Row("predict-out-mirrors-into-input", lambda w: predict_cmd(w, out=w.frames), lambda w: str(w.seq)),
    Row("predict-same-input-twice", lambda w: predict_cmd(w, inputs=[str(w.seq), str(w.seq)]), lambda w: str(w.seq)),
    Row("predict-input-missing", lambda w: predict_cmd(w, inputs=[str(w.inputs / "nope")]), lambda w: "nope"),
    Row("evaluate-out-is-a-folder", lambda w: ["evaluate", "--gt", str(w.gt), "--predictions",
                                               str(predictions(w, good_preds())), "--out", str(w.out)],
        lambda w: str(w.out)),
    Row("export-gt-output-is-a-folder", lambda w: export_cmd(w, w.out), lambda w: str(w.out)),
    Row("export-gt-output-under-a-file", lambda w: export_cmd(w, file_at(w.out / "f") / "gt.npz"), lambda w: str(w.out / "f")),
    Row("export-out-is-a-folder", lambda w: ["export", str(w.ckpt), "--format", "onnx", "--out", str(w.out)],
        lambda w: str(w.out)),
    Row("split-make-out-is-a-folder", lambda w: ["split", "make", "--data-path", str(w.frames), "--kind", "folder",
                                                 "--out", str(w.out)], lambda w: str(w.out)),
    Row("synth-out-is-a-file", lambda w: ["synth", "drive", "--out", str(file_at(w.out / "f")), "--preset", "tiny"],
        lambda w: str(w.out / "f")),
    Row("track-out-is-a-file", lambda w: ["track", str(w.seq), "--out", str(file_at(w.out / "f"))], lambda w: str(w.out / "f")),
    Row("labels-train-out-is-a-folder", lambda w: ["labels", "train", "--images", str(w.frames), "--labels", str(w.labels),
                                                   "--out", str(w.out), "--classes", "4"], lambda w: str(w.out)),
    Row("labels-predict-out-is-data", lambda w: ["labels", "predict", "--model", str(w.ckpt), "--data-path", str(w.frames),
                                                 "--out", str(w.frames)], lambda w: str(w.frames)),
    Row("labels-predict-out-inside-data", lambda w: ["labels", "predict", "--model", str(w.ckpt), "--data-path",
                                                     str(w.frames), "--out", str(w.seq / "lab")], lambda w: str(w.frames)),
    Row("labels-predict-preview-inside-data", lambda w: ["labels", "predict", "--model", str(w.ckpt), "--data-path",
                                                         str(w.frames), "--out", str(w.out / "lab"), "--preview",
                                                         str(w.seq / "sheet.png")], lambda w: str(w.frames)),
    Row("labels-corrupt-out-inside-gt", lambda w: ["labels", "corrupt", "--gt", str(w.labels), "--out",
                                                   str(w.labels / "noisy"), "--classes", "tissue"],
        lambda w: str(w.labels)),
    # --- checkpoints ----------------------------------------------------------------------------
    Row("predict-truncated-checkpoint", lambda w: predict_cmd(w) if truncate(w.ckpt) else [], lambda w: str(w.ckpt)),
    Row("predict-foreign-checkpoint", lambda w: predict_cmd(w) if foreign(w.ckpt) else [], lambda w: str(w.ckpt)),
    Row("predict-checkpoint-is-text", lambda w: predict_cmd(w) if write(w.ckpt, "hello") else [], lambda w: str(w.ckpt)),
    Row("export-truncated-checkpoint", lambda w: ["export", str(truncate(w.ckpt)), "--format", "torchscript",
                                                  "--out", str(w.out / "m.pt")], lambda w: str(w.ckpt)),
    Row("train-resume-truncated-checkpoint", lambda w: w.train("--resume", str(truncate(w.ckpt))), lambda w: str(w.ckpt)),
    Row("train-resume-model-only-checkpoint", lambda w: w.train("--resume", str(w.ckpt)), lambda w: str(w.ckpt)),
    Row("train-resume-foreign-checkpoint", lambda w: w.train("--resume", str(foreign(w.ckpt))), lambda w: str(w.ckpt)),
    Row("labels-predict-corrupt-model", lambda w: ["labels", "predict", "--model", str(truncate(w.ckpt)), "--data-path",
                                                   str(w.frames), "--out", str(w.out / "lab")], lambda w: str(w.ckpt)),
    # --- configs --------------------------------------------------------------------------------
    Row("config-bad-yaml", lambda w: w.train() if write(w.config, "data: {kind: folder\noptim: [\n") else [],
        lambda w: str(w.config)),
    Row("config-top-level-list", lambda w: w.train() if write(w.config, "- 1\n- 2\n") else [], lambda w: str(w.config)),
    Row("config-unknown-key", lambda w: w.train("optim.learning_rate=0.1"), lambda w: "optim.learning_rate"),
    Row("config-lr-nan", lambda w: w.train("optim.lr=.nan"), lambda w: "optim.lr"),
    Row("config-lr-huge", lambda w: w.train("optim.lr=1e6"), lambda w: "optim.lr"),
    Row("config-loss-weight-inf", lambda w: w.train("loss.smoothness=.inf"), lambda w: "loss.smoothness"),
    Row("config-loss-weight-negative", lambda w: w.train("loss.seg_weight=-1"), lambda w: "loss.seg_weight"),
    Row("config-hint-weight-nan", lambda w: ["config", "show", "synth_drive", "refine.hint_weight=.nan"],
        lambda w: "refine.hint_weight"),
    Row("config-unknown-accelerator", lambda w: w.train("trainer.accelerator=quantum"), lambda w: "trainer.accelerator"),
    Row("config-unknown-strategy", lambda w: w.train("trainer.strategy=telepathy"), lambda w: "trainer.strategy"),
    Row("config-override-not-yaml", lambda w: w.train("optim.lr=[1,"), lambda w: "optim.lr"),
    # --- split files ----------------------------------------------------------------------------
    Row("export-gt-bad-split-line", lambda w: export_cmd(w) if write(w.split, "just-one-token-and x y z\n") else [],
        lambda w: str(w.split)),
    Row("export-gt-empty-split", lambda w: export_cmd(w) if write(w.split, "# nothing\n") else [], lambda w: str(w.split)),
    Row("train-split-bad-line", lambda w: w.train("data.train_split=" + str(write(w.inputs / "s.txt", "seq one\n"))),
        lambda w: str(w.inputs / "s.txt")),
    Row("train-split-frame-out-of-range", lambda w: w.train("data.train_split=" + str(write(w.inputs / "s.txt", "seq 9\n"))),
        lambda w: str(w.inputs / "s.txt")),
    # --- calibration and intrinsics -------------------------------------------------------------
    Row("export-gt-nan-p-rect", lambda w: export_cmd(w) if write(w.cam_to_cam, _kitti_calib(P2="nan 0 39.5 0 0 40 11.5 0 0 0 1 0")[0]) else [],
        lambda w: str(w.cam_to_cam)),
    Row("export-gt-inf-velo-to-cam", lambda w: export_cmd(w) if write(w.kitti / DATE / "calib_velo_to_cam.txt",
                                                                      _kitti_calib(R="0 -1 0 0 0 -1 inf 0 0")[1]) else [],
        lambda w: "calib_velo_to_cam.txt"),
    Row("export-gt-negative-s-rect", lambda w: export_cmd(w) if write(w.cam_to_cam, _kitti_calib(S2="-80 24")[0]) else [],
        lambda w: str(w.cam_to_cam)),
    Row("export-gt-truncated-velodyne", lambda w: export_cmd(w) if (w.velo / "0000000001.bin").write_bytes(b"\0" * 20) else [],
        lambda w: "0000000001.bin"),
    Row("train-nan-fx", lambda w: w.train() if write(w.seq / "intrinsics.yaml", "fx: .nan\nfy: 30\ncx: 24\ncy: 16\n") else [],
        lambda w: "intrinsics.yaml"),
    Row("train-inf-cy", lambda w: w.train() if write(w.seq / "intrinsics.yaml", "fx: 30\nfy: 30\ncx: 24\ncy: .inf\n") else [],
        lambda w: "intrinsics.yaml"),
    Row("train-cx-outside-image", lambda w: w.train() if write(w.seq / "intrinsics.yaml", "fx: 30\nfy: 30\ncx: 900\ncy: 16\n") else [],
        lambda w: "intrinsics.yaml"),
    Row("train-intrinsics-aspect-mismatch", lambda w: w.train() if write(
        w.seq / "intrinsics.yaml", "fx: 30\nfy: 30\ncx: 24\ncy: 16\nwidth: 48\nheight: 48\n") else [],
        lambda w: "intrinsics.yaml"),
    Row("train-kitti-nan-p-rect", lambda w: w.train("data.kind=kitti", f"data.path={w.kitti}", "data.width=80", "data.height=32")
        if write(w.cam_to_cam, _kitti_calib(P2="40 0 39.5 0 0 nan 11.5 0 0 0 1 0")[0]) else [], lambda w: str(w.cam_to_cam)),
    Row("predict-ply-nan-fx", lambda w: predict_cmd(w, "--ply", "--intrinsics", str(
        write(w.inputs / "K.yaml", "fx: .nan\nfy: 30\ncx: 24\ncy: 16\n"))), lambda w: str(w.inputs / "K.yaml")),
    Row("predict-ply-aspect-mismatch", lambda w: predict_cmd(w, "--ply", "--intrinsics", str(
        write(w.inputs / "K.yaml", "fx: 30\nfy: 30\ncx: 24\ncy: 24\nwidth: 48\nheight: 48\n"))), lambda w: str(w.inputs / "K.yaml")),
    # --- images ---------------------------------------------------------------------------------
    Row("predict-truncated-jpeg", lambda w: predict_cmd(w) if truncate(as_jpeg(w)) else [], lambda w: "0001.jpg"),
    Row("train-truncated-jpeg", lambda w: w.train() if truncate(as_jpeg(w)) else [], lambda w: "0001.jpg"),
    Row("train-truncated-png", lambda w: w.train() if truncate(w.seq / "0001.png") else [], lambda w: "0001.png"),
    Row("train-frame-of-another-size", lambda w: w.train() if _save_rgb(w.seq / "0002.png", 2, (H, W + 8)) is None else [],
        lambda w: "0002.png"),
    Row("train-label-of-another-size", lambda w: w.train("model.num_classes=4", f"data.labels={w.labels}")
        if _save_labels(w.labels / "seq" / "0001.png", (H + 2, W)) is None else [], lambda w: "0001.png"),
    Row("train-label-16bit-258", lambda w: w.train("model.num_classes=4", f"data.labels={w.labels}")
        if _save_labels(w.labels / "seq" / "0001.png", top=258, dtype=np.uint16) is None else [], lambda w: "0001.png"),
    Row("train-label-out-of-range", lambda w: w.train("model.num_classes=2", f"data.labels={w.labels}"), lambda w: str(w.labels)),
    Row("labels-corrupt-16bit-258", lambda w: ["labels", "corrupt", "--gt", str(w.labels), "--out", str(w.out / "noisy"),
                                               "--classes", "cityscapes"]
        if _save_labels(w.labels / "seq" / "0003.png", top=258, dtype=np.uint16) is None else [],
        lambda w: "0003.png", check=no_label_maps_written),
    Row("labels-corrupt-class-outside-set", lambda w: ["labels", "corrupt", "--gt", str(w.labels), "--out",
                                                       str(w.out / "noisy"), "--classes", "cityscapes"]
        if _save_labels(w.labels / "seq" / "0003.png", top=40) is None else [], lambda w: "0003.png",
        check=no_label_maps_written),
    Row("labels-train-label-16bit", lambda w: ["labels", "train", "--images", str(w.frames), "--labels", str(w.labels),
                                               "--out", str(w.out / "l.ckpt"), "--classes", "4", "--steps", "1",
                                               "--size", "32x32"]
        if _save_labels(w.labels / "seq" / "0000.png", top=300, dtype=np.uint16) is None else [], lambda w: "0000.png"),
    # --- evaluation -----------------------------------------------------------------------------
    Row("evaluate-transposed-predictions", lambda w: ["evaluate", "--gt", str(w.gt), "--predictions", str(
        predictions(w, np.full((2, KW, KH), 0.1, np.float32)))], lambda w: "pred.npy"),
    Row("evaluate-npz-several-arrays", lambda w: ["evaluate", "--gt", str(w.gt), "--predictions", str(
        predictions(w, a=good_preds(), b=good_preds()))], lambda w: "pred.npz"),
    Row("evaluate-gt-without-gt-depths", lambda w: ["evaluate", "--gt", str(predictions(w, x=good_preds())),
                                                    "--predictions", str(w.gt)], lambda w: "gt_depths"),
    Row("evaluate-gt-not-npz", lambda w: ["evaluate", "--gt", str(write(w.gt, "hello")), "--predictions",
                                          str(w.gt)], lambda w: str(w.gt)),
    Row("evaluate-nan-prediction", lambda w: ["evaluate", "--gt", str(w.gt), "--predictions", str(
        predictions(w, np.full((2, KH, KW), np.nan, np.float32)))], lambda w: "prediction"),
    Row("evaluate-nan-scale", lambda w: ["evaluate", "--gt", str(w.gt), "--predictions", str(
        predictions(w, good_preds())), "--scale", "nan"], lambda w: "--scale"),
    Row("evaluate-count-mismatch", lambda w: ["evaluate", "--gt", str(w.gt), "--predictions", str(
        predictions(w, good_preds()[:1]))], lambda w: str(w.gt)),
]

TRAINING = {r.id for r in ROWS if r.id.startswith("train")}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = from_dict({"data": {"height": 32, "width": 48}}, "battery")
    return save_model_checkpoint(SemHintModule(cfg), tmp_path_factory.mktemp("ckpt") / "model.ckpt")


def error_lines(stderr: str) -> list[str]:
    """The lines semhint itself wrote (Lightning's info lines and progress bars aside)."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("semhint ")]


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id, marks=r.marks) for r in ROWS])
def test_bad_input_is_one_clear_line(row: Row, tmp_path, tiny_checkpoint, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    world = build_world(tmp_path, tiny_checkpoint)
    argv = row.make(world)
    before = tree_hash(world.inputs)
    capsys.readouterr()
    status = main(argv)
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert status == 2, f"exit status {status}, stderr:\n{err[-2000:]}"
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one error line, got:\n{err[-2000:]}"
    assert ": error: " in lines[0] and row.names(world) in lines[0], lines[0]
    assert tree_hash(world.inputs) == before, "an input file changed or a file appeared among the inputs"
    if row.check is not None:
        row.check(world)


def test_the_battery_is_big_enough():
    assert len(ROWS) >= 40 and len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.slow
@pytest.mark.parametrize("intrinsics", ["fx: .nan\nfy: 30\ncx: 24\ncy: 16\n", "fx: 30\nfy: .inf\ncx: 24\ncy: 16\n"])
def test_non_finite_intrinsics_never_reach_the_sampler(intrinsics, tmp_path, tiny_checkpoint):
    """In a separate process: before the checks, NaN intrinsics crashed the CPU grid sampler (exit 139)."""
    world = build_world(tmp_path, tiny_checkpoint)
    write(world.seq / "intrinsics.yaml", intrinsics)
    proc = subprocess.run([sys.executable, "-m", "semhint", *world.train()], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "intrinsics.yaml" in error_lines(proc.stderr)[-1] and "Traceback" not in proc.stderr


def test_debug_flag_shows_the_traceback(tmp_path, tiny_checkpoint):
    world = build_world(tmp_path, tiny_checkpoint)
    with pytest.raises(Exception, match="intrinsics"):
        main(["--debug", *predict_cmd(world, "--ply", "--intrinsics", str(write(world.inputs / "K.yaml", "fx: .nan\n")))])


def test_predict_keeps_same_named_inputs_apart(tmp_path, tiny_checkpoint):
    """Two drives' image_02/data folders: every frame gets its own outputs (mirrored paths)."""
    drives = [tmp_path / "in" / f"drive_{d}" / "image_02" / "data" for d in "ab"]
    for d, folder in enumerate(drives):
        for i in range(3):
            _save_rgb(folder / f"{i:010d}.png", 10 * d + i)
    assert main(["predict", str(tiny_checkpoint), *map(str, drives), "--out", str(tmp_path / "out"), "--no-png16"]) == 0
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*_depth.npy"))
    assert len(written) == 6 and written[0] == "drive_a/image_02/data/0000000000_depth.npy"


def test_stale_temp_files_are_cleaned_on_the_next_run(tmp_path, tiny_checkpoint):
    world = build_world(tmp_path, tiny_checkpoint)
    stale = [world.out / ".gt.abcd1234.npz", world.out / "pred" / "seq" / ".0000_depth.x1y2z3w4.npy"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    keep = world.out / ".hidden_notes.txt"
    keep.write_text("mine")
    assert main(export_cmd(world)) == 0
    assert main(predict_cmd(world, "--no-png16")) == 0
    assert not any(p.exists() for p in stale) and keep.exists()


def test_synth_writes_its_completion_markers_last(tmp_path, monkeypatch):
    """A render killed mid-way leaves no meta.json and no split files: it never looks complete."""
    from semhint.data import synthetic
    from semhint.data.synthetic import writer

    out = tmp_path / "synth"
    (out / "splits").mkdir(parents=True)
    (out / "splits" / "train.txt").write_text("old\n")
    (out / "meta.json").write_text(json.dumps({"old": True}))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "write_drive_frame", killed)
    with pytest.raises(KeyboardInterrupt):
        synthetic.render_drive(out, "tiny", progress=False)
    assert not (out / "meta.json").exists() and not list((out / "splits").glob("*.txt"))


def test_reliability_doc_states_the_battery_counts():
    """docs/RELIABILITY.md quotes the battery's size; adding a row without updating it fails here."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "RELIABILITY.md").read_text()
    assert f"{len(ROWS)} table rows" in text
