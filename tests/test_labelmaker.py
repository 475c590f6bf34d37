"""`labels train` / `labels predict` on tiny fabricated frames with an easy pattern."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import SHARED

from semhint.core import conventions as C
from semhint.core.config import parse_size
from semhint.core.fileio import InputError, read_label_png, read_rgb, save_image
from semhint.labelmaker import labeler as labelmaker
from semhint.models.labeler import Labeler, labeler_model_config

H, W = 64, 64


def _make_frames(root, count: int = 8, seed: int = 0, shape: tuple[int, int] = (H, W), unlabelled: int = 255):
    """Dark noisy background (class 0) with a bright rectangle (class 1) at a random place; the
    top row carries the ``unlabelled`` value."""
    rng = np.random.default_rng(seed)
    fh, fw = shape
    for i in range(count):
        img = (rng.random((fh, fw, 3)) * 60).astype(np.uint8)
        lab = np.zeros((fh, fw), np.uint8)
        y, x = rng.integers(4, fh // 2), rng.integers(4, fw // 2)
        h, w = rng.integers(fh // 5, fh // 2), rng.integers(fw // 5, fw // 2)
        img[y:y + h, x:x + w] = 200 + (rng.random((h, w, 3)) * 55).astype(np.uint8)
        lab[y:y + h, x:x + w] = 1
        lab[0, :] = unlabelled  # an ignored row must not break anything
        save_image(root / "data" / "seq" / f"{i:04d}.png", img)
        save_image(root / "gt_labels" / "seq" / f"{i:04d}.png", lab)
    return root / "data", root / "gt_labels"


BOX_YAML = """
name: boxes
map_to: cityscapes
classes:
  - {name: background, colour: [10, 10, 10], to: road}
  - {name: box, colour: [250, 0, 0], to: car}
ignore: [7]
"""


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
    img = torch.zeros(3, 48, 64, dtype=torch.uint8)  # a 4:3 frame, cropped for a 1:3 network
    lab = torch.zeros(48, 64, dtype=torch.uint8)
    img[:, 8:40, 10:50] = 255
    lab[8:40, 10:50] = 1
    for scale_range in ((1.0, 1.5), (0.6, 0.8)):  # zoom in, and out (the crop overhangs the frame)
        out_img, out_lab = labelmaker.augment([img] * 6, [lab] * 6, (32, 96), g, scale_range, jitter=0.0)
        assert out_img.shape == (6, 3, 32, 96) and out_lab.shape == (6, 32, 96)
        inside = out_lab != 255
        bright = out_img.mean(1) > 0.5
        assert (bright[inside] == (out_lab[inside] == 1)).float().mean() > 0.97  # only interpolation rims differ
        if scale_range[1] < 1:
            assert (~inside).any() and out_img[~inside[:, None].expand_as(out_img)].max() == 0  # overhang: black, 255


def test_crops_keep_the_network_aspect_and_evaluation_keeps_the_frame_aspect():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        y0, x0, ch, cw = labelmaker.random_box(360, 480, (96, 320), (1.0, 1.5), g)
        assert abs(cw / ch - 320 / 96) < 0.05  # 10:3 crops out of a 4:3 frame: never squashed
        assert 0 <= y0 and y0 + ch <= 360 and 0 <= x0 and x0 + cw <= 480
    assert labelmaker.random_box(360, 480, (96, 320), (1.0, 1.0), g)[1:] == (0, 144, 480)  # scale 1: full width
    assert labelmaker.eval_size(360, 480, (96, 320)) == (240, 320)  # the pixel scale of scale-1 crops
    assert labelmaker.eval_size(375, 1242, (96, 320)) == (97, 320)  # KITTI: about the network size
    assert labelmaker.stride_fit(97) == (96, 96) and labelmaker.stride_fit(240) == (240, 256)
    model = Labeler(labeler_model_config(3)).eval()
    maps = labelmaker.predict_maps(model, [torch.zeros(3, 45, 60, dtype=torch.uint8)] * 2, (32, 96))
    assert len(maps) == 2 and maps[0].shape == (45, 60) and maps[0].dtype == np.uint8


def test_several_folders_a_class_set_file_and_a_test_set(tmp_path):
    classes = tmp_path / "boxes.yaml"
    classes.write_text(BOX_YAML)
    a_img, a_lab = _make_frames(tmp_path / "a", count=3, shape=(48, 64), unlabelled=7)
    b_img, b_lab = _make_frames(tmp_path / "b", count=2, seed=1, shape=(48, 64), unlabelled=7)
    t_img, t_lab = _make_frames(tmp_path / "t", count=2, seed=2, shape=(48, 64), unlabelled=7)
    ckpt = tmp_path / "m.ckpt"
    summary = labelmaker.train_labeler([a_img, b_img], [a_lab, b_lab], ckpt, classes=str(classes), size=(32, 96),
                                       steps=2, frames=0, batch_size=2, progress=False, test_images=[t_img],
                                       test_labels=[t_lab])
    assert summary["frames"] == 5 and len(summary["train_frames"]) == 5
    test = summary["test"]
    assert test["frames"] == 2 and set(test["per_class_iou"]) == {"background", "box"}
    assert 0 <= test["pixel_accuracy"] <= 1 and 0 <= test["miou"] <= 1
    _, meta = labelmaker.load_labeler(ckpt)
    assert meta["test"]["miou"] == test["miou"] and meta["class_set"]["ignore"] == [7]
    assert meta["target_set"]["name"] == "cityscapes"
    with pytest.raises(InputError, match="--images/--labels"):
        labelmaker.train_labeler([a_img, b_img], [a_lab], ckpt, classes=str(classes), size=(32, 96), steps=1,
                                 progress=False)
    with pytest.raises(InputError, match="outside the class set boxes"):  # 255 is fine, 9 is no class
        save_image(tmp_path / "bad" / "seq" / "0000.png", np.full((48, 64), 9, np.uint8))
        labelmaker.train_labeler(a_img, tmp_path / "bad", ckpt, classes=str(classes), size=(32, 96), steps=1,
                                 progress=False)


def test_predict_writes_target_ids_scores_source_ids_and_draws_a_sheet(tmp_path):
    classes = tmp_path / "boxes.yaml"
    classes.write_text(BOX_YAML)
    data, gt = _make_frames(tmp_path, count=3, shape=(48, 64), unlabelled=7)
    ckpt = tmp_path / "m.ckpt"
    labelmaker.train_labeler(data, gt, ckpt, classes=str(classes), size=(32, 96), steps=2, frames=0, batch_size=2,
                             progress=False)
    classes.unlink()  # the checkpoint carries its class sets
    out, sheet = tmp_path / "lab", tmp_path / "sheet.png"
    info = labelmaker.predict_labels(ckpt, data, out, gt_labels=gt, progress=False, preview=sheet, preview_frames=2)
    assert info["ids"] == "cityscapes" and info["class_names"][13] == "car"
    cityscapes = read_label_png(out / "seq" / "0000.png")
    assert cityscapes.shape == (48, 64) and set(np.unique(cityscapes)) <= {0, 13}  # road, car
    assert set(info["eval"]["per_class_iou"]) == {"background", "box"} and info["eval"]["frames"] == 3
    own = labelmaker.predict_labels(ckpt, data, tmp_path / "own", progress=False, source_ids=True)
    source = read_label_png(tmp_path / "own" / "seq" / "0000.png")
    assert own["ids"] == "boxes" and set(np.unique(source)) <= {0, 1}
    np.testing.assert_array_equal(np.where(source == 1, 13, 0), cityscapes)
    picture = read_rgb(sheet)
    assert picture.shape[1] == 3 * 64 and picture.shape[0] > 2 * 48  # 2 rows: image | labels | GT, then a legend
    image = read_rgb(data / "seq" / "0000.png")
    colour = np.array(C.CITYSCAPES.palette[int(cityscapes[5, 5])])
    blended = np.round(0.5 * image[5, 5] + 0.5 * colour)
    np.testing.assert_allclose(picture[5, 64 + 5], blended, atol=1)


def test_blend_leaves_ignored_pixels_alone():
    image = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 255], [13, 255]], np.uint8)
    out = labelmaker.blend_labels(image, labels, C.CITYSCAPES)
    assert tuple(out[0, 1]) == (100, 100, 100) and tuple(out[1, 0]) == (50, 50, 121)


def test_camvid_folders_pair_and_read_in_camvid_ids():
    camvid = SHARED / "data" / "camvid"
    if not (camvid / "train" / "labels").is_dir():
        pytest.skip(f"{camvid} not present")
    pairs = labelmaker.labelled_pairs_of([camvid / "train" / "images", camvid / "val" / "images"],
                                         [camvid / "train" / "labels", camvid / "val" / "labels"])
    assert len(pairs) == 367 + 101
    cs = C.get_class_set("camvid")
    raw = read_label_png(pairs[0][1])
    ids = labelmaker.read_labels(pairs[0][1], cs)
    assert raw.shape == (360, 480) and set(np.unique(ids)) <= set(range(11)) | {255}
    np.testing.assert_array_equal(ids == 255, raw == 11)


def test_cli_train_then_predict(tmp_path, capsys):
    from semhint.app.cli import main

    data, gt = _make_frames(tmp_path, count=2)
    ckpt = tmp_path / "m.ckpt"
    assert main(["labels", "train", "--images", str(data), str(data), "--labels", str(gt), str(gt), "--out", str(ckpt),
                 "--classes", "2", "--size", "32x64", "--steps", "1", "--frames", "1", "--batch-size", "1",
                 "--scale", "0.8,1.2", "--test-images", str(data), "--test-labels", str(gt)]) == 0
    assert "test set: mIoU" in capsys.readouterr().out
    assert main(["labels", "predict", "--model", str(ckpt), "--data-path", str(data), "--out", str(tmp_path / "lab"),
                 "--gt-labels", str(gt), "--preview", str(tmp_path / "preview.png"), "--preview-frames", "1"]) == 0
    assert "mIoU vs ground truth" in capsys.readouterr().out
    sheet = read_rgb(tmp_path / "preview.png")
    assert sheet.shape[1] == 3 * W and sheet.shape[0] > H  # one frame: image | labels | ground truth, a legend
    assert main(["labels", "train", "--images", str(data), "--labels", str(gt), "--out", str(ckpt),
                 "--scale", "big"]) == 2
    assert (tmp_path / "lab" / "seq" / "0001.png").is_file()
    assert main(["labels", "predict", "--model", str(tmp_path / "none.ckpt"), "--data-path", str(data),
                 "--out", str(tmp_path / "x")]) == 2
