"""Label maps: class sets and palettes, PNG round trips, previews, and controlled label noise."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semhint.core import conventions as C
from semhint.core.fileio import InputError, read_label_png, write_label_png
from semhint.core.pictures import colorize_labels
from semhint.evaluation.metrics import confusion_matrix, iou_scores
from semhint.labelmaker.corrupt import corrupt_label_dir, corrupt_labels


def test_cityscapes_has_the_19_train_ids_with_official_colours():
    cs = C.get_class_set("cityscapes")
    assert cs.num_classes == 19 and len(cs.palette) == 19
    assert cs.names[0] == "road" and cs.names[10] == "sky" and cs.names[13] == "car" and cs.names[18] == "bicycle"
    assert cs.palette[0] == (128, 64, 128) and cs.palette[10] == (70, 130, 180) and cs.palette[13] == (0, 0, 142)
    assert cs.group("flat") == (0, 1) and 13 in cs.group("things")
    assert len(set(cs.palette)) == 19


def test_tissue_set_and_unknown_names():
    assert C.class_names("tissue") == ("tissue A", "tissue B", "instrument")
    with pytest.raises(InputError, match="cityscapes"):
        C.get_class_set("kitti")
    with pytest.raises(InputError, match="no group"):
        C.TISSUE.group("vehicle")


def test_label_png_round_trip_keeps_ignore(tmp_path):
    lab = np.array([[0, 1, 255], [18, 13, 10]], dtype=np.int64)
    write_label_png(tmp_path / "a" / "x.png", lab)
    back = read_label_png(tmp_path / "a" / "x.png")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, lab)
    assert not list((tmp_path / "a").glob(".*"))  # no temp file left behind
    with pytest.raises(InputError, match="0..255"):
        write_label_png(tmp_path / "bad.png", np.array([[300]]))


def test_colorize_uses_palette_and_ignore_is_black():
    rgb = colorize_labels(np.array([[0, 255], [13, -1]]), "cityscapes")
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[1, 0]) == (0, 0, 142)
    assert tuple(rgb[0, 1]) == (0, 0, 0) and tuple(rgb[1, 1]) == (0, 0, 0)


def _street(h: int = 96, w: int = 160) -> np.ndarray:
    """A small street-like map: sky, building, road, sidewalk, two cars, a pole, some ignore."""
    lab = np.full((h, w), 2, dtype=np.uint8)
    lab[: h // 4] = 10
    lab[h // 2:] = 0
    lab[h // 2:, : w // 6] = 1
    lab[h // 2 - 8: h // 2 + 12, 30:70] = 13
    lab[h // 2 - 6: h // 2 + 8, 100:125] = 13
    lab[10: h // 2, 140:143] = 5
    lab[-3:, :] = 255
    return lab


def _miou(gt: np.ndarray, pred: np.ndarray) -> float:
    return iou_scores(confusion_matrix(gt, pred, 19))[1]


def test_corruption_strength_zero_is_identity_and_miou_falls_with_strength():
    gt = _street()
    cs = C.CITYSCAPES
    same = corrupt_labels(gt, cs, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(same, gt)
    assert _miou(gt, same) == 1.0
    scores = [np.mean([_miou(gt, corrupt_labels(gt, cs, s, np.random.default_rng(seed))) for seed in range(4)])
              for s in (0.2, 0.5, 0.9)]
    assert 1.0 > scores[0] > scores[1] > scores[2]
    noisy = corrupt_labels(gt, cs, 0.7, np.random.default_rng(3))
    assert ((noisy == 255) == (gt == 255)).all()  # ignore stays ignore, nothing else becomes ignore
    np.testing.assert_array_equal(noisy, corrupt_labels(gt, cs, 0.7, np.random.default_rng(3)))
    with pytest.raises(InputError, match="strength"):
        corrupt_labels(gt, cs, 1.5, np.random.default_rng(0))


def test_corrupt_label_dir_mirrors_files_and_reports_miou(tmp_path):
    gt_root = tmp_path / "gt"
    write_label_png(gt_root / "seq" / "000000.png", _street())
    write_label_png(gt_root / "seq" / "000001.png", _street()[:, ::-1])
    report = corrupt_label_dir(gt_root, tmp_path / "noisy", strength=0.5, seed=1)
    assert report["files"] == 2 and 0.0 < report["miou"] < 1.0
    assert (tmp_path / "noisy" / "seq" / "000001.png").is_file()
    assert json.loads((tmp_path / "noisy" / "corruption.json").read_text())["miou"] == report["miou"]


def test_cli_labels_corrupt(tmp_path, capsys):
    from semhint.app.cli import main

    write_label_png(tmp_path / "gt" / "a.png", _street())
    assert main(["labels", "corrupt", "--gt", str(tmp_path / "gt"), "--out", str(tmp_path / "n"), "--strength", "0"]) == 0
    assert "mIoU vs ground truth = 1.0000" in capsys.readouterr().out
    assert main(["labels", "corrupt", "--gt", str(tmp_path / "missing"), "--out", str(tmp_path / "n2")]) == 2


def test_cli_labels_corrupt_takes_the_class_set_from_synth_meta(tmp_path, capsys):
    from semhint.app.cli import main

    (tmp_path / "meta.json").write_text(json.dumps({"class_set": "tissue"}))
    lab = np.zeros((40, 60), dtype=np.uint8)
    lab[:, 30:] = 1
    lab[10:20, 5:50] = 2
    write_label_png(tmp_path / "gt_labels" / "tissue_01" / "000000.png", lab)
    assert main(["labels", "corrupt", "--gt", str(tmp_path / "gt_labels"), "--out", str(tmp_path / "noisy"),
                 "--strength", "0.5"]) == 0
    assert "noisy tissue label maps" in capsys.readouterr().out
    noisy = read_label_png(tmp_path / "noisy" / "tissue_01" / "000000.png")
    assert noisy.max() <= 2
