"""The Python API (`semhint.load` -> Predictor): light import, input checks, depth and labels (issue 21, item 6)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import semhint
from semhint.core.config import from_dict
from semhint.core.errors import InputError
from semhint.training import SemHintModule, save_model_checkpoint

H, W = 64, 96


def _checkpoint(folder, num_classes: int = 0):
    torch.manual_seed(0)
    cfg = from_dict({"data": {"height": H, "width": W}, "model": {"num_classes": num_classes}}, "test")
    return save_model_checkpoint(SemHintModule(cfg), folder / f"model{num_classes}.ckpt")


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return semhint.load(_checkpoint(tmp_path_factory.mktemp("api")))


def _rgb(h: int = 40, w: int = 70, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_import_semhint_stays_light_and_exports_the_api_lazily():
    code = ("import sys, semhint; assert 'torch' not in sys.modules, 'torch imported by import semhint'; "
            "assert {'load', 'Predictor', 'Prediction'} <= set(semhint.__all__) <= set(dir(semhint)); "
            "semhint.load; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError):
        semhint.no_such_name  # noqa: B018


def test_predict_depth_accepts_uint8_and_float_rgb_alike(predictor):
    rgb = _rgb()
    depth = predictor.predict_depth(rgb)
    assert depth.shape == rgb.shape[:2] and depth.dtype == np.float32 and (depth > 0).all()
    as_float = predictor.predict_depth(rgb.astype(np.float64) / 255.0)
    np.testing.assert_allclose(as_float, depth, rtol=2e-2)  # resize order differs (float vs uint8), not the reading


def test_bgr_flag_reverses_the_channels(predictor):
    rgb = _rgb(seed=3)
    np.testing.assert_allclose(predictor.predict_depth(np.ascontiguousarray(rgb[..., ::-1]), bgr=True),
                               predictor.predict_depth(rgb), rtol=1e-6)


@pytest.mark.parametrize("image,expected", [
    (np.zeros((20, 30), np.uint8), "greyscale"),
    (np.zeros((20, 30, 4), np.uint8), "RGBA"),
    (np.zeros((3, 20, 30), np.uint8), "channels first"),
    (np.zeros((20, 30, 3), np.uint16), "dtype uint16"),
    (np.full((20, 30, 3), 200.0, np.float32), "divide a 0..255 image by 255"),
    (np.full((20, 30, 3), np.nan, np.float32), "NaN"),
    ([[0, 0, 0]], "numpy array"),
])
def test_bad_inputs_are_one_clear_line(predictor, image, expected):
    with pytest.raises(InputError, match=expected) as info:
        predictor.predict_depth(image)
    assert "\n" not in str(info.value)


def test_predict_returns_depth_and_labels_when_the_model_has_a_branch(tmp_path, predictor):
    plain = predictor.predict(_rgb())
    assert isinstance(plain, semhint.Prediction) and plain.labels is None and plain.unit == "m"
    np.testing.assert_allclose(plain.depth, predictor.predict_depth(_rgb()), rtol=1e-6)
    seg = semhint.load(_checkpoint(tmp_path, num_classes=5))
    result = seg.predict(_rgb(33, 50))
    assert result.depth.shape == result.labels.shape == (33, 50)
    assert result.labels.dtype == np.uint8 and result.labels.max() < 5
    np.testing.assert_array_equal(result.labels, seg.predict_segmentation_batch([_rgb(33, 50)])[0])


def test_load_of_a_missing_checkpoint_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="missing.ckpt"):
        semhint.load(tmp_path / "missing.ckpt")
