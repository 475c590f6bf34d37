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


def test_packaged_sets_are_files_with_the_old_ids_and_colours():
    assert set(C.packaged_class_sets()) >= {"cityscapes", "tissue", "camvid"}
    assert C.CITYSCAPES is C.get_class_set("cityscapes") and C.CITYSCAPES.source.endswith("cityscapes.yaml")
    assert C.CITYSCAPES.palette[18] == (119, 11, 32) and C.CITYSCAPES.group("vehicle") == (13, 14, 15, 16, 17, 18)
    assert C.CITYSCAPES.group("stuff") == (0, 1, 2, 3, 4, 8, 9, 10) and C.CITYSCAPES.group("human") == (11, 12)
    assert C.TISSUE.palette == ((214, 90, 96), (235, 190, 95), (90, 200, 230))
    assert C.TISSUE.groups == {"stuff": (0, 1), "things": (2,), "tissue": (0, 1), "instrument": (2,)}
    camvid = C.get_class_set("CamVid")
    assert camvid.num_classes == 11 and camvid.names[10] == "bicyclist" and camvid.ignore == (11,)
    assert camvid.map_to == "cityscapes" and camvid.target_set() is C.CITYSCAPES


def test_camvid_to_cityscapes_table_maps_every_value():
    table = C.get_class_set("camvid").mapping_to("cityscapes")
    assert table.shape == (256,) and table.dtype == np.uint8
    expected = {0: "sky", 1: "building", 2: "pole", 3: "road", 4: "sidewalk", 5: "vegetation", 6: "traffic sign",
                7: "fence", 8: "car", 9: "person", 10: "rider"}
    for value, name in expected.items():
        assert table[value] == C.CITYSCAPES.id(name), name
    assert (table[11:] == 255).all()  # 11 = unlabelled, 255 = ignore, and every unused value: ignore
    labels = np.array([[3, 8], [11, 255]], np.uint8)
    np.testing.assert_array_equal(table[labels], [[0, 13], [255, 255]])  # one indexing op converts a map
    np.testing.assert_array_equal(C.get_class_set("camvid").mapping_to("camvid")[:12], list(range(11)) + [255])
    with pytest.raises(InputError, match="no map_to"):
        C.CITYSCAPES.mapping_to("camvid")


def test_to_ids_reads_unlabelled_as_ignore_and_rejects_other_values():
    camvid = C.get_class_set("camvid")
    np.testing.assert_array_equal(camvid.to_ids(np.array([[0, 10, 11, 255]], np.uint8)), [[0, 10, 255, 255]])
    with pytest.raises(InputError, match="x.png: label 12 outside the class set camvid"):
        camvid.to_ids(np.array([[12]], np.uint8), "x.png")


USER_SET = """
name: my street
map_to: {target}
classes:
  - {{name: ground, colour: [128, 64, 128], to: road}}
  - {{name: vehicle, colour: [0, 0, 142], to: car}}
  - {{name: clutter, colour: [9, 9, 9], to: null}}
ignore: [200, 201]
groups:
  flat: [ground]
  things: [vehicle, 2]
"""


def test_a_users_yaml_works_by_path(tmp_path):
    path = tmp_path / "street.yaml"
    path.write_text(USER_SET.format(target="cityscapes"))
    cs = C.get_class_set(str(path))
    assert cs.name == "my street" and cs.names == ("ground", "vehicle", "clutter") and cs.palette[2] == (9, 9, 9)
    assert cs.groups == {"flat": (0,), "things": (1, 2)} and cs.ignore == (200, 201)
    table = cs.mapping_to()
    assert list(table[:3]) == [0, 13, 255] and table[200] == 255 and table[201] == 255
    # map_to may name another user file, relative to this one
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "coarse.yaml").write_text(USER_SET.format(target="../street.yaml").replace("to: road", "to: ground")
                                                  .replace("to: car", "to: vehicle"))
    coarse = C.get_class_set(str(tmp_path / "sub" / "coarse.yaml"))
    assert list(coarse.mapping_to()[:3]) == [0, 1, 255]
    again = C.class_set_from_dict(cs.to_dict(), "copy")
    assert (again.names, again.palette, again.groups, again.ignore, again.targets) == \
        (cs.names, cs.palette, cs.groups, cs.ignore, cs.targets)


def _classes(n: int) -> str:
    return "\n".join(f"  - {{name: c{i}, colour: [1, 2, 3]}}" for i in range(n))


@pytest.mark.parametrize("text, key", [
    ("name: a\nclasses:\n  - {name: x, colour: [1, 2, 3]}\n  - {name: x, colour: [4, 5, 6]}\n", "duplicate class name 'x'"),
    ("name: a\nclasses:\n  - {name: x, colour: [1, 2, 300]}\n", r"classes\[0\]\.colour"),
    ("name: a\nclasses:\n  - {name: x, colour: '#ff0000'}\n", r"classes\[0\]\.colour"),
    ("name: a\nmap_to: pascal\nclasses:\n  - {name: x, colour: [1, 2, 3], to: road}\n", "map_to: unknown class set"),
    ("name: a\nmap_to: cityscapes\nclasses:\n  - {name: x, colour: [1, 2, 3], to: lorry}\n", r"classes\[0\]\.to: 'lorry'"),
    ("name: a\nmap_to: cityscapes\nclasses:\n  - {name: x, colour: [1, 2, 3]}\n", r"classes\[0\]\.to missing"),
    ("name: a\nclasses:\n  - {name: x, colour: [1, 2, 3], to: road}\n", r"classes\[0\]\.to needs a top-level map_to"),
    ("name: a\nclasses:\n" + _classes(255) + "\n", "classes: 255 classes, at most 254"),
    ("name: a\nclasses:\n  - {name: x, colour: [1, 2, 3]}\nignore: [0]\n", "ignore: 0 is the id of a class"),
    ("name: a\nclasses:\n  - {name: x, colour: [1, 2, 3]}\ngroups: {g: [y]}\n", r"groups\.g: no class 'y'"),
    ("name: a\nclasses:\n  - {name: x, colour: [1, 2, 3]}\nmap-to: cityscapes\n", "unknown key.*map-to"),
    ("name: a\nclasses: []\n", "classes must be a non-empty list"),
    ("classes:\n  - {name: x, colour: [1, 2, 3]}\n", "name must be a non-empty string"),
    ("name: [unclosed\n", "cannot read class set"),
])
def test_malformed_class_set_files_name_the_file_and_key(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=key) as info:
        C.get_class_set(str(path))
    assert str(path) in str(info.value)


def test_missing_class_set_file(tmp_path):
    with pytest.raises(InputError, match="class set file not found"):
        C.get_class_set(str(tmp_path / "none.yaml"))


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
