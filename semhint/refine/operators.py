"""The hint operators by name: one registry that training, config validation and the CLI all read.

An operator turns the current (detached) depth into a pseudo-depth from the segments. Adding one is
a function (explicit arguments, no config) plus one ``OPERATORS`` entry: an adapter that reads the
``refine`` section for its settings, and a check that says which config keys it needs. Config
validation (:func:`check_config`) reads the registry, so a typo in ``refine.hint_operators`` fails
at load time, naming the key and the operators that exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from semhint.core.config import Config, RefineConfig
from semhint.core.errors import ConfigError
from semhint.refine.borders import border_morphing
from semhint.refine.occluders import occluders_in_front
from semhint.refine.smoothing import segment_aware_smoothing, texture_weight
from semhint.refine.surfaces import facade_planes, ground_contact, segment_surface_fit, travel_direction


@dataclass(frozen=True)
class HintInputs:
    """What an operator may look at besides the depth: segments, image, intrinsics, the camera's
    motion, (oracle only) GT."""

    labels: torch.Tensor  # B x H x W int64 class ids (255 = ignore)
    image: torch.Tensor  # B x 3 x H x W in [0, 1]
    K: torch.Tensor  # B x 4 x 4 at the depth's resolution
    generator: torch.Generator | None = None  # RANSAC sampling
    # B x 3: the camera's translation to a neighbouring frame in target-camera coordinates, forward in
    # time (hints.camera_translation); D and E take the direction of travel from it. None: unknown
    translation: torch.Tensor | None = None
    depth_gt: torch.Tensor | list[torch.Tensor] | None = None  # the diagnostic operator only
    # B's road planes through the direction of travel take this roll (radians; refine.ground_roll_votes'
    # median over recent images); None: each image its own
    ground_roll: torch.Tensor | None = None


@dataclass(frozen=True)
class Operator:
    """A registered hint operator: its letter in METHOD.md, how to run it, what config it needs."""

    letter: str
    apply: Callable[[torch.Tensor, HintInputs, RefineConfig], torch.Tensor]
    needs: Callable[[Config], tuple[str, str] | None] = lambda cfg: None  # (key, problem) when it cannot run


def oracle_hint(depth: torch.Tensor, depth_gt: torch.Tensor | list[torch.Tensor] | None) -> torch.Tensor:
    """Diagnostic only: the ground truth, scaled to the prediction by its per-image median ratio.

    A perfect hint answers whether the hint loss, the gate and the weight can carry information
    into the network at all at a given budget: if even this does not make the trained depth better,
    the operators' quality is not what holds the method back. Pixels without ground truth keep the
    prediction (so they drop out of the loss as unchanged).
    """
    if depth_gt is None:
        raise ValueError("hint operator 'oracle' needs ground-truth depth in the batch (data.gt_depth)")
    out = depth.clone()
    for b in range(depth.shape[0]):
        gt = F.interpolate(depth_gt[b][None].to(depth), size=depth.shape[-2:], mode="nearest")[0]
        valid = gt > 0
        if not valid.any():
            continue
        scale = depth[b][valid].median() / gt[valid].median()
        out[b] = torch.where(valid, gt * scale, depth[b])
    return out


# ----------------------------------------------------------------------------------------------
# adapters: the refine section's settings -> each operator's explicit arguments
# ----------------------------------------------------------------------------------------------
def _smooth(depth: torch.Tensor, x: HintInputs, r: RefineConfig) -> torch.Tensor:
    # texture-weighted and local-linear: the plain weighted mean is biased wherever depth is slanted
    # and the texture lopsided (on exact SynthDrive depth the local-linear fit more than halves it)
    return segment_aware_smoothing(depth, x.labels, x.image, radius=r.bilateral_radius,
                                   sigma_color=r.bilateral_sigma_color, sigma_space=r.bilateral_sigma_space,
                                   source_weight=texture_weight(x.image), local_linear=True, domain=r.smooth_domain)


def _surface(depth: torch.Tensor, x: HintInputs, r: RefineConfig) -> torch.Tensor:
    # plane (1) for driving, a curved surface (2) for tissue; 0 (level plane) is a level-camera ablation
    travel = travel_direction(x.translation, depth) if r.ground_travel else None
    return segment_surface_fit(depth, x.labels, x.K, r.stuff_classes, order=r.surface_order, band=r.surface_band,
                               inlier_threshold=r.surface_inlier, generator=x.generator, travel=travel,
                               roll=x.ground_roll if r.ground_travel else None)[0]


def _border(depth: torch.Tensor, x: HintInputs, r: RefineConfig) -> torch.Tensor:
    return border_morphing(depth, x.labels)


def _contact(depth: torch.Tensor, x: HintInputs, r: RefineConfig) -> torch.Tensor:
    return ground_contact(depth, x.labels, x.K, r.stuff_classes, r.upright_classes, generator=x.generator,
                          ground_order=_ground_order(r), inlier_threshold=r.surface_inlier,
                          translation=x.translation, pin_travel=r.ground_travel)[0]


def _facade(depth: torch.Tensor, x: HintInputs, r: RefineConfig) -> torch.Tensor:
    return facade_planes(depth, x.labels, x.K, r.facade_classes, r.stuff_classes, x.translation, band=r.surface_band,
                         ground_order=_ground_order(r), inlier_threshold=r.surface_inlier, generator=x.generator)[0]


def _occluder(depth: torch.Tensor, x: HintInputs, r: RefineConfig) -> torch.Tensor:
    return occluders_in_front(depth, x.labels, r.occluder_classes)


def _ground_order(r: RefineConfig) -> int:
    # D and E take up from operator B's ground plane: free (1), or level under the level-camera ablation (0)
    return 0 if r.surface_order == 0 else 1


def _oracle(depth: torch.Tensor, x: HintInputs, r: RefineConfig) -> torch.Tensor:
    return oracle_hint(depth, x.depth_gt)


def _needs_contact(cfg: Config) -> tuple[str, str] | None:
    if not (cfg.refine.upright_classes and cfg.refine.stuff_classes):
        return "refine.upright_classes", "operator 'contact' needs upright_classes (objects) and stuff_classes (ground)"
    return None


def _needs_facade(cfg: Config) -> tuple[str, str] | None:
    if not cfg.refine.facade_classes:
        return "refine.facade_classes", "operator 'facade' needs facade_classes (building, wall, ...)"
    if not cfg.refine.stuff_classes:
        return "refine.stuff_classes", "operator 'facade' needs stuff_classes (the ground: up is its normal)"
    return None


def _needs_occluder(cfg: Config) -> tuple[str, str] | None:
    if not cfg.refine.occluder_classes:
        return "refine.occluder_classes", "operator 'occluder' needs occluder_classes (e.g. the instrument)"
    return None


def _needs_gt(cfg: Config) -> tuple[str, str] | None:
    if not cfg.data.gt_depth:
        return "refine.hint_operators", "the diagnostic operator 'oracle' needs ground-truth depth (data.gt_depth)"
    return None


OPERATORS: dict[str, Operator] = {
    "smooth": Operator("A", _smooth),
    "surface": Operator("B", _surface),
    "border": Operator("C", _border),
    "contact": Operator("D", _contact, _needs_contact),
    "facade": Operator("E", _facade, _needs_facade),
    "occluder": Operator("F", _occluder, _needs_occluder),
    "oracle": Operator("-", _oracle, _needs_gt),  # diagnostic: scaled ground truth
}


def check_config(cfg: Config, source: str = "config") -> Config:
    """Reject unknown hint operators and operators whose settings are missing; returns cfg for chaining."""
    names = cfg.refine.hint_operators
    unknown = [op for op in names if op not in OPERATORS]
    if unknown:
        raise ConfigError(f"{source}: refine.hint_operators: unknown {unknown}; choose from {', '.join(OPERATORS)}")
    for op in names:
        problem = OPERATORS[op].needs(cfg)
        if problem is not None:
            raise ConfigError(f"{source}: {problem[0]}: {problem[1]}")
    return cfg


def apply_operators(names: list[str], depth: torch.Tensor, inputs: HintInputs, refine_cfg: RefineConfig) -> torch.Tensor:
    """The operators ``names`` applied in order, each to the previous one's output."""
    hint = depth
    for name in names:
        if name not in OPERATORS:
            raise ConfigError(f"refine.hint_operators: unknown operator {name!r}; choose from {', '.join(OPERATORS)}")
        hint = OPERATORS[name].apply(hint, inputs, refine_cfg)
    return hint
