"""Cross-task refinement (METHOD.md, idea 4): pseudo-depth from semantics, pseudo-semantics from depth.

Everything here runs on DETACHED predictions: the refined maps are targets, not part of the graph.

- ``operators``: the hint operators by name (the registry config validation reads), A-F:
  A ``smoothing``: segment-aware smoothing; B, D, E ``surfaces``: a robust surface per segment,
  upright objects stood on the ground plane, facades as vertical planes along the direction of
  travel (up from the ground plane, never from the camera's axes); C ``borders``: depth edges moved
  onto class borders; F ``occluders``: an occluder (an instrument) no farther than the surface around
  it; plus the diagnostic ``oracle``.
- ``hints``: one step's pseudo-depth (operators, trust region), the Depth Hints gate, hint quality.
- ``pseudo_semantics``: source probabilities warped into the target, fused, filtered.
- ``terms``: the two loss terms of a training step, read from the config.
"""

from semhint.refine.borders import border_morphing
from semhint.refine.hints import (
                                  GatedHint,
                                  accepted_pixels,
                                  camera_translation,
                                  coarse_hint,
                                  hint_class_mask,
                                  hint_gate,
                                  hint_gt_stats,
                                  hint_segments,
                                  make_depth_hint,
                                  propose_hint,
                                  reprojection_error,
                                  trust_region,
)
from semhint.refine.occluders import occluders_in_front
from semhint.refine.operators import OPERATORS, HintInputs, Operator, apply_operators, check_config, oracle_hint
from semhint.refine.pseudo_semantics import fuse_probabilities, select_pseudo_labels, snap_borders, warp_probabilities
from semhint.refine.roll_votes import RollVotes
from semhint.refine.smoothing import segment_aware_smoothing, texture_weight
from semhint.refine.surfaces import (
    camera_rays,
    facade_planes,
    ground_contact,
    ground_plane,
    ground_rolls,
    ground_up,
    segment_surface_fit,
    travel_direction,
    vertical_run_end,
)
from semhint.refine.terms import hint_term, pseudo_seg_term, refinement_losses

__all__ = [
    "OPERATORS", "GatedHint", "HintInputs", "RollVotes", "accepted_pixels", "propose_hint", "Operator", "apply_operators", "border_morphing", "camera_rays", "camera_translation", "check_config", "coarse_hint", "facade_planes",
    "fuse_probabilities", "ground_contact", "ground_plane", "ground_rolls", "ground_up", "hint_class_mask", "hint_gate", "hint_gt_stats", "hint_segments",
    "hint_term", "make_depth_hint", "occluders_in_front", "oracle_hint", "pseudo_seg_term", "refinement_losses", "reprojection_error",
    "segment_aware_smoothing", "segment_surface_fit", "select_pseudo_labels", "snap_borders", "texture_weight",
    "travel_direction", "trust_region", "vertical_run_end", "warp_probabilities",
]
