"""Config loading: every shipped YAML is valid, and bad files fail at load with the key named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from semhint.core.config import Config, ConfigError, from_dict, load_config, parse_overrides, save_config, to_dict

CONFIG_DIR = Path(__file__).resolve().parents[1] / "semhint" / "configs"
CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))

# One impossible value per validated key (override, the key the error must name), plus a wrong type and
# an unknown key: each is refused on top of every shipped recipe.
BAD_VALUES = [
    ("data.kind=zip", "data.kind"), ("data.height=16", "data.height"), ("data.width=8", "data.height/width"),
    ("data.frame_ids=[-1,0,1]", "data.frame_ids"), ("data.frame_ids=[0,1,1]", "data.frame_ids"),
    ("data.unit=cm", "data.unit"), ("data.num_workers=-1", "data.num_workers"), ("data.hue=0.6", "data.hue"),
    ("data.brightness=-0.1", "data.brightness"), ("model.encoder=vgg16", "model.encoder"),
    ("model.pose_encoder=vgg16", "model.pose_encoder"), ("model.shared_layers=11", "model.shared_layers"),
    ("model.num_classes=255", "model.num_classes"), ("model.disp_init=1.0", "model.disp_init"),
    ("model.min_depth=0", "model.min_depth"), ("model.max_depth=0.001", "model.min_depth/max_depth"),
    ("model.scales=[1,2]", "model.scales"), ("model.seg_scales=[4]", "model.seg_scales"),
    ("model.seg_stage=4", "model.seg_stage"), ("model.seg_width=0", "model.seg_width"),
    ("model.seg_width=1.5", "model.seg_width"), ("model.decoder_pad=circular", "model.decoder_pad"),
    ("model.decoder_act=gelu", "model.decoder_act"),
    ("model.seg_grad_scale=-1", "model.seg_grad_scale"), ("loss.ssim_weight=1.5", "loss.ssim_weight"),
    ("loss.smoothness=-1", "loss.smoothness"), ("loss.seg_weight=-1", "loss.seg_weight"),
    ("loss.planar_weight=-0.1", "loss.planar_weight"), ("loss.seg_loss=mse", "loss.seg_loss"),
    ("loss.planar_segments=gt", "loss.planar_segments"), ("loss.brightness=gamma", "loss.brightness"),
    ("loss.specular_threshold=0.2", "loss.specular_threshold"), ("loss.specular_threshold=1.5", "loss.specular_threshold"),
    ("refine.hint_segments=gt", "refine.hint_segments"),
    ("refine.smooth_domain=depth", "refine.smooth_domain"), ("refine.hint_classes=[300]", "refine.hint_classes"),
    ("refine.hint_gate_margin=-1", "refine.hint_gate_margin"), ("refine.hint_weight=-1", "refine.hint_weight"),
    ("refine.surface_order=3", "refine.surface_order"), ("refine.surface_inlier=1.0", "refine.surface_inlier"),
    ("refine.surface_band=-1", "refine.surface_band"), ("refine.warmup_epochs=-1", "refine.warmup_epochs"),
    ("refine.pseudo_seg_confidence=2", "refine.pseudo_seg_confidence"),
    ("refine.pseudo_seg_weight=-1", "refine.pseudo_seg_weight"),
    ("refine.bilateral_sigma_color=0", "refine.bilateral_sigma_color"), ("optim.lr=-1", "optim.lr"),
    ("optim.lr=.nan", "optim.lr"), ("optim.epochs=0", "optim.epochs"), ("optim.batch_size=0", "optim.batch_size"),
    ("optim.gamma=0", "optim.gamma"), ("optim.grad_clip=-1", "optim.grad_clip"),
    ("optim.weight_decay=-1", "optim.weight_decay"), ("optim.pose_warmup_steps=-1", "optim.pose_warmup_steps"),
    ("trainer.precision=fp8", "trainer.precision"), ("trainer.max_minutes=-1", "trainer.max_minutes"),
    ("trainer.checkpoint_every_n_steps=-1", "trainer.checkpoint_every_n_steps"),
    ("trainer.num_nodes=0", "trainer.num_nodes"), ("trainer.devices=0", "trainer.devices"),
    ("trainer.accelerator=abacus", "trainer.accelerator"), ("trainer.strategy=magic", "trainer.strategy"),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches"),
    ("eval.protocol=nyu", "eval.protocol"), ("eval.crop=square", "eval.crop"),
    ("eval.min_depth=1.0e9", "eval.min_depth/max_depth"), ("optim.batch_size=2.5", "optim.batch_size"),
    ("data.augment=3", "data.augment"), ("optim.learning_rate=0.1", "optim.learning_rate"),
]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def _yaml_chain(path: Path) -> dict:
    """A shipped config's own YAML with its ``base:`` files merged under it, read here without semhint's
    loader (the file wins over its base, mappings merge, lists replace, ``name`` is never inherited)."""
    raw = yaml.safe_load(path.read_text()) or {}
    base = raw.pop("base", None)
    raw.setdefault("name", path.stem)
    if base is None:
        return raw
    base_path = path.parent / base
    if not base_path.is_file():
        base_path = CONFIG_DIR / f"{base.removesuffix('.yaml')}.yaml"
    inherited = _yaml_chain(base_path)
    inherited.pop("name")
    return _merge(inherited, raw)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _same(written, resolved) -> bool:
    """A YAML value and the config's value for it: equal, numbers by value ('1e-4' is a number, 100 is 100.0)."""
    if isinstance(written, (list, tuple)) and isinstance(resolved, list):
        return len(written) == len(resolved) and all(_same(w, r) for w, r in zip(written, resolved))
    if isinstance(resolved, float) and not isinstance(written, bool):
        try:
            return float(written) == resolved
        except (TypeError, ValueError):
            return False
    if written is None and resolved == "":
        return True
    return type(written) is type(resolved) and written == resolved or (
        isinstance(resolved, str) and isinstance(written, (int, float)) and str(written) == resolved)


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(CONFIG_DIR)) for p in CONFIGS])
def test_shipped_config_resolves_to_what_its_yaml_says(path, tmp_path):
    """Every value of the loaded config is the one its YAML (or its base chain) writes, else the default;
    and it survives save/load unchanged."""
    cfg = load_config(path)
    resolved = _leaves(to_dict(cfg))
    written = _leaves(_yaml_chain(path))
    assert set(written) <= set(resolved), f"keys the loader dropped: {set(written) - set(resolved)}"
    for key, value in written.items():
        if key == "trainer.out_dir":
            value = value.replace("{name}", cfg.name)
        assert _same(value, resolved[key]), f"{key}: YAML says {value!r}, loaded {resolved[key]!r}"
    defaults = _leaves(to_dict(Config()))
    for key in set(resolved) - set(written):
        assert resolved[key] == defaults[key], f"{key}: not in the YAML, yet {resolved[key]!r}, not {defaults[key]!r}"
    assert cfg.name == written["name"]

    save_config(cfg, tmp_path / "saved.yaml")
    assert to_dict(load_config(tmp_path / "saved.yaml")) == to_dict(cfg)


RECIPES = [p for p in CONFIGS if p.parent == CONFIG_DIR]  # the worlds' recipes; the ablations are small diffs over them


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_validated_key_refused_by_name_on_top_of_each_recipe(path):
    """Each impossible value, set on top of a shipped recipe, is refused naming its key: no recipe relaxes a
    check, and no check is shadowed by another (the tree is the resolved config, so no YAML is re-read)."""
    tree = to_dict(load_config(path))
    for override, key in BAD_VALUES:
        with pytest.raises(ConfigError, match=re.escape(key)):
            from_dict(_merge(tree, parse_overrides([override])), str(path))


def test_shipped_configs_all_tested():
    assert len(CONFIGS) >= 40 and len(RECIPES) >= 10


def test_shipped_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"kitti_eigen_zhou.yaml", "synth_drive.yaml", "kitti_sample.yaml", "synth_tissue.yaml"} <= names


def test_monodepth2_recipe():
    cfg = load_config(Path(__file__).resolve().parents[1] / "semhint" / "configs" / "kitti_eigen_zhou.yaml")
    assert (cfg.model.encoder, cfg.data.height, cfg.data.width) == ("resnet18", 192, 640)
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.optim.milestones, cfg.optim.gamma, cfg.optim.batch_size) == (
        1e-4, 20, [15], 0.1, 12)


def test_unknown_key_is_named(tmp_path):
    path = _write(tmp_path, "optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'optim.learning_rate'"):
        load_config(path)


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'optimiser'"):
        load_config(_write(tmp_path, "optimiser:\n  lr: 0.1\n"))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"optim.batch_size: expected an integer"):
        load_config(_write(tmp_path, "optim:\n  batch_size: twelve\n"))
    with pytest.raises(ConfigError, match=r"data.augment: expected true/false"):
        load_config(_write(tmp_path, "data:\n  augment: 3\n"))
    with pytest.raises(ConfigError, match=r"trainer.compile: expected true/false"):
        load_config(None, ["trainer.compile=yes please"])
    assert load_config(None, ["trainer.compile=true"]).trainer.compile is True


@pytest.mark.parametrize("override,key", [
    ("optim.lr=-1", "optim.lr"),
    ("data.frame_ids=[-1,0,1]", "data.frame_ids"),
    ("model.shared_layers=11", "model.shared_layers"),
    ("model.disp_init=1.0", "model.disp_init"),
    ("optim.pose_warmup_steps=-1", "optim.pose_warmup_steps"),
    ("trainer.precision=fp8", "trainer.precision"),
    ("trainer.devices=0", "trainer.devices"),
    ("model.encoder=vgg16", "model.encoder"),
    ("refine.smooth_domain=depth", "refine.smooth_domain"),
    ("loss.planar_weight=-0.1", "loss.planar_weight"),
    ("loss.planar_segments=gt", "loss.planar_segments"), ("loss.brightness=gamma", "loss.brightness"),
    ("loss.specular_threshold=0.2", "loss.specular_threshold"), ("loss.specular_threshold=1.5", "loss.specular_threshold"),
])
def test_impossible_values_are_named(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_overrides_apply_with_yaml_types(tmp_path):
    path = _write(tmp_path, "optim:\n  lr: 0.001\n")
    cfg = load_config(path, ["optim.lr=2.0e-4", "data.frame_ids=[0,-2,2]", "trainer.devices=auto"])
    assert cfg.optim.lr == pytest.approx(2e-4)
    assert cfg.data.frame_ids == [0, -2, 2]
    assert cfg.trainer.devices == "auto"


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["optim.lr"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "optim: [unclosed\n"))


def test_save_then_load_round_trips(tmp_path):
    cfg = load_config(None, ["optim.lr=3.0e-4", "model.num_classes=5", "refine.hint=true"])
    save_config(cfg, tmp_path / "saved.yaml")
    assert to_dict(load_config(tmp_path / "saved.yaml")) == to_dict(cfg)


def test_exponent_without_dot_is_a_number(tmp_path):
    """YAML 1.1 reads 1e-4 as a string; the config must still take it as the float users meant."""
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-4\n")
    assert load_config(path).optim.lr == 1e-4
    assert load_config(None, ["optim.lr=2e-4"]).optim.lr == 2e-4


def test_planar_prior_needs_the_segments_it_follows():
    with pytest.raises(ConfigError, match=r"loss\.planar_segments: 'labels' needs noisy labels"):
        load_config(None, ["loss.planar_weight=0.1"])
    with pytest.raises(ConfigError, match=r"loss\.planar_segments: 'prediction' needs a segmentation branch"):
        load_config(None, ["loss.planar_weight=0.1", "loss.planar_segments=prediction"])
    with pytest.raises(ConfigError, match=r"loss\.planar_classes"):
        load_config(None, ["loss.planar_weight=0.1", "data.labels=x", "loss.planar_classes=[]"])
    assert load_config(None, ["loss.planar_weight=0.1", "data.labels=x"]).loss.planar_weight == 0.1


# ----------------------------------------------------------------------------------------------
# inheritance: a config is a small diff over its base
# ----------------------------------------------------------------------------------------------
def test_base_chain_merges_deeply_and_the_file_wins(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\noptim:\n  lr: 1.0e-3\n  batch_size: 8\ndata:\n  frame_ids: [0, -1, 1]\n"
                                     "trainer:\n  out_dir: runs/{name}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text("base: ../a.yaml\noptim:\n  lr: 2.0e-4\ndata:\n  frame_ids: [0, 1]\n")
    (tmp_path / "c.yaml").write_text("base: sub/b.yaml\nname: custom\nmodel:\n  shared_layers: 2\n")
    b = load_config(tmp_path / "sub" / "b.yaml")
    assert (b.optim.lr, b.optim.batch_size, b.data.frame_ids) == (2e-4, 8, [0, 1])  # lists replace, mappings merge
    assert b.name == "b" and b.trainer.out_dir == "runs/b"  # name is never inherited; {name} follows it
    c = load_config(tmp_path / "c.yaml", ["optim.batch_size=2"])
    assert (c.name, c.trainer.out_dir, c.model.shared_layers, c.optim.lr, c.optim.batch_size) == (
        "custom", "runs/custom", 2, 2e-4, 2)


def test_base_errors_name_the_file(tmp_path):
    (tmp_path / "x.yaml").write_text("base: y.yaml\n")
    (tmp_path / "y.yaml").write_text("base: x.yaml\n")
    with pytest.raises(ConfigError, match=r"base chain loops \(x.yaml -> y.yaml -> x.yaml\)"):
        load_config(tmp_path / "x.yaml")
    (tmp_path / "z.yaml").write_text("base: no_such_config\n")
    with pytest.raises(ConfigError, match="no_such_config: config file not found"):
        load_config(tmp_path / "z.yaml")
    (tmp_path / "w.yaml").write_text("base: [a, b]\n")
    with pytest.raises(ConfigError, match=r"w.yaml: base: expected the name or path"):
        load_config(tmp_path / "w.yaml")


def test_shipped_configs_resolve_by_name_from_anywhere(tmp_path, monkeypatch):
    from semhint.core.config import resolve_config, shipped_configs

    monkeypatch.chdir(tmp_path)  # not the repository: a pip user's working directory
    names = shipped_configs()
    assert {"synth_drive", "semhint_synth_drive", "ablations/drive_k4"} <= set(names)
    by_name = load_config("ablations/drive_k4")
    assert to_dict(by_name) == to_dict(load_config("configs/ablations/drive_k4.yaml"))
    assert resolve_config("synth_drive") == resolve_config("configs/synth_drive.yaml")
    assert by_name.model.shared_layers == 4 and by_name.trainer.out_dir == "runs/synth_drive/drive_k4"


def test_config_show_prints_the_resolved_config(capsys):
    import yaml

    from semhint.app.cli import main

    assert main(["config", "show", "ablations/drive_k0", "optim.lr=3e-4"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["model"]["shared_layers"] == 0 and shown["optim"]["lr"] == 3e-4
    assert shown["refine"]["hint_operators"] == ["smooth"] and "base" not in shown
    assert main(["config", "list"]) == 0 and "ablations/drive_k0" in capsys.readouterr().out.split()
    assert main(["config", "show", "ablations/nope"]) == 2
    assert "config file not found" in capsys.readouterr().err
