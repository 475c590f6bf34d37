"""SnippetDataset: sample dict contract, shared flip / jitter, labels, ground truth, the resize cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semhint.core.config import ConfigError, DataConfig
from semhint.core.fileio import InputError, read_depth_png, save_image, write_depth_png
from semhint.data import snippets
from semhint.data.build import build_dataset
from semhint.data.frames import FrameRef, mirrored_path
from semhint.data.snippets import SnippetDataset, apply_jitter, draw_jitter, load_resized

H, W = 24, 40  # stored frames
NH, NW = 12, 32  # network resolution


def make_dataset_root(tmp_path: Path, n: int = 4, identical: bool = False) -> Path:
    """ROOT/seq frames + intrinsics, and mirrored label, gt-label and depth roots beside it."""
    root = tmp_path / "data" / "seq"
    root.mkdir(parents=True)
    (root / "intrinsics.yaml").write_text("fx: 30\nfy: 30\ncx: 19.5\ncy: 11.5\n")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    for i in range(n):
        img = base if identical else rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        save_image(root / f"{i:03d}.png", img)
        labels = np.zeros((H, W), dtype=np.uint8)
        labels[:, W // 2:] = 1  # right half class 1: a flip moves it left
        labels[0, :] = 255
        save_image(tmp_path / "labels" / "seq" / f"{i:03d}.png", labels)
        save_image(tmp_path / "gt_labels" / "seq" / f"{i:03d}.png", labels)
        write_depth_png(tmp_path / "gt_depth" / "seq" / f"{i:03d}.png", np.full((H, W), 2.5 + i))
    return tmp_path / "data"


def config(tmp_path: Path, **kw) -> DataConfig:
    split = tmp_path / "split.txt"
    split.write_text("seq 1\nseq 2\n")
    values = dict(kind="folder", path=str(tmp_path / "data"), height=NH, width=NW, train_split=str(split),
                  val_split=str(split), labels=str(tmp_path / "labels"), gt_labels=str(tmp_path / "gt_labels"),
                  gt_depth=str(tmp_path / "gt_depth"))
    values.update(kw)
    return DataConfig(**values)


def test_sample_dict_contract(tmp_path):
    make_dataset_root(tmp_path)
    ds = build_dataset(config(tmp_path), "val")
    s = ds[1]
    assert set(s) == {"image/0", "image/-1", "image/1", "image_aug/0", "image_aug/-1", "image_aug/1", "labels/0",
                      "labels/-1", "labels/1", "gt_labels/0", "depth_gt", "K", "inv_K", "index", "flipped"}
    assert s["image/0"].shape == (3, NH, NW) and s["image/0"].dtype == torch.float32
    assert 0 <= s["image/0"].min() and s["image/0"].max() <= 1
    assert s["labels/-1"].shape == (NH, NW) and s["labels/-1"].dtype == torch.int64
    assert set(s["labels/0"].unique().tolist()) == {0, 1, 255}  # nearest resize: no invented classes
    assert s["depth_gt"].shape == (1, H, W) and s["depth_gt"][0, 0, 0].item() == 4.5  # own resolution
    assert s["K"].dtype == torch.float32 and s["K"].shape == (4, 4) and s["index"].item() == 1
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["image_aug/1"].shape == (2, 3, NH, NW)
    train = build_dataset(config(tmp_path), "train")
    assert "gt_labels/0" not in train[0] and "depth_gt" not in train[0] and "labels/0" in train[0]


def test_flip_is_shared_by_frames_labels_and_intrinsics(tmp_path):
    make_dataset_root(tmp_path)
    plain = build_dataset(config(tmp_path, augment=False), "train")
    aug = build_dataset(config(tmp_path, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0), "train")
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        s, p = aug[0], plain[0]
        flipped = not torch.equal(s["image/0"], p["image/0"])
        seen.add(flipped)
        for f in (0, -1, 1):
            expect = p[f"image/{f}"].flip(-1) if flipped else p[f"image/{f}"]
            torch.testing.assert_close(s[f"image/{f}"], expect)
            torch.testing.assert_close(s[f"labels/{f}"], p[f"labels/{f}"].flip(-1) if flipped else p[f"labels/{f}"])
        cx = p["K"][0, 2]
        assert s["K"][0, 2].item() == pytest.approx((NW - 1 - cx).item() if flipped else cx.item())
        assert bool(s["flipped"]) == flipped and not bool(p["flipped"])  # said, for what a mirror changes
    assert seen == {True, False}


def test_jitter_is_one_draw_per_snippet(tmp_path):
    make_dataset_root(tmp_path, identical=True)  # identical frames: shared jitter keeps them identical
    ds = build_dataset(config(tmp_path, flip=False, labels="", gt_labels="", gt_depth=""), "train")
    changed = 0
    for seed in range(8):
        torch.manual_seed(seed)
        s = ds[0]
        torch.testing.assert_close(s["image_aug/-1"], s["image_aug/0"])
        torch.testing.assert_close(s["image_aug/1"], s["image_aug/0"])
        changed += not torch.equal(s["image_aug/0"], s["image/0"])
    assert 0 < changed < 8  # jitter applied to about half the snippets


def test_jitter_operations():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    identity = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}
    np.testing.assert_array_equal(apply_jitter(img, identity), img)
    np.testing.assert_array_equal(apply_jitter(img, {**identity, "hue": 1.0}), img)  # a full turn is skipped
    dark = apply_jitter(img, {**identity, "brightness": 0.5})
    np.testing.assert_allclose(dark, img * 0.5, atol=0.51)  # rounded, saturating uint8
    grey = apply_jitter(img, {**identity, "saturation": 0.0}).astype(int)
    assert np.abs(grey[..., 0] - grey[..., 1]).max() <= 1 and np.abs(grey[..., 1] - grey[..., 2]).max() <= 1
    flat = apply_jitter(img, {**identity, "contrast": 0.0})
    assert flat.max() - flat.min() <= 1  # everything at the mean luma
    red = np.array([[[255, 0, 0]]], dtype=np.uint8)
    np.testing.assert_allclose(apply_jitter(red, {**identity, "hue": 1 / 3}), [[[0, 255, 0]]], atol=8)
    bright = apply_jitter(img, {**identity, "brightness": 2.0})
    assert bright.dtype == np.uint8 and bright.max() == 255  # saturates instead of wrapping
    p = draw_jitter(0.2, 0.3, 0.0, 0.1, generator=torch.Generator().manual_seed(0))
    assert 0.8 <= p["brightness"] <= 1.2 and 0.7 <= p["contrast"] <= 1.3 and p["saturation"] == 1.0
    assert -0.1 <= p["hue"] <= 0.1


def test_resize_cache_is_used_and_invalidated(tmp_path, monkeypatch):
    src = tmp_path / "a.png"
    save_image(src, np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8))
    cache = tmp_path / "cache"
    first = load_resized(src, (NH, NW), cache)
    assert len(list(cache.rglob("*.npy"))) == 1
    monkeypatch.setattr(snippets, "decode_rgb", lambda p: (_ for _ in ()).throw(AssertionError("decoded again")))
    np.testing.assert_array_equal(load_resized(src, (NH, NW), cache), first)
    monkeypatch.undo()
    save_image(src, np.zeros((H, W, 3), dtype=np.uint8))
    os.utime(src, ns=(1, 1))  # a different mtime: the old entry must not be served
    assert load_resized(src, (NH, NW), cache).max() == 0
    assert len(list(cache.rglob("*.npy"))) == 2
    np.testing.assert_array_equal(load_resized(src, (NH, NW), ""), np.zeros((NH, NW, 3), np.uint8))


def test_cached_dataset_equals_uncached(tmp_path):
    make_dataset_root(tmp_path)
    a = build_dataset(config(tmp_path), "val")[0]
    cfg = config(tmp_path, cache_dir=str(tmp_path / "cache"))
    build_dataset(cfg, "val")[0]
    b = build_dataset(cfg, "val")[0]  # served from the cache
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_bad_inputs(tmp_path):
    root = make_dataset_root(tmp_path)
    (root / "seq" / "002.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = build_dataset(config(tmp_path, labels="", gt_labels="", gt_depth=""), "val")
    with pytest.raises(InputError, match=r"seq/002.png: cannot decode image"):
        ds[0]
    (tmp_path / "labels" / "seq" / "003.png").unlink()
    with pytest.raises(InputError, match=r"labels/seq/003.png: label map not found \(frame 'seq 2', offset \+1\)"):
        build_dataset(config(tmp_path), "train")
    with pytest.raises(ConfigError, match=r"data.val_split"):
        build_dataset(config(tmp_path, val_split=""), "val")


def test_gt_depth_npz_must_match_the_split(tmp_path):
    make_dataset_root(tmp_path)
    from semhint.core.fileio import save_npz

    save_npz(tmp_path / "gt.npz", gt_depths=np.ones((2, H, W), np.float32), frames=np.array(["seq 1", "seq 2"]))
    s = build_dataset(config(tmp_path, gt_depth=str(tmp_path / "gt.npz")), "val")[1]
    assert s["depth_gt"].shape == (1, H, W)
    save_npz(tmp_path / "bad.npz", gt_depths=np.ones((2, H, W), np.float32), frames=np.array(["seq 1", "seq 3"]))
    with pytest.raises(InputError, match=r"bad.npz: frame 1 is 'seq 3' but the split has 'seq 2'"):
        build_dataset(config(tmp_path, gt_depth=str(tmp_path / "bad.npz")), "val")
    from semhint.data.kitti import load_gt_for_frames

    save_npz(tmp_path / "three.npz", gt_depths=np.stack([np.full((H, W), v, np.float32) for v in (1, 2, 3)]),
             frames=np.array(["seq 1", "seq 2", "seq 3"]))
    assert [float(d[0, 0]) for d in load_gt_for_frames(tmp_path / "three.npz", ["seq 3", "seq  1"])] == [3.0, 1.0]
    with pytest.raises(InputError, match=r"three.npz: no depth map for the split's frame 'seq 4'"):
        load_gt_for_frames(tmp_path / "three.npz", ["seq 1", "seq 4"])  # a subset is looked up by name
    save_npz(tmp_path / "short.npz", gt_depths=np.ones((1, H, W), np.float32))
    with pytest.raises(InputError, match=r"short.npz: has 1 depth maps but the split has 2 frames"):
        build_dataset(config(tmp_path, gt_depth=str(tmp_path / "short.npz")), "val")


def test_mirrored_path_and_depth_png_roundtrip(tmp_path):
    img = tmp_path / "data" / "2011_09_26" / "drive" / "image_02" / "data" / "0000000005.jpg"
    assert mirrored_path(tmp_path / "labels", img, tmp_path / "data") == \
        tmp_path / "labels" / "2011_09_26" / "drive" / "image_02" / "data" / "0000000005.png"
    with pytest.raises(InputError, match="not inside the dataset root"):
        mirrored_path(tmp_path / "labels", Path("/elsewhere/x.png"), tmp_path / "data")
    depth = np.array([[0.0, 1.0, 80.123], [np.nan, -1.0, 255.99]])
    write_depth_png(tmp_path / "d.png", depth)
    assert np.asarray(Image.open(tmp_path / "d.png")).dtype == np.uint16
    back = read_depth_png(tmp_path / "d.png")
    np.testing.assert_allclose(back, [[0, 1, round(80.123 * 256) / 256], [0, 0, round(255.99 * 256) / 256]])
    with pytest.raises(ValueError, match="exceeds the uint16 PNG range"):
        write_depth_png(tmp_path / "e.png", np.full((2, 2), 300.0))
    assert not (tmp_path / "e.png").exists()
    save_image(tmp_path / "rgb.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(InputError, match="rgb.png: depth PNG must be 16-bit"):
        read_depth_png(tmp_path / "rgb.png")


def test_frame_ref_needs_no_decoding_for_intrinsics():
    ref = FrameRef(key="s 0", images={0: Path("/x/s/0.png")}, K=np.array([[10.0, 0, 4.5], [0, 10, 2.5], [0, 0, 1]]),
                   K_hw=(6, 10), data_root=Path("/x"))
    ds = SnippetDataset([ref], 12, 20, [0])  # nothing is decoded until a sample is asked for
    K = ds.intrinsics(ref, flipped=False)
    assert K[0, 0].item() == 20.0 and K[0, 2].item() == pytest.approx(9.5) and K[1, 2].item() == pytest.approx(5.5)
    assert ds.intrinsics(ref, flipped=True)[0, 2].item() == pytest.approx(9.5)  # centred: flip-invariant
