"""Depth metrics and the KITTI Eigen protocol against the reference outputs; crops, per-class AbsRel,
mIoU on hand-made examples; `semhint evaluate` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semhint.app.cli import main
from semhint.core.fileio import InputError, save_image, save_npz
from semhint.data import kitti
from semhint.evaluation import metrics as M
from semhint.evaluation import protocols as P


# ---------------------------------------------------------------------------------------------- oracles
def test_metrics_match_oracle(oracle):
    d = oracle("metrics.npz")
    assert tuple(str(n) for n in d["names"]) == M.METRIC_NAMES
    errors = np.stack([M.compute_depth_errors(g, p) for g, p in zip(d["gt"], d["pred"])])
    assert errors.dtype == np.float64
    np.testing.assert_allclose(errors, d["errors"], rtol=1e-6)


@pytest.fixture
def eigen(oracle):
    """(predicted disparities, LiDAR GT, expected outputs) of the Eigen-protocol oracle."""
    ev = oracle("eigen_eval.npz")
    gt = oracle("kitti_sample_lidar_gt.npz")
    np.testing.assert_array_equal(ev["frames"], gt["frames"])
    return ev["pred_disps"], gt["depth_velodyne_x"], ev


def test_eigen_protocol_matches_oracle(eigen):
    disps, gt, expected = eigen
    result = P.evaluate_depth(disps, gt)  # defaults are the KITTI Eigen protocol
    np.testing.assert_allclose(result.per_image_errors, expected["per_image_errors"], rtol=1e-6)
    np.testing.assert_allclose(result.mean_errors, expected["mean_errors"], rtol=1e-6)
    np.testing.assert_allclose(result.ratios, expected["ratios"], rtol=1e-6)
    med, rel_std = M.ratio_stats(result.ratios)
    assert med == pytest.approx(float(np.median(expected["ratios"])), rel=1e-6)
    assert rel_std == pytest.approx(float(np.std(expected["ratios"] / np.median(expected["ratios"]))), rel=1e-5)


def test_cli_evaluate_reproduces_the_eigen_oracle(eigen, tmp_path, capsys):
    disps, gt, expected = eigen
    np.save(tmp_path / "disps.npy", disps)
    np.savez(tmp_path / "gt.npz", gt_depths=gt)  # uncompressed: 45 MB written in a blink
    report = tmp_path / "report.json"
    code = main(["evaluate", "--predictions", str(tmp_path / "disps.npy"), "--gt", str(tmp_path / "gt.npz"),
                 "--protocol", "kitti-eigen", "--out", str(report)])
    assert code == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in M.METRIC_NAMES)
    data = json.loads(report.read_text())
    got = np.array([data["metrics"][n] for n in M.METRIC_NAMES])
    np.testing.assert_allclose(got, expected["mean_errors"], rtol=1e-6)
    assert data["settings"]["crop"] == "garg" and len(data["per_image"]) == len(gt)
    assert data["ratios"]["median"] == pytest.approx(float(np.median(expected["ratios"])), rel=1e-6)


# ---------------------------------------------------------------------------------------------- protocol
def test_garg_and_eigen_crop_boundaries_on_kitti_size():
    # Garg crop of a 375 x 1242 KITTI frame: rows 153..370, cols 44..1196 (the published window)
    garg = M.crop_mask(375, 1242, "garg")
    rows, cols = np.where(garg)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (153, 370, 44, 1196)
    assert garg.sum() == (371 - 153) * (1197 - 44)
    eigen = M.crop_mask(375, 1242, "eigen")
    rows, cols = np.where(eigen)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (124, 341, 44, 1196)
    assert M.crop_mask(10, 20, "none").all()
    with pytest.raises(ValueError, match="unknown crop"):
        M.crop_mask(10, 20, "centre")


def _toy_scene(seed: int = 0, h: int = 30, w: int = 40):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(2, 60, (h, w)).astype(np.float32)
    gt[rng.random((h, w)) < 0.3] = 0  # sparse like LiDAR
    depth = (gt + rng.normal(0, 2, (h, w))).clip(1, None).astype(np.float32)
    depth[gt == 0] = rng.uniform(2, 60, int((gt == 0).sum()))
    return gt, depth


def test_median_scaling_makes_errors_scale_invariant_and_ratio_recovers_the_scale():
    gt, depth = _toy_scene()
    base = P.evaluate_depth([depth], [gt], crop="none", pred_is_disp=False)
    scaled = P.evaluate_depth([depth * 0.1], [gt], crop="none", pred_is_disp=False)
    np.testing.assert_allclose(scaled.mean_errors, base.mean_errors, rtol=1e-5)
    assert scaled.ratios[0] == pytest.approx(10 * base.ratios[0], rel=1e-5)
    metric = P.evaluate_depth([depth * 0.1], [gt], crop="none", pred_is_disp=False, median_scaling=False)
    assert metric.ratios.size == 0 and metric.mean_errors[0] > 0.5  # a 10x too small depth is badly wrong
    fixed = P.evaluate_depth([depth * 0.1], [gt], crop="none", pred_is_disp=False, median_scaling=False, fixed_scale=10)
    np.testing.assert_allclose(fixed.mean_errors, P.evaluate_depth([depth], [gt], crop="none", pred_is_disp=False,
                                                                   median_scaling=False).mean_errors, rtol=1e-5)


def test_disparity_and_depth_inputs_agree_and_predictions_are_resized():
    gt, depth = _toy_scene(1)
    as_depth = P.evaluate_depth([depth], [gt], crop="none", pred_is_disp=False)
    as_disp = P.evaluate_depth([1 / depth], [gt], crop="none", pred_is_disp=True)
    np.testing.assert_allclose(as_disp.mean_errors, as_depth.mean_errors, rtol=1e-5)
    # a constant prediction at a quarter of the GT size is resized, not rejected
    small = P.evaluate_depth([np.full((5, 7), 0.2, np.float32)], [gt], crop="none")
    assert small.per_image_errors.shape == (1, 7) and np.isfinite(small.mean_errors).all()


def test_depth_range_and_clamping_follow_the_protocol():
    gt = np.full((4, 4), 50.0, np.float32)
    gt[0] = 120.0  # beyond an 80 m cap: not evaluated
    pred = np.full((4, 4), 500.0, np.float32)  # clamped to max_depth before the errors
    result = P.evaluate_depth([pred], [gt], crop="none", pred_is_disp=False, median_scaling=False)
    assert result.mean_errors[0] == pytest.approx(30 / 50)
    # a generic 150 mm endoscopy cap keeps the 120 rows and clamps to 150
    generic = P.evaluate_depth([pred], [gt], crop="none", pred_is_disp=False, median_scaling=False, max_depth=150)
    expected = np.mean(np.abs(gt - 150) / gt)
    assert generic.mean_errors[0] == pytest.approx(expected, rel=1e-6)


def test_per_class_abs_rel_on_a_hand_made_example():
    gt = np.full((4, 6), 10.0, np.float32)
    gt[3, 5] = 0  # no measurement: excluded from every class
    labels = np.zeros((4, 6), np.uint8)
    labels[:, 3:] = 1
    labels[0, 0] = 255  # ignored
    depth = np.where(labels == 1, 9.0, 12.0).astype(np.float32)
    result = P.evaluate_depth([depth], [gt], crop="none", pred_is_disp=False, median_scaling=False,
                              labels=[labels], class_names=["road", "car", "sky"])
    assert set(result.per_class_abs_rel) == {"road", "car"}  # no sky pixel: not reported
    assert result.per_class_abs_rel["road"] == {"abs_rel": pytest.approx(0.2), "log_bias": pytest.approx(np.log(1.2)),
                                                "pixels": 11, "range_slope": pytest.approx(np.nan, nan_ok=True)}  # too far (GT has no depth range: no slope)
    assert result.per_class_abs_rel["car"] == {"abs_rel": pytest.approx(0.1), "log_bias": pytest.approx(np.log(0.9)),
                                               "pixels": 11, "range_slope": pytest.approx(np.nan, nan_ok=True)}  # too near
    table = P.format_metrics_table(result)
    assert "road" in table and "car" in table


def test_evaluate_depth_rejects_bad_input():
    gt, depth = _toy_scene(2)
    with pytest.raises(InputError, match="2 predictions but 1"):
        P.evaluate_depth([depth, depth], [gt])
    with pytest.raises(InputError, match="finite and > 0"):
        P.evaluate_depth([np.zeros_like(depth)], [gt], crop="none")
    with pytest.raises(InputError, match="no pixels"):
        P.evaluate_depth([depth], [np.zeros_like(gt)], crop="none")
    with pytest.raises(InputError, match="label map 0"):
        P.evaluate_depth([depth], [gt], crop="none", labels=[np.zeros((3, 3))], class_names=["a"])


# ---------------------------------------------------------------------------------------------- segmentation
def test_confusion_matrix_and_miou_on_a_hand_made_example():
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    conf = M.confusion_matrix(gt, pred, num_classes=4)
    assert conf.sum() == 5  # the ignored pixel is dropped
    assert conf[0, 0] == 1 and conf[0, 1] == 1 and conf[1, 1] == 2 and conf[2, 0] == 1
    iou, miou = M.iou_scores(conf)
    # class 0: tp 1, gt 2 + pred 2 - tp 1 = union 3; class 1: tp 2, union 2 + 3 - 2 = 3;
    # class 2: tp 0, union 1 + 0 = 1 (its pixel was predicted 0; the 2 under ignore does not count);
    # class 3 appears nowhere: excluded from the mean
    np.testing.assert_allclose(iou[:3], [1 / 3, 2 / 3, 0.0])
    assert np.isnan(iou[3])
    assert miou == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    report = M.evaluate_segmentation([gt], [pred], 4, ["a", "b", "c", "d"])
    assert report["miou"] == pytest.approx(miou) and report["per_class_iou"]["d"] is None
    assert report["pixel_accuracy"] == pytest.approx(3 / 5)
    with pytest.raises(InputError, match="ground-truth class 7"):
        M.confusion_matrix(np.array([7]), np.array([0]), 4)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_evaluate_generic_protocol_with_padded_gt_and_labels(tmp_path, capsys):
    """export-gt pads frames of different sizes; `sizes` restores them, and labels give per-class rows."""
    gt_a, depth_a = _toy_scene(3, 30, 40)
    gt_b, depth_b = _toy_scene(4, 24, 36)
    stack = np.zeros((2, 30, 40), np.float32)
    stack[0] = gt_a
    stack[1, :24, :36] = gt_b
    save_npz(tmp_path / "gt.npz", gt_depths=stack, sizes=np.array([[30, 40], [24, 36]], np.int32))
    preds = np.stack([depth_a, _toy_scene(5, 30, 40)[1]])  # network-resolution predictions, resized to each GT
    np.save(tmp_path / "pred.npy", preds[:, None])  # N x 1 x H x W is accepted too
    (tmp_path / "labels").mkdir()
    save_image(tmp_path / "labels" / "000.png", (np.arange(30 * 40).reshape(30, 40) % 2).astype(np.uint8))
    save_image(tmp_path / "labels" / "001.png", np.ones((24, 36), np.uint8))
    code = main(["evaluate", "--predictions", str(tmp_path / "pred.npy"), "--pred-type", "depth",
                 "--gt", str(tmp_path / "gt.npz"), "--protocol", "generic", "--max-depth", "150",
                 "--labels", str(tmp_path / "labels"), "--class-names", "even,odd", "--out", str(tmp_path / "r.json")])
    assert code == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["settings"]["crop"] == "none" and data["settings"]["max_depth"] == 150
    assert set(data["per_class_abs_rel"]) == {"even", "odd"}
    # the padded second frame is evaluated at its true size (the prediction is resized to 24 x 36,
    # not to the padded 30 x 40), so per-image errors equal a direct evaluation on unpadded GT
    direct = P.evaluate_depth(list(preds), [gt_a, gt_b], crop="none", max_depth=150, pred_is_disp=False)
    got = np.array([[row[n] for n in M.METRIC_NAMES] for row in data["per_image"]])
    np.testing.assert_allclose(got, direct.per_image_errors, rtol=1e-6)
    assert "per-class abs_rel" in capsys.readouterr().out


def test_cli_evaluate_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    save_npz(tmp_path / "gt.npz", gt_depths=np.ones((3, 8, 8), np.float32))
    np.save(tmp_path / "pred.npy", np.ones((2, 8, 8), np.float32))
    args = ["evaluate", "--gt", str(tmp_path / "gt.npz")]
    assert main(args + ["--predictions", str(tmp_path / "pred.npy")]) == 2
    assert "2 predictions but 3" in capsys.readouterr().err
    assert main(args + ["--predictions", str(tmp_path / "missing.npy")]) == 2
    assert "missing.npy" in capsys.readouterr().err
    assert main(args) == 2  # neither predictions nor a checkpoint
    assert "exactly one of" in capsys.readouterr().err
    assert main(args + ["--checkpoint", "x.ckpt"]) == 2
    assert "--split" in capsys.readouterr().err


@pytest.mark.slow  # builds, saves and reloads a network (imports lightning): ~10-20 s on 2 shared cores
def test_cli_evaluate_checkpoint_on_kitti_sample_frames(kitti_sample, tmp_path, capsys):
    """--checkpoint runs the network on each split frame; the numbers equal evaluating its disparities."""
    import torch

    from semhint.core.config import from_dict
    from semhint.core.fileio import read_rgb
    from semhint.data.kitti import export_gt
    from semhint.inference import load_predictor
    from semhint.training import SemHintModule, save_model_checkpoint

    torch.manual_seed(0)
    cfg = from_dict({"data": {"height": 64, "width": 192}}, "test")
    ckpt = save_model_checkpoint(SemHintModule(cfg), tmp_path / "model.ckpt")
    split = tmp_path / "test_files.txt"
    split.write_text("2011_09_26/2011_09_26_drive_sfnd_sync 0 l\n2011_09_26/2011_09_26_drive_sfnd_sync 2 l\n")
    export_gt(kitti_sample, split, tmp_path / "gt.npz", progress=False)
    code = main(["evaluate", "--checkpoint", str(ckpt), "--split", str(split), "--data-path", str(kitti_sample),
                 "--gt", str(tmp_path / "gt.npz"), "--out", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "r.json").read_text())
    predictor = load_predictor(ckpt)
    images = sorted((kitti_sample / "2011_09_26" / "2011_09_26_drive_sfnd_sync" / "image_02" / "data").glob("*.png"))
    disps = [predictor.predict_disparity(read_rgb(images[i])) for i in (0, 2)]
    gt, _ = kitti.load_gt_depths(tmp_path / "gt.npz")
    expected = P.evaluate_depth(disps, gt)
    np.testing.assert_allclose([data["metrics"][n] for n in M.METRIC_NAMES], expected.mean_errors, rtol=1e-5)
    # a GT file whose frames do not match the split is refused
    split.write_text("2011_09_26/2011_09_26_drive_sfnd_sync 4 l\n2011_09_26/2011_09_26_drive_sfnd_sync 2 l\n")
    assert main(["evaluate", "--checkpoint", str(ckpt), "--split", str(split), "--data-path", str(kitti_sample),
                 "--gt", str(tmp_path / "gt.npz")]) == 2
    assert "frame 0" in capsys.readouterr().err


def test_range_slope_is_one_for_the_right_range_and_below_one_for_a_compressed_one():
    gt = np.array([[5.0, 10.0, 20.0, 40.0, 80.0]], np.float32)
    labels = np.zeros_like(gt, dtype=np.uint8)
    run = lambda pred: P.evaluate_depth([pred.astype(np.float32)], [gt], crop="none", pred_is_disp=False,  # noqa: E731
                                        median_scaling=False, max_depth=200.0, labels=[labels], class_names=["x"])
    assert run(gt * 1.3).per_class_abs_rel["x"]["range_slope"] == pytest.approx(1.0)  # an offset is not a range error
    compressed = np.exp(0.5 * np.log(gt) + 1.0)
    assert run(compressed).per_class_abs_rel["x"]["range_slope"] == pytest.approx(0.5)
    pooled = M.class_error_sums(labels, gt, gt * 1.3, 1)[0] + M.class_error_sums(labels, gt, compressed, 1)[0]
    assert 0.5 < M.range_slope(pooled) < 1.0  # sums pool pixels over images and runs
