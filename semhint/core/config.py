"""Experiment configuration: typed dataclasses loaded from YAML, dotted overrides, validation at load.

A config is plain data. Every experiment is one YAML file plus optional ``key=value`` overrides
(``optim.lr=2e-4 model.shared_layers=6``). Unknown keys, wrong types and impossible values are
rejected at load time with a one-line message naming the file and the key, because a typo that
silently falls back to a default wastes a day of training.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from semhint.core.errors import ConfigError, InputError


# ----------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """Where the video is and how snippets are made from it."""

    kind: str = "kitti"  # kitti (KITTI raw layout, also what `semhint synth drive` writes) | folder | scared | hamlyn
    path: str = ""  # dataset root
    train_split: str = ""  # split file; empty = every frame with all neighbours
    val_split: str = ""  # split file for validation; empty = no validation
    height: int = 192  # network input size (images are resized, K scaled)
    width: int = 640
    frame_ids: list[int] = field(default_factory=lambda: [0, -1, 1])  # target first, then sources
    intrinsics: str = ""  # folder kind: YAML/JSON with fx fy cx cy at the stored resolution
    fov: float = 0.0  # folder kind: horizontal field of view (degrees) assumed where no intrinsics file exists; 0 = off
    labels: str = ""  # root of noisy label PNGs mirroring the image layout; empty = none
    gt_labels: str = ""  # root of ground-truth label PNGs (evaluation only); empty = none
    gt_depth: str = ""  # validation GT: an export-gt .npz, a synth depth root, or "layout" (scared/hamlyn: their own files)
    unit: str = "m"  # m | mm: what depth values mean
    augment: bool = True
    flip: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.1
    cache_dir: str = ""  # cache resized frames here once; empty = decode every time
    poses: str = ""  # folder kind: POSES/<sequence>.txt camera-to-world per frame (kinematics); set: the warp uses them, not the pose net
    num_workers: int = 2


@dataclass
class ModelConfig:
    """The depth / segmentation network and the pose network."""

    encoder: str = "resnet18"  # resnet18 | resnet34 | resnet50 | efficientnet_lite0
    pretrained: str = ""  # path to torchvision-format weights, "package" for EfficientNet-Lite0; empty = random
    num_classes: int = 0  # 0 = depth-only (no segmentation branch at all)
    shared_layers: int = 0  # decoder conv layers shared by depth and segmentation (0..10)
    seg_grad_scale: float = 1.0  # scale of the segmentation gradient entering the shared trunk
    disp_init: float = 0.0  # initial sigmoid output of the disparity heads (bias = logit); 0 = PyTorch's default init
    seg_scales: list[int] = field(default_factory=lambda: [0])
    seg_stage: int = 0  # the segmentation branch stops at this decoder stage (0 = full resolution); finer logits are upsampled
    seg_width: float = 1.0  # channels of the segmentation branch's own layers, times the depth decoder's (cost switch)
    scales: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    decoder_pad: str = "reflect"  # reflect (Monodepth2) | zeros: each conv one fused kernel at inference
    decoder_act: str = "elu"  # elu (Monodepth2) | relu: fuses into the conv at inference
    min_depth: float = 0.1
    max_depth: float = 100.0
    pose_encoder: str = "resnet18"
    pose_pretrained: str = ""
    pose_zero_init: bool = False  # start the pose net at exactly zero motion (see models/pose.py)


@dataclass
class LossConfig:
    """Weights and switches of the self-supervised objective (METHOD.md, 'Base')."""

    ssim_weight: float = 0.85
    smoothness: float = 1e-3
    automask: bool = True
    min_reprojection: bool = True  # per-pixel min over sources (False = average)
    depth_norm: bool = False  # warp with depth / its per-image mean: removes the shrinking-scale escape
    seg_weight: float = 0.3
    seg_loss: str = "ce"  # ce | sce | gce | bootstrap | bootstrap_hard
    seg_loss_param: float = 0.0  # gce: q (0 = 0.7); bootstrap: beta (0 = 0.8); sce: beta (0 = 1.0)
    planar_weight: float = 0.0  # second differences of disparity inside planar segments (0: off)
    planar_classes: list[int] = field(default_factory=lambda: [0, 1, 2, 3])  # road, sidewalk, building, wall
    planar_segments: str = "labels"  # segments of the planar prior: labels (the noisy labels) | prediction (the branch)
    # a light that moves with the camera changes a surface's brightness from frame to frame:
    brightness: str = "none"  # none | affine: per pair and image, a gain and offset fitted before the comparison |
    # inverse_square: the warped source relit for a point light at the camera, (r_source / r_target)^2 from the
    # predicted depth and pose | inverse_square_affine: both (semhint.losses.warp_inside)
    specular_threshold: float = 0.0  # leave out pixels whose brightest channel reaches this in either image (0: off)
    light_profile: str = "none"  # none | radial: the beam and vignetting fixed to the camera, exp(a r^2 + b r^4), learnt (semhint.models.light)
    image_pyramid: int = 0  # also compare images area-downsampled 2x, 4x, ... (this many levels): the capture range for big motion on fine texture


@dataclass
class RefineConfig:
    """Cross-task refinement (METHOD.md, idea 4). Everything off = the baseline."""

    hint: bool = False  # pseudo-depth from semantics
    hint_operators: list[str] = field(default_factory=lambda: ["smooth"])  # names in semhint.refine.operators.OPERATORS, applied in order
    hint_weight: float = 1.0
    hint_gate: bool = True  # Depth Hints rule: use the hint only where it reprojects better
    hint_gate_margin: float = 0.0  # ...or no more than this much worse (photometric error units): ties go to semantics
    hint_on_masked: bool = False  # where the auto-mask drops a pixel (no photometric say: e.g. a car moving with the camera) the hint trains it ungated
    hint_max_ratio: float = 2.0  # trust region: a hint is clamped to [depth / r, depth * r] (<= 0: off)
    hint_segments: str = "prediction"  # segments the operators follow: prediction (the branch) | labels (the noisy labels)
    hint_classes: list[int] = field(default_factory=list)  # the hint trains only pixels of these classes (empty: every class)
    bilateral_radius: int = 4
    bilateral_sigma_color: float = 0.1
    bilateral_sigma_space: float = 3.0
    smooth_domain: str = "log"  # operator A filters log-depth (METHOD.md) | disp: inverse depth, where planes are a fixed point
    stuff_classes: list[int] = field(default_factory=lambda: [0, 1])  # classes for the surface fit
    upright_classes: list[int] = field(default_factory=list)  # operator D: classes with vertical surfaces standing on the ground
    facade_classes: list[int] = field(default_factory=lambda: [2, 3, 4])  # operator E: building, wall, fence
    occluder_classes: list[int] = field(default_factory=list)  # operator F: classes in front of the surface around them (instruments)
    hint_ungated_classes: list[int] = field(default_factory=list)  # hinted pixels of these classes skip the gate: things that move on their own, where the photometric comparison under the camera's motion is meaningless
    surface_order: int = 1  # operator B: 1 = plane in inverse depth (driving), 2 = quadric (tissue), 0 = level ground plane (B and D)
    surface_band: float = 0.0  # operators B and E move only pixels within this relative distance of the surface (0: all)
    surface_inlier: float = 0.05  # B and D: RANSAC inlier threshold (relative); a level plane needs more (0.3)
    ground_travel: bool = False  # B and D: the ground plane contains the direction of travel (horizon through the focus of expansion), its height measured on the near half
    ground_roll_votes: int = 0  # with ground_travel, B's road planes take the median roll of the last N images' own fits (the camera is bolted to the car: one roll per video); 0: each image its own roll
    pseudo_seg: bool = False  # pseudo-semantics from depth and geometry
    pseudo_seg_weight: float = 0.3
    pseudo_seg_confidence: float = 0.7
    pseudo_seg_max_photo: float = 0.1  # photometric error under which a warped label is consistent
    border_snap: bool = False
    warmup_epochs: int = 1  # refinement losses switch on after this many epochs
    # cost switches (off = 0: the default, the behaviour every recorded result was measured with); each
    # CHANGES the numbers, for a cheaper step (docs/lab/step_scaling.md)
    hint_scale: int = 0  # the hint operators run at 1 / 2^n of the training resolution, the hint upsampled
    pseudo_seg_scale: int = 0  # the source frames' segmentation (pseudo-semantics) at 1 / 2^n, upsampled


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.0
    epochs: int = 20
    milestones: list[int] = field(default_factory=lambda: [15])
    gamma: float = 0.1
    batch_size: int = 12
    grad_clip: float = 0.0  # 0 = off
    max_steps: int = -1  # -1 = run all epochs
    pose_warmup_steps: int = 0  # first N steps train the pose net alone, against a plane, no auto-mask


@dataclass
class TrainerConfig:
    out_dir: str = "runs/{name}"  # {name}: the config's name
    seed: int = 0
    accelerator: str = "auto"  # auto | cpu | gpu
    devices: Any = 1  # int or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | ddp_spawn | ...
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed
    log_every_n_steps: int = 10
    image_log_every_n_steps: int = 200
    val_every_n_epochs: int = 1
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0
    num_threads: int = 0  # torch CPU threads; 0 = leave torch's default
    progress_bar: bool = True  # off for runs trained side by side in one terminal (the demo)
    max_minutes: float = 0.0  # wall-clock training budget (the demo uses it); 0 = no limit
    compile: bool = False  # torch.compile the training objective (compiled once, lazily, on the first step)
    checkpoint_every_n_steps: int = 1000  # also replace last.ckpt every N steps within an epoch; 0 = at epoch ends only


@dataclass
class EvalConfig:
    protocol: str = "kitti-eigen"  # kitti-eigen | generic | scared (a name for reports; the keys below decide)
    min_depth: float = 1e-3
    max_depth: float = 80.0
    crop: str = "garg"  # garg | eigen | none
    median_scaling: bool = True


@dataclass
class Config:
    name: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ----------------------------------------------------------------------------------------------
# allowed values (checked by validate)
# ----------------------------------------------------------------------------------------------
DATA_KINDS = ("kitti", "folder", "scared", "hamlyn")
EVAL_PROTOCOLS = ("kitti-eigen", "generic", "scared")  # the names of semhint.evaluation.protocols.PROTOCOLS
ENCODERS = ("resnet18", "resnet34", "resnet50", "efficientnet_lite0")
SEG_LOSSES = ("ce", "sce", "gce", "bootstrap", "bootstrap_hard")
BRIGHTNESS_MODELS = ("none", "affine", "inverse_square", "inverse_square_affine")
DECODER_PADDINGS = ("reflect", "zeros")
DECODER_ACTIVATIONS = ("elu", "relu")
LIGHT_PROFILES = ("none", "radial")  # loss.light_profile (semhint.models.light)  # loss.brightness (semhint.losses.fit_affine_brightness)
HINT_SEGMENTS = ("prediction", "labels")
SMOOTH_DOMAINS = ("log", "disp")
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
# Lightning's registered strategies by family (ddp_spawn_find_unused_parameters_true, fsdp_cpu_offload, ...)
STRATEGY_PATTERN = re.compile(r"^(auto|dp|single_device|single_xla|single_tpu|(ddp|deepspeed|fsdp|xla)(_\w+)?)$")
NONNEGATIVE = ("loss.smoothness", "loss.seg_weight", "loss.planar_weight", "refine.hint_weight",
               "refine.pseudo_seg_weight", "refine.pseudo_seg_max_photo", "model.seg_grad_scale", "optim.weight_decay",
               "data.brightness", "data.contrast", "data.saturation")


def _non_finite_key(cfg: Config) -> tuple[str, float] | None:
    """The first float of the config that is NaN or infinite (a NaN passes every '< 0' test)."""
    for section in dataclasses.fields(cfg):
        values = getattr(cfg, section.name)
        if not dataclasses.is_dataclass(values):
            continue
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, float) and not math.isfinite(item):
                    return f"{section.name}.{f.name}", item
    return None


def validate_numbers(cfg: Config, source: str = "config") -> None:
    """Every number finite, weights non-negative, rates and fractions in range: checked before the
    numbers reach the grid sampler (which crashes without a message on NaN coordinates)."""
    bad = _non_finite_key(cfg)
    if bad is not None:
        raise ConfigError(f"{source}: {bad[0]}: must be a finite number, got {bad[1]}")
    for key in NONNEGATIVE:
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) < 0:
            raise ConfigError(f"{source}: {key}: must be >= 0, got {getattr(getattr(cfg, section), name)}")
    if not 0 < cfg.optim.lr <= 1:
        raise ConfigError(f"{source}: optim.lr: must be in (0, 1], got {cfg.optim.lr}")
    if not 0 <= cfg.data.hue <= 0.5:
        raise ConfigError(f"{source}: data.hue: must be in [0, 0.5] turns, got {cfg.data.hue}")
    for key in ("limit_train_batches", "limit_val_batches"):
        if getattr(cfg.trainer, key) <= 0:
            raise ConfigError(f"{source}: trainer.{key}: must be > 0, got {getattr(cfg.trainer, key)}")
    r = cfg.refine
    for key in ("hint_scale", "pseudo_seg_scale"):
        if not 0 <= getattr(r, key) <= 4:
            raise ConfigError(f"{source}: refine.{key}: must be 0 (full resolution) to 4, got {getattr(r, key)}")
    if r.bilateral_sigma_color <= 0 or r.bilateral_sigma_space <= 0:
        raise ConfigError(f"{source}: refine.bilateral_sigma_color/space: must be > 0, got "
                          f"{r.bilateral_sigma_color}, {r.bilateral_sigma_space}")
    if cfg.trainer.accelerator not in ACCELERATORS:
        raise ConfigError(f"{source}: trainer.accelerator: must be one of {', '.join(ACCELERATORS)}, "
                          f"got {cfg.trainer.accelerator!r}")
    if not STRATEGY_PATTERN.match(cfg.trainer.strategy):
        raise ConfigError(f"{source}: trainer.strategy: unknown strategy {cfg.trainer.strategy!r} "
                          "(auto, ddp, ddp_spawn, fsdp, deepspeed, ... as Lightning names them)")


def validate(cfg: Config, source: str = "config") -> Config:
    """Reject impossible values with a message naming the key; returns cfg for chaining."""

    def fail(key: str, msg: str) -> None:
        raise ConfigError(f"{source}: {key}: {msg}")

    validate_numbers(cfg, source)
    d, m, lo, r, o, t, e = cfg.data, cfg.model, cfg.loss, cfg.refine, cfg.optim, cfg.trainer, cfg.eval
    if d.kind not in DATA_KINDS:
        fail("data.kind", f"must be one of {', '.join(DATA_KINDS)}, got {d.kind!r}")
    if d.gt_depth == "layout" and d.kind not in ("scared", "hamlyn"):
        fail("data.gt_depth", f"'layout' (the dataset's own depth files) needs data.kind scared or hamlyn, got {d.kind!r}")
    if d.height < 32 or d.width < 32:
        fail("data.height/width", f"must be at least 32, got {d.height}x{d.width}")
    if not d.frame_ids or d.frame_ids[0] != 0:
        fail("data.frame_ids", f"must start with 0 (the target frame), got {d.frame_ids}")
    if len(set(d.frame_ids)) != len(d.frame_ids):
        fail("data.frame_ids", f"has duplicates: {d.frame_ids}")
    if d.unit not in ("m", "mm"):
        fail("data.unit", f"must be 'm' or 'mm', got {d.unit!r}")
    if d.num_workers < 0:
        fail("data.num_workers", "must be >= 0")
    if d.poses and d.kind != "folder":
        fail("data.poses", f"given poses are read for data.kind folder (POSES/<sequence>.txt), got kind {d.kind!r}")
    if not 0 <= d.fov < 180:
        fail("data.fov", f"must be a horizontal field of view in degrees, 0 < fov < 180 (0 = off), got {d.fov}")
    if m.encoder not in ENCODERS:
        fail("model.encoder", f"must be one of {', '.join(ENCODERS)}, got {m.encoder!r}")
    if m.pose_encoder not in ENCODERS:
        fail("model.pose_encoder", f"must be one of {', '.join(ENCODERS)}, got {m.pose_encoder!r}")
    if not 0 <= m.shared_layers <= 10:
        fail("model.shared_layers", f"must be in 0..10, got {m.shared_layers}")
    if m.num_classes < 0 or m.num_classes > 254:
        fail("model.num_classes", f"must be in 0..254 (255 is the ignore label), got {m.num_classes}")
    if not 0 <= m.disp_init < 1:
        fail("model.disp_init", f"must be in [0, 1) (0 = default init), got {m.disp_init}")
    if not 0 < m.min_depth < m.max_depth:
        fail("model.min_depth/max_depth", f"need 0 < min_depth < max_depth, got {m.min_depth}, {m.max_depth}")
    if not m.scales or any(s not in (0, 1, 2, 3) for s in m.scales) or 0 not in m.scales:
        fail("model.scales", f"must be a subset of [0, 1, 2, 3] containing 0, got {m.scales}")
    if any(s not in (0, 1, 2, 3) for s in m.seg_scales) or 0 not in m.seg_scales:
        fail("model.seg_scales", f"must be a subset of [0, 1, 2, 3] containing 0, got {m.seg_scales}")
    if not 0 <= m.seg_stage <= 3:
        fail("model.seg_stage", f"must be a decoder stage in 0..3 (0 = full resolution), got {m.seg_stage}")
    if m.num_classes > 0 and m.shared_layers > 10 - 2 * m.seg_stage:
        fail("model.seg_stage", f"the segmentation branch ends at decoder layer {10 - 2 * m.seg_stage}, "
                                f"before the {m.shared_layers} shared layers (model.shared_layers)")
    if not 0 < m.seg_width <= 1:
        fail("model.seg_width", f"must be in (0, 1] (a share of the depth decoder's channels), got {m.seg_width}")
    if m.decoder_pad not in DECODER_PADDINGS:
        fail("model.decoder_pad", f"must be one of {', '.join(DECODER_PADDINGS)}, got {m.decoder_pad!r}")
    if m.decoder_act not in DECODER_ACTIVATIONS:
        fail("model.decoder_act", f"must be one of {', '.join(DECODER_ACTIVATIONS)}, got {m.decoder_act!r}")
    if not 0 <= lo.ssim_weight <= 1:
        fail("loss.ssim_weight", f"must be in [0, 1], got {lo.ssim_weight}")
    for key in ("smoothness", "seg_weight", "planar_weight"):
        if getattr(lo, key) < 0:
            fail(f"loss.{key}", "must be >= 0")
    if lo.seg_loss not in SEG_LOSSES:
        fail("loss.seg_loss", f"must be one of {', '.join(SEG_LOSSES)}, got {lo.seg_loss!r}")
    if lo.brightness not in BRIGHTNESS_MODELS:
        fail("loss.brightness", f"must be one of {', '.join(BRIGHTNESS_MODELS)}, got {lo.brightness!r}")
    if lo.light_profile not in LIGHT_PROFILES:
        fail("loss.light_profile", f"must be one of {', '.join(LIGHT_PROFILES)}, got {lo.light_profile!r}")
    if lo.specular_threshold != 0 and not 0.5 <= lo.specular_threshold <= 1:
        fail("loss.specular_threshold", f"must be 0 (off) or in [0.5, 1] (image values are in [0, 1]; lower would "
                                        f"leave out ordinary surface, not highlights), got {lo.specular_threshold}")
    if not 0 <= lo.image_pyramid <= 4:
        fail("loss.image_pyramid", f"must be 0 (off) to 4 levels, got {lo.image_pyramid}")
    if lo.planar_segments not in HINT_SEGMENTS:
        fail("loss.planar_segments", f"must be one of {', '.join(HINT_SEGMENTS)}, got {lo.planar_segments!r}")
    if lo.planar_weight > 0 and lo.planar_segments == "prediction" and m.num_classes == 0:
        fail("loss.planar_segments", "'prediction' needs a segmentation branch (model.num_classes > 0)")
    if lo.planar_weight > 0 and lo.planar_segments == "labels" and not d.labels:
        fail("loss.planar_segments", "'labels' needs noisy labels (data.labels)")
    if lo.planar_weight > 0 and not lo.planar_classes:
        fail("loss.planar_classes", "must name at least one class when loss.planar_weight > 0")
    if (r.hint or r.pseudo_seg) and m.num_classes == 0:
        fail("refine", "hint / pseudo_seg need a segmentation branch (model.num_classes > 0)")
    if r.hint_segments not in HINT_SEGMENTS:
        fail("refine.hint_segments", f"must be one of {', '.join(HINT_SEGMENTS)}, got {r.hint_segments!r}")
    if r.smooth_domain not in SMOOTH_DOMAINS:
        fail("refine.smooth_domain", f"must be one of {', '.join(SMOOTH_DOMAINS)}, got {r.smooth_domain!r}")
    for key in ("occluder_classes", "hint_ungated_classes"):
        outside = [c for c in getattr(r, key) if not 0 <= int(c) < max(m.num_classes, 1)]
        if outside:
            fail(f"refine.{key}", f"{outside} outside the model's classes 0..{m.num_classes - 1}")
    bad_classes = [c for c in r.hint_classes if not 0 <= int(c) < max(m.num_classes, 1)]
    if bad_classes:
        fail("refine.hint_classes", f"{bad_classes} outside the model's classes 0..{m.num_classes - 1}")
    if r.hint_gate_margin < 0:
        fail("refine.hint_gate_margin", f"must be >= 0, got {r.hint_gate_margin}")
    if r.surface_order not in (0, 1, 2):
        fail("refine.surface_order", f"must be 0, 1 or 2, got {r.surface_order}")
    if not 0 < r.surface_inlier < 1:
        fail("refine.surface_inlier", f"must be in (0, 1), got {r.surface_inlier}")
    if r.surface_band < 0:
        fail("refine.surface_band", f"must be >= 0 (0: off), got {r.surface_band}")
    if r.ground_travel and r.surface_order != 1:
        fail("refine.ground_travel", f"pins a free ground plane (surface_order 1), got surface_order {r.surface_order}")
    if r.ground_roll_votes < 0:
        fail("refine.ground_roll_votes", f"must be >= 0 (0: off), got {r.ground_roll_votes}")
    if r.ground_roll_votes and not r.ground_travel:
        fail("refine.ground_roll_votes", "votes the roll of planes through the direction of travel: needs refine.ground_travel")
    if r.warmup_epochs < 0:
        fail("refine.warmup_epochs", "must be >= 0")
    if not 0 <= r.pseudo_seg_confidence <= 1:
        fail("refine.pseudo_seg_confidence", "must be in [0, 1]")
    if o.lr <= 0:
        fail("optim.lr", f"must be > 0, got {o.lr}")
    if o.epochs < 1:
        fail("optim.epochs", f"must be >= 1, got {o.epochs}")
    if o.batch_size < 1:
        fail("optim.batch_size", f"must be >= 1, got {o.batch_size}")
    if not 0 < o.gamma <= 1:
        fail("optim.gamma", f"must be in (0, 1], got {o.gamma}")
    if o.grad_clip < 0:
        fail("optim.grad_clip", "must be >= 0")
    if o.pose_warmup_steps < 0:
        fail("optim.pose_warmup_steps", f"must be >= 0, got {o.pose_warmup_steps}")
    if t.precision not in PRECISIONS:
        fail("trainer.precision", f"must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    if t.max_minutes < 0:
        fail("trainer.max_minutes", "must be >= 0")
    if t.checkpoint_every_n_steps < 0:
        fail("trainer.checkpoint_every_n_steps", f"must be >= 0 (0: epoch ends only), got {t.checkpoint_every_n_steps}")
    if t.num_nodes < 1:
        fail("trainer.num_nodes", "must be >= 1")
    if not (t.devices == "auto" or (isinstance(t.devices, int) and t.devices >= 1)):
        fail("trainer.devices", f"must be a positive int or 'auto', got {t.devices!r}")
    if e.protocol not in EVAL_PROTOCOLS:
        fail("eval.protocol", f"must be one of {', '.join(EVAL_PROTOCOLS)}, got {e.protocol!r}")
    if e.crop not in ("garg", "eigen", "none"):
        fail("eval.crop", f"must be garg, eigen or none, got {e.crop!r}")
    if not 0 <= e.min_depth < e.max_depth:
        fail("eval.min_depth/max_depth", f"need 0 <= min_depth < max_depth, got {e.min_depth}, {e.max_depth}")
    return cfg


# ----------------------------------------------------------------------------------------------
# dict <-> dataclass with type checks
# ----------------------------------------------------------------------------------------------
def _check_type(value: Any, tp: Any, key: str, source: str) -> Any:
    """Coerce harmless cases (int -> float) and reject the rest with a clear message."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_check_type(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _check_type(value, option, key, source)
            except ConfigError:
                continue
        raise ConfigError(f"{source}: {key}: {value!r} does not match {tp}")
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as a string; accept any numeric spelling.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{source}: {key}: expected a string, got {type(value).__name__} {value!r}")
        return str(value)
    return value


def _build(cls: type, values: dict, prefix: str, source: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {prefix or 'top level'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(f"{source}: unknown key '{key}' (valid keys here: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value or {}, f"{prefix}{name}.", source)
        else:
            kwargs[name] = _check_type(value, tp, f"{prefix}{name}", source)
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: '{part}' is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    """``["optim.lr=2e-4", "data.frame_ids=[0,-1,1]"]`` to a nested dict; values parsed as YAML."""
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc.problem})") from None
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def from_dict(values: dict, source: str = "config") -> Config:
    """Build and validate a Config from a (possibly partial) nested dict.

    ``{name}`` in ``trainer.out_dir`` becomes the config's name, so configs that inherit one run
    folder pattern (``runs/synth_drive/{name}``) each train into their own folder.
    """
    cfg = _build(Config, values, "", source)
    cfg.trainer.out_dir = cfg.trainer.out_dir.replace("{name}", cfg.name)
    return validate(cfg, source)


CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # the configs that ship inside the package


def shipped_configs() -> list[str]:
    """Names of the configs that ship with semhint (``synth_drive``, ``ablations/drive_k4``, ...)."""
    return sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.rglob("*.yaml"))


def resolve_config(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """The YAML file a config reference means: an existing path (relative to ``relative_to`` first, for
    a ``base:`` inside a file), else a shipped config by name, with or without ``configs/`` and ``.yaml``.

    So ``synth_drive``, ``configs/synth_drive.yaml`` and ``semhint/configs/synth_drive.yaml`` all
    mean the same file, from any working directory, in a clone or a pip install.
    """
    text = str(name_or_path)
    candidates = [relative_to / text] if relative_to is not None else []
    candidates.append(Path(text))
    name = text[len("configs/"):] if text.startswith("configs/") else text
    name = name[: -len(".yaml")] if name.endswith(".yaml") else name
    candidates.append(CONFIG_DIR / f"{name}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{text}: config file not found (not a file, nor a shipped config; `semhint config list` names them)")


def _read_yaml_mapping(path: Path) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.__class__.__name__})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return loaded


def read_config_tree(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A config file as a nested dict with its ``base:`` chain merged in (the file's own keys win).

    ``base`` names another config (a path relative to this file, or a shipped name), so an
    experiment is a small diff over the config it varies. ``name`` is never inherited: a file that
    does not set one is named after itself.
    """
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"{path}: base chain loops ({' -> '.join(p.name for p in (*chain, path))})")
    values = _read_yaml_mapping(path)
    base = values.pop("base", None)
    values.setdefault("name", path.stem)
    if base is None:
        return values
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base: expected the name or path of another config, got {base!r}")
    inherited = read_config_tree(resolve_config(base, path.parent), (*chain, path))
    inherited.pop("name", None)
    return _merge(inherited, values)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a config (a YAML path or a shipped name; the defaults when None), bases merged, overrides applied."""
    values: dict = {}
    source = "overrides"
    if path is not None:
        file = resolve_config(path)
        source = str(path)
        values = read_config_tree(file)
    if overrides:
        values = _merge(values, parse_overrides(overrides))
        source = f"{source} (with overrides)" if path is not None else source
    return from_dict(values, source)


def to_dict(cfg: Config) -> dict:
    """Plain nested dict (what checkpoints and run folders store)."""
    return asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(path)


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' (e.g. '192x640') to (height, width)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise InputError(f"--size {text!r}: expected HEIGHTxWIDTH, e.g. 192x640")
    h, w = int(parts[0]), int(parts[1])
    if h < 8 or w < 8:
        raise InputError(f"--size {text!r}: height and width must be at least 8 pixels")
    return h, w
