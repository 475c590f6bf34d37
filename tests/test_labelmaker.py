"""`labels train` / `labels predict` on tiny fabricated frames with an easy pattern."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from semhint.core.config import parse_size
from semhint.core.fileio import InputError, read_label_png, read_rgb, save_image
from semhint.labelmaker import labeler as labelmaker

H, W = 64, 64



def _make_frames(root, count: int = 8, seed: int = 0):
    """Dark noisy background (class 0) with a bright rectangle (class 1) at a random place."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        img = (rng.random((H, W, 3)) * 60).astype(np.uint8)
        lab = np.zeros((H, W), np.uint8)
        y, x = rng.integers(4, H // 2), rng.integers(4, W // 2)
        h, w = rng.integers(12, H // 2), rng.integers(12, W // 2)
        img[y:y + h, x:x + w] = 200 + (rng.random((h, w, 3)) * 55).astype(np.uint8)
        lab[y:y + h, x:x + w] = 1
        lab[0, :] = 255  # an ignored row must not break anything
        save_image(root / "data" / "seq" / f"{i:04d}.png", img)
        save_image(root / "gt_labels" / "seq" / f"{i:04d}.png", lab)
    return root / "data", root / "gt_labels"


def test_train_predict_beats_chance(tmp_path):
    torch.manual_seed(0)
    data, gt = _make_frames(tmp_path)
    ckpt = tmp_path / "labeler.ckpt"
    summary = labelmaker.train_labeler(data, gt, ckpt, classes="background,box", size=(H, W), steps=25, frames=4,
                                       batch_size=2, lr=1e-3, gt_labels=gt, progress=False)
    assert ckpt.is_file() and summary["frames"] == 4 and summary["eval"]["frames"] == 4  # the 4 held-out frames
    out = tmp_path / "labels"
    result = labelmaker.predict_labels(ckpt, data, out, gt_labels=gt, progress=False)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == [f"seq/{i:04d}.png" for i in range(8)]
    pred = read_label_png(out / "seq" / "0000.png")
    assert pred.shape == (H, W) and set(np.unique(pred)) <= {0, 1}
    # two classes: always guessing the majority gives mIoU < 0.5; an easy pattern is learnt well above it
    assert result["eval"]["miou"] > 0.6
    info = json.loads((out / "labels_info.json").read_text())
    assert info["classes"] == "background,box" and info["frames"] == 8


def test_checkpoint_carries_classes_and_size(tmp_path):
    data, gt = _make_frames(tmp_path, count=2)
    ckpt = tmp_path / "m.ckpt"
    labelmaker.train_labeler(data, gt, ckpt, classes="3", size=(32, 64), steps=1, frames=1, batch_size=1,
                             progress=False)
    model, meta = labelmaker.load_labeler(ckpt)
    assert meta["size"] == [32, 64] and meta["class_names"] == ["class_0", "class_1", "class_2"]
    assert model(torch.rand(1, 3, 32, 64)).shape == (1, 3, 32, 64)


def test_clear_errors(tmp_path):
    data, gt = _make_frames(tmp_path, count=1)
    with pytest.raises(InputError, match="no label PNG mirrors"):
        labelmaker.labelled_pairs(data, tmp_path)
    bad = tmp_path / "bad"
    save_image(bad / "seq" / "0000.png", np.full((H, W), 7, np.uint8))
    with pytest.raises(InputError, match="outside the class set"):
        labelmaker.train_labeler(data, bad, tmp_path / "x.ckpt", classes="2", size=(32, 32), steps=1, progress=False)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        labelmaker.load_labeler(tmp_path / "junk.ckpt")
    with pytest.raises(InputError, match="HEIGHTxWIDTH"):
        parse_size("96by320")
    assert labelmaker.class_names("tissue") == ["tissue A", "tissue B", "instrument"]
    with pytest.raises(InputError, match="unknown class set"):
        labelmaker.class_names("pascal")
    assert not (tmp_path / "x.ckpt").exists()


def test_augment_keeps_labels_aligned_with_pixels():
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(4, 3, 32, 48)
    lab = torch.zeros(4, 32, 48, dtype=torch.long)
    img[..., 8:20, 10:30] = 1.0
    lab[..., 8:20, 10:30] = 1
    out_img, out_lab = labelmaker.augment(img, lab, g, jitter=0.0)
    assert out_img.shape == img.shape and out_lab.shape == lab.shape
    bright = out_img.mean(1) > 0.5
    assert (bright == (out_lab == 1)).float().mean() > 0.97  # only interpolation rims may differ


def test_cli_train_then_predict(tmp_path, capsys):
    from semhint.app.cli import main

    data, gt = _make_frames(tmp_path, count=2)
    ckpt = tmp_path / "m.ckpt"
    assert main(["labels", "train", "--images", str(data), "--labels", str(gt), "--out", str(ckpt), "--classes", "2",
                 "--size", "32x64", "--steps", "1", "--frames", "1", "--batch-size", "1"]) == 0
    assert main(["labels", "predict", "--model", str(ckpt), "--data-path", str(data), "--out", str(tmp_path / "lab"),
                 "--gt-labels", str(gt), "--preview", str(tmp_path / "preview.png")]) == 0
    assert "mIoU vs ground truth" in capsys.readouterr().out
    sheet = read_rgb(tmp_path / "preview.png")
    assert sheet.shape == (2 * H, 3 * W, 3)  # two frames: image | labels | ground truth
    assert (tmp_path / "lab" / "seq" / "0001.png").is_file()
    assert main(["labels", "predict", "--model", str(tmp_path / "none.ckpt"), "--data-path", str(data),
                 "--out", str(tmp_path / "x")]) == 2
