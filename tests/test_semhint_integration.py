"""Integration: every shipped config loads, and every SemHint / ablation variant trains.

The fast tests run one real optimisation step (real data from a tiny rendered drive, noisy labels
from `labels corrupt`, the training objective including both refinements, backward) for each
distinct model / loss / refine combination the configs contain, at 32 x 96. The slow test runs
`fit` end to end (Lightning, validation with mIoU, refine statistics in the CSV log) on the main
SemHint configs of both synthetic worlds.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from semhint.core.config import load_config, resolve_config, to_dict

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "semhint" / "configs").rglob("*.yaml"))
MAIN_DRIVE = REPO / "semhint" / "configs" / "semhint_synth_drive.yaml"
ABLATIONS = sorted((REPO / "semhint" / "configs" / "ablations").glob("*.yaml"))


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("path", CONFIGS, ids=_rel)
def test_every_config_loads_and_validates(path):
    cfg = load_config(path)
    if path.name.startswith("semhint_") or path.parent.name == "ablations":
        assert cfg.model.num_classes > 0 and cfg.data.labels, "a SemHint config needs a branch and noisy labels"
    else:
        assert cfg.model.num_classes == 0 and not (cfg.refine.hint or cfg.refine.pseudo_seg)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def own_keys(path: Path) -> tuple[str | None, dict]:
    """(the config a file inherits from, the keys the file itself sets) of a shipped config file."""
    values = yaml.safe_load(path.read_text())
    base = values.pop("base", None)
    values.pop("name", None)
    return base, _flat(values)


@pytest.mark.parametrize("path", ABLATIONS, ids=_rel)
def test_ablation_changes_only_its_own_switches(path):
    """An ablation is its base config with one idea switched: anything more would confound it.

    One idea may take up to three keys (operator D without the gate: the operator list, the segments
    it follows and the gate). The base is the main config or an ablation that leads back to it
    (the ablations made before the main config took the street hints name ablations/drive_hint_smooth,
    the main config of that time), so every ablation's full config is the main one plus a few keys."""
    base, own = own_keys(path)
    assert base is not None, f"{path.name}: an ablation names the config it varies with 'base:'"
    assert 1 <= len(own) <= 3, f"{path.name} sets {sorted(own)}"
    switches = {"model.shared_layers", "model.seg_grad_scale", "data.labels"}
    assert all(k in switches or k.startswith(("refine.", "loss.")) for k in own), f"{path.name} sets {sorted(own)}"
    resolved, parent = _flat(to_dict(load_config(path))), _flat(to_dict(load_config(base)))
    assert {k for k in parent if parent[k] != resolved[k]} <= set(own) | {"name", "trainer.out_dir"}
    chain = [path]
    while base != "semhint_synth_drive":  # every chain of bases ends at the main config, without a loop
        parent_path = resolve_config(base)
        assert parent_path not in chain, f"{path.name}: base chain {chain} loops"
        chain.append(parent_path)
        base, _ = own_keys(parent_path)
        assert base is not None, f"{path.name}: base chain {chain} does not reach the main config"


def test_every_ablation_trains_into_its_own_folder():
    folders = [load_config(path).trainer.out_dir for path in ABLATIONS]
    assert len(set(folders)) == len(folders) and all(f.endswith(p.stem) for f, p in zip(folders, ABLATIONS))


def test_there_is_a_semhint_config_beside_each_trainable_baseline():
    for name in ("synth_drive", "synth_tissue", "kitti_eigen_zhou"):
        base, semhint = load_config(REPO / "semhint" / "configs" / f"{name}.yaml"), load_config(
            REPO / "semhint" / "configs" / f"semhint_{name}.yaml")
        same = ("data.path", "data.height", "data.width", "optim.lr", "optim.batch_size", "model.encoder", "eval.max_depth")
        b, s = _flat(to_dict(base)), _flat(to_dict(semhint))
        assert all(b[k] == s[k] for k in same), "the SemHint config must train on what its baseline trains on"


# ----------------------------------------------------------------------------------------------
# one real step per distinct variant
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_drive_with_labels(tmp_path_factory) -> Path:
    from semhint.data.synthetic import render_drive
    from semhint.labelmaker.corrupt import corrupt_label_dir

    root = tmp_path_factory.mktemp("drive")
    render_drive(root, preset="tiny", seed=0, progress=False)
    corrupt_label_dir(root / "gt_labels", root / "noisy", 0.5, seed=0)
    return root


def tiny_overrides(root: Path, out: Path, **extra) -> list[str]:
    values = {
        "data.path": root / "data", "data.train_split": root / "splits" / "train.txt",
        "data.val_split": root / "splits" / "val.txt", "data.gt_depth": root / "gt_depth",
        "data.labels": root / "noisy", "data.gt_labels": root / "gt_labels",
        "data.height": 32, "data.width": 96, "data.num_workers": 0, "optim.batch_size": 2,
        "trainer.out_dir": out, "trainer.accelerator": "cpu", "trainer.num_threads": 1,
        "refine.warmup_epochs": 0,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def _variant_key(path: Path) -> str:
    """What changes the training step: model, loss and refine sections (not the label folder)."""
    d = to_dict(load_config(path))
    return json.dumps({k: d[k] for k in ("model", "loss", "refine")}, sort_keys=True)


FAST_VARIANTS = {"semhint_synth_drive.yaml", "drive_k0.yaml", "drive_k10.yaml", "drive_seg_only.yaml"}


def _distinct_variants() -> list:
    """One config per distinct training step; the extremes run by default, the rest are marked slow."""
    seen, out = set(), []
    for path in [MAIN_DRIVE, *ABLATIONS]:
        key = _variant_key(path)
        if key not in seen:
            seen.add(key)
            marks = () if path.name in FAST_VARIANTS else (pytest.mark.slow,)
            out.append(pytest.param(path, marks=marks, id=_rel(path)))
    return out


def _batch(cfg) -> dict:
    from semhint.data.build import build_dataset
    from semhint.training import collate_snippets

    dataset = build_dataset(cfg.data, "train", train_gt="oracle" in cfg.refine.hint_operators)
    return collate_snippets([dataset[0], dataset[1]])


@pytest.mark.parametrize("path", _distinct_variants())
def test_variant_trains_one_step(path, tiny_drive_with_labels, tmp_path):
    from semhint.training import SemHintModule

    torch.manual_seed(0)
    cfg = load_config(path, tiny_overrides(tiny_drive_with_labels, tmp_path))
    module = SemHintModule(cfg)
    batch = _batch(cfg)
    assert "labels/0" in batch
    losses, _, outputs = module.objective(batch)
    assert torch.isfinite(losses["loss"]) and "seg" in losses
    assert outputs["seg/0"].shape == (2, cfg.model.num_classes, 32, 96)
    if cfg.refine.hint:
        assert 0.0 <= float(losses["refine/hint_accept_rate"]) <= 1.0
    if cfg.refine.pseudo_seg:
        assert 0.0 <= float(losses["refine/pseudo_label_rate"]) <= 1.0
    losses["loss"].backward()
    seg_grads = [p.grad for n, p in module.depth_net.named_parameters() if "seg" in n]
    assert seg_grads and any(g is not None and g.abs().sum() > 0 for g in seg_grads)
    shared = list(module.depth_net.decoder.shared.parameters())
    assert (len(shared) > 0) == (cfg.model.shared_layers > 0)


# ----------------------------------------------------------------------------------------------
# end to end with Lightning
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_tissue_with_labels(tmp_path_factory) -> Path:
    from semhint.data.synthetic import render_tissue
    from semhint.labelmaker.corrupt import corrupt_label_dir

    root = tmp_path_factory.mktemp("tissue")
    render_tissue(root, preset="tiny", seed=0, progress=False)
    corrupt_label_dir(root / "gt_labels", root / "noisy", 0.5, seed=0, classes="tissue")
    return root


def _logged_columns(run: Path) -> set[str]:
    with open(run / "logs" / "csv" / "metrics.csv", newline="") as fh:
        return {k for row in csv.DictReader(fh) for k, v in row.items() if v not in ("", None)}


@pytest.mark.slow
@pytest.mark.parametrize("world", ["drive", "tissue"])
def test_semhint_config_fits_end_to_end(world, request, tmp_path):
    from semhint.training import fit

    root = request.getfixturevalue(f"tiny_{world}_with_labels")
    out = tmp_path / "run"
    size = {"drive": (32, 96), "tissue": (48, 64)}[world]
    cfg = load_config(REPO / "semhint" / "configs" / f"semhint_synth_{world}.yaml", tiny_overrides(
        root, out, **{"data.height": size[0], "data.width": size[1], "optim.epochs": 1,
                      "trainer.limit_train_batches": 2, "trainer.limit_val_batches": 1,
                      "trainer.log_every_n_steps": 1, "trainer.image_log_every_n_steps": 0}))
    fit(cfg)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    columns = _logged_columns(out)
    assert {"train/seg", "train/refine/hint", "train/refine/hint_accept_rate", "val/abs_rel", "val/miou"} <= columns
