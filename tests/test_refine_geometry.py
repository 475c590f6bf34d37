"""Operators D and E with a camera that is turned, pitched and rolled: scenes ray-cast by hand.

The old operators assumed a level camera looking along the street (facades 1/z = |x| / X, image
columns as vertical lines). These scenes break both assumptions; the operators now take up from
the fitted ground plane and the direction of travel from the pose, so the true depth must be a
fixed point of them, while the level-camera ablation (``ground_order=0``) must not be.
"""

from __future__ import annotations

import math

import pytest
import torch

from semhint import refine
from semhint.core import geometry
from semhint.core.config import ConfigError, from_dict

H, W, F = 48, 96, 48.0
ROAD, BUILDING, CAR, SKY = 0, 2, 13, 10
HEIGHT, LEFT, RIGHT = 1.6, -6.0, 9.0  # camera height over the road, facades at world X = LEFT and RIGHT


def _rotation(yaw: float, pitch: float, roll: float) -> torch.Tensor:
    """Camera-to-world rotation (degrees); world axes as a level camera's: x right, y down, z along the street."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    Ry = torch.tensor([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]], dtype=torch.float64)
    Rx = torch.tensor([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]], dtype=torch.float64)
    Rz = torch.tensor([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]], dtype=torch.float64)
    return Ry @ Rx @ Rz


def _street(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0, car: float | None = None,
            h: int = H, w: int = W, f: float = F):
    """A street (road at Y = HEIGHT, facades at X = LEFT, RIGHT running along Z) and optionally a car's
    back (the vertical plane Z = ``car`` over |X| < 1.5, 1.5 m tall), seen from the origin by a camera with
    the given orientation. Returns (K, depth B x 1 x H x W, labels B x H x W, forward: the street's
    direction in camera coordinates (what the pose gives as the direction of travel))."""
    R = _rotation(yaw, pitch, roll)
    K = geometry.intrinsics_matrix(f, f, (w - 1) / 2, (h - 1) / 2)[None].to(torch.float64)
    rays = torch.linalg.inv(K[0, :3, :3]) @ geometry.pixel_grid(h, w, dtype=torch.float64)  # 3 x HW, r_z = 1
    d = R @ rays  # world direction of each pixel's ray; a point at camera depth z is z * d
    inf = torch.full_like(d[0], math.inf)
    hits = {
        ROAD: torch.where(d[1] > 1e-9, HEIGHT / d[1], inf),
        BUILDING: torch.minimum(torch.where(d[0] < -1e-9, LEFT / d[0], inf), torch.where(d[0] > 1e-9, RIGHT / d[0], inf)),
    }
    if car is not None:
        t = torch.where(d[2] > 1e-9, car / d[2], inf)
        x, y = t * d[0], t * d[1]
        hits[CAR] = torch.where((x.abs() < 1.5) & (y > HEIGHT - 1.5) & (y < HEIGHT), t, inf)
    classes = list(hits)
    stacked = torch.stack([hits[c] for c in classes])
    depth, which = stacked.min(0)
    labels = torch.tensor(classes)[which]
    labels[depth > 150.0] = SKY  # the street's far end and the sky: beyond any depth range
    depth = depth.clamp_max(200.0)
    forward = R.T @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    return K, depth.view(1, 1, h, w), labels.view(1, h, w), forward.view(1, 3)


def _scaled_abs_rel(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> float:
    p, t = pred[mask], true[mask]
    return float(((p * (t.median() / p.median()) - t).abs() / t).mean())


def _compressed(depth: torch.Tensor) -> torch.Tensor:
    """A short run's facades: the depth range squeezed (far too near), with a little noise."""
    noise = 1 + 0.03 * torch.randn(depth.shape, generator=torch.Generator().manual_seed(0), dtype=depth.dtype)
    return depth.pow(0.7) * noise


TURNED_AND_PITCHED = [dict(yaw=25.0), dict(yaw=-20.0, pitch=-6.0), dict(yaw=15.0, pitch=-4.0, roll=3.0)]


# ----------------------------------------------------------------------------------------------
# the camera's geometry: ground plane, up, direction of travel
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pose", TURNED_AND_PITCHED + [dict()])
def test_ground_plane_gives_up_and_height_for_any_camera_orientation(pose):
    K, depth, lab, _ = _street(**pose)
    planes, ok = refine.ground_plane(depth, lab, K, [ROAD], generator=torch.Generator().manual_seed(0))
    assert ok.all()
    up, usable = refine.ground_up(planes, ok)
    true_up = _rotation(pose.get("yaw", 0), pose.get("pitch", 0), pose.get("roll", 0)).T @ torch.tensor(
        [0.0, -1.0, 0.0], dtype=torch.float64)
    assert usable.all()
    assert float((up[0] * true_up).sum()) > math.cos(math.radians(0.5))
    assert 1 / float(planes.norm()) == pytest.approx(HEIGHT, rel=1e-3)


def test_travel_direction_is_unknown_without_motion_and_unit_otherwise():
    depth = torch.full((2, 1, 4, 4), 10.0)
    assert torch.equal(refine.travel_direction(None, depth), torch.zeros(2, 3))
    t = torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 0.01]])  # 5 cm at a median depth of 10 m: standing still
    travel = refine.travel_direction(t, depth)
    assert torch.allclose(travel[0], torch.tensor([0.0, 0.0, 1.0])) and torch.equal(travel[1], torch.zeros(3))


def test_camera_translation_points_forward_from_poses_on_both_sides():
    # poses[f] maps target-camera points into frame f: X_f = X - c_f for a camera at c_f (no rotation)
    def pose(centre):
        T = torch.eye(4).repeat(1, 1, 1)
        T[0, :3, 3] = -torch.tensor(centre)
        return T
    t = refine.camera_translation({-1: pose([0.0, 0.0, -0.4]), 1: pose([0.1, 0.0, 0.9])})
    assert torch.allclose(t, torch.tensor([[0.1, 0.0, 0.9]]))  # the farther neighbour, ahead
    t = refine.camera_translation({-1: pose([0.0, 0.0, -0.9]), 1: pose([0.0, 0.0, 0.4])})
    assert torch.allclose(t, torch.tensor([[0.0, 0.0, 0.9]]))  # the frame behind, flipped to point ahead
    assert refine.camera_translation({}) is None


# ----------------------------------------------------------------------------------------------
# Operator E: facades along the direction of travel
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pose", TURNED_AND_PITCHED)
def test_true_facades_are_a_fixed_point_where_the_level_street_assumption_breaks_them(pose):
    K, depth, lab, forward = _street(**pose)
    building = lab[:, None] == BUILDING
    g = torch.Generator().manual_seed(0)
    hint, valid = refine.facade_planes(depth * 1.7, lab, K, [BUILDING], [ROAD], forward, generator=g)
    assert valid.sum() > 0.9 * building.sum()  # all but the strip along the vanishing line
    torch.testing.assert_close(hint[valid], depth[valid] * 1.7, rtol=1e-3, atol=0)
    # the old operator: a level camera looking along the street (up = -y, travel = the optical axis)
    axis = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    old, old_valid = refine.facade_planes(depth, lab, K, [BUILDING], [ROAD], axis, ground_order=0, generator=g)
    assert not old_valid.any() or _scaled_abs_rel(old, depth, old_valid) > 0.1  # no level plane fits, or wrong facades


@pytest.mark.parametrize("pose", TURNED_AND_PITCHED)
def test_facade_planes_undo_a_compressed_depth_range_with_a_turned_camera(pose):
    K, depth, lab, forward = _street(**pose)
    squeezed = _compressed(depth)
    # the ground is measured well (texture along its length); the facades are what a short run gets wrong
    squeezed = torch.where(lab[:, None] == ROAD, depth, squeezed)
    hint, valid = refine.facade_planes(squeezed, lab, K, [BUILDING], [ROAD], forward,
                                       generator=torch.Generator().manual_seed(0))
    assert valid.any() and torch.equal(hint[~valid], squeezed[~valid])
    assert _scaled_abs_rel(hint, depth, valid) < 0.6 * _scaled_abs_rel(squeezed, depth, valid)


def test_facade_planes_give_no_hint_without_motion_or_ground_and_leave_trees_alone_with_a_band():
    K, depth, lab, forward = _street(yaw=20.0, pitch=-5.0)
    g = torch.Generator().manual_seed(0)
    assert not refine.facade_planes(depth, lab, K, [BUILDING], [ROAD], None, generator=g)[1].any()
    assert not refine.facade_planes(depth, lab, K, [BUILDING], [], forward, generator=g)[1].any()
    up = torch.tensor([[0.0, -1.0, 0.0]], dtype=torch.float64)
    assert not refine.facade_planes(depth, lab, K, [BUILDING], [ROAD], up, generator=g)[1].any()  # travel along up
    scene = depth.clone()
    tree = torch.zeros_like(lab[:, None], dtype=torch.bool)
    tree[..., 10:20, 2:8] = True
    assert (lab[:, None][tree] == BUILDING).all()
    scene[tree] = 2.0  # a tree labelled building, far in front of the facade
    hint, valid = refine.facade_planes(scene, lab, K, [BUILDING], [ROAD], forward, band=0.5, generator=g)
    assert not valid[tree].any() and torch.equal(hint[tree], scene[tree])


def test_facade_operator_takes_the_pose_in_training_and_needs_its_classes():
    K, depth, lab, forward = _street(yaw=25.0)
    cfg = from_dict({"model": {"num_classes": 19}, "refine": {"hint": True, "hint_operators": ["facade"],
                                                             "stuff_classes": [ROAD]}}).refine
    image = torch.rand(1, 3, H, W, dtype=torch.float64)
    hint = refine.make_depth_hint(depth * 1.3, lab, image, K, cfg, translation=forward)
    building = (lab[:, None] == BUILDING) & (hint != depth * 1.3)
    assert building.sum() > 0.5 * (lab == BUILDING).sum()
    assert torch.equal(refine.make_depth_hint(depth * 1.3, lab, image, K, cfg), depth * 1.3)  # no pose: no hint
    for key, value in (("facade_classes", []), ("stuff_classes", [])):
        with pytest.raises(ConfigError, match=rf"refine\.{key}"):
            refine.check_config(from_dict({"model": {"num_classes": 19},
                                           "refine": {"hint": True, "hint_operators": ["facade"], key: value}}))


# ----------------------------------------------------------------------------------------------
# Operator D: the foot of an upright object, down the image of the vertical through it
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pose", [dict(pitch=-6.0), dict(pitch=-5.0, roll=4.0), dict(yaw=15.0, pitch=-4.0, roll=-3.0)])
def test_ground_contact_puts_a_car_back_with_a_pitched_and_rolled_camera(pose):
    f, car_z = 96.0, 6.0
    K, depth, lab, forward = _street(car=car_z, h=96, w=192, f=f, **pose)
    car = lab[:, None] == CAR
    wrong = torch.where(car, depth * 2.0, depth)  # a textureless car back, predicted twice too far
    g = torch.Generator().manual_seed(0)
    hint, valid = refine.ground_contact(wrong, lab, K, [ROAD], [CAR], generator=g, translation=forward)
    assert valid.sum() > 0.8 * car.sum() and not (valid & ~car).any()
    # exact but for the walk's rounding: the first ground pixel lies up to ~2 rows below the foot, and
    # the ground's depth changes by z / (f * height) per row there
    error = float(((hint - depth).abs() / depth)[valid].median())
    assert error < 2 * car_z / (f * HEIGHT)
    # the level-camera ablation walks down the columns from a level plane: no plane fits, or a wrong one
    old, old_valid = refine.ground_contact(wrong, lab, K, [ROAD], [CAR], generator=g, ground_order=0)
    assert not old_valid.any() or float(((old - depth).abs() / depth)[old_valid].median()) > 3 * error


# ----------------------------------------------------------------------------------------------
# refine.ground_travel: the road plane contains the direction of travel
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pose", TURNED_AND_PITCHED + [dict()])
def test_a_road_along_the_travel_direction_undoes_a_compressed_range_where_a_free_plane_keeps_it(pose):
    K, depth, lab, forward = _street(**pose)
    road = lab[:, None] == ROAD
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    squeezed = _compressed(depth)
    free, free_valid = refine.segment_surface_fit(squeezed, lab, K, [ROAD], generator=g())
    pinned, valid = refine.segment_surface_fit(squeezed, lab, K, [ROAD], generator=g(), travel=forward)
    assert torch.equal(valid, free_valid) and valid.sum() > 0.95 * road.sum()
    assert _scaled_abs_rel(free, depth, road) > 0.1  # the free plane keeps the compression
    assert _scaled_abs_rel(pinned, depth, road) < 0.025
    # the true road is a fixed point; without a direction of travel it is the free fit
    exact, _ = refine.segment_surface_fit(depth * 1.7, lab, K, [ROAD], generator=g(), travel=forward)
    torch.testing.assert_close(exact[road], depth[road] * 1.7, rtol=1e-6, atol=0)
    unknown, _ = refine.segment_surface_fit(squeezed, lab, K, [ROAD], generator=g(), travel=torch.zeros_like(forward))
    assert torch.equal(unknown, free)


def test_contact_feet_on_a_road_along_the_travel_direction_put_a_car_back_from_a_compressed_road():
    f, car_z = 96.0, 12.0
    K, depth, lab, forward = _street(car=car_z, h=96, w=192, f=f, yaw=10.0, pitch=-4.0, roll=2.0)
    car, road = lab[:, None] == CAR, lab[:, None] == ROAD
    wrong = torch.where(car, depth * 2.0, _compressed(depth))  # the car's back twice too far, the road squeezed
    truth = float(depth[car].median() / depth[road].median())
    errors = {}
    for pin in (False, True):  # the car's depth against the road's (scale-free), hint and its ground vs the truth
        g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        hint, valid = refine.ground_contact(wrong, lab, K, [ROAD], [CAR], generator=g(), translation=forward,
                                            pin_travel=pin)
        ground, _ = refine.segment_surface_fit(wrong, lab, K, [ROAD], generator=g(), travel=forward if pin else None)
        assert valid.sum() > 0.8 * car.sum()
        errors[pin] = abs(float(hint[valid].median() / ground[road].median()) / truth - 1)
    assert errors[False] > 0.2 and errors[True] < 0.08


def test_ground_travel_is_a_switch_of_the_free_plane_and_takes_the_pose_in_training():
    K, depth, lab, forward = _street(yaw=10.0, pitch=-3.0)
    squeezed = _compressed(depth)
    image = torch.rand(1, 3, H, W, dtype=torch.float64)
    cfgs = {on: from_dict({"model": {"num_classes": 19}, "refine": {
        "hint": True, "hint_operators": ["surface"], "stuff_classes": [ROAD], "ground_travel": on}}).refine
        for on in (False, True)}
    road = lab[:, None] == ROAD
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    on = refine.make_depth_hint(squeezed, lab, image, K, cfgs[True], generator=g(), translation=forward)
    off = refine.make_depth_hint(squeezed, lab, image, K, cfgs[False], generator=g(), translation=forward)
    assert _scaled_abs_rel(on, depth, road) < 0.5 * _scaled_abs_rel(off, depth, road)
    assert torch.equal(refine.make_depth_hint(squeezed, lab, image, K, cfgs[True], generator=g()),
                       refine.make_depth_hint(squeezed, lab, image, K, cfgs[False], generator=g()))  # no pose: free
    with pytest.raises(ConfigError, match=r"refine\.ground_travel"):
        from_dict({"refine": {"ground_travel": True, "surface_order": 2}})


# ----------------------------------------------------------------------------------------------
# refine.ground_roll_votes: one road roll for the whole video
# ----------------------------------------------------------------------------------------------
def _leaning(depth: torch.Tensor, road: torch.Tensor, K: torch.Tensor, forward: torch.Tensor, degrees: float
             ) -> torch.Tensor:
    """``depth`` with its road replaced by the true road plane turned ``degrees`` about the direction of
    travel: a prediction that leans the road sideways, as short runs do on real frames."""
    rays = torch.linalg.inv(K[0, :3, :3]) @ geometry.pixel_grid(H, W, dtype=torch.float64)  # 3 x HW, r_z = 1
    on_road = road.view(-1)
    a = torch.linalg.lstsq(rays[:, on_road].T, (1.0 / depth.view(-1)[on_road]).unsqueeze(-1)).solution[:, 0]
    k = forward[0] / forward[0].norm()
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    turned = a * c + torch.linalg.cross(k, a, dim=-1) * s + k * (k @ a) * (1 - c)
    q = turned @ rays
    return torch.where(road & (q > 1e-3).view(1, 1, H, W), 1.0 / q.clamp_min(1e-3).view(1, 1, H, W), depth)


@pytest.mark.parametrize("pose", TURNED_AND_PITCHED + [dict()])
def test_a_road_leaning_sideways_keeps_its_lean_in_its_own_plane_and_loses_it_under_the_voted_roll(pose):
    K, depth, lab, forward = _street(**pose)
    road = lab[:, None] == ROAD
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    leaning = _leaning(depth, road, K, forward, 15.0)
    true_roll = refine.ground_rolls(depth, lab, K, [ROAD], forward, generator=g())
    lean_roll = refine.ground_rolls(leaning, lab, K, [ROAD], forward, generator=g())
    assert math.degrees(float(lean_roll - true_roll)) == pytest.approx(15.0, abs=0.5)  # measured, not assumed
    own, valid = refine.segment_surface_fit(leaning, lab, K, [ROAD], generator=g(), travel=forward)
    voted, voted_valid = refine.segment_surface_fit(leaning, lab, K, [ROAD], generator=g(), travel=forward,
                                                    roll=true_roll[0])
    assert not (valid & ~voted_valid).any() and voted_valid.sum() > 0.95 * road.sum()
    assert _scaled_abs_rel(own, depth, valid) > 0.5  # its own plane keeps the lean
    assert _scaled_abs_rel(voted, depth, voted_valid) < 0.01  # the video's roll takes it out; the height is fitted
    # the true road is a fixed point under its own roll; without a direction of travel no roll applies
    exact, _ = refine.segment_surface_fit(depth * 1.7, lab, K, [ROAD], generator=g(), travel=forward, roll=true_roll[0])
    torch.testing.assert_close(exact[road], depth[road] * 1.7, rtol=1e-6, atol=0)
    still, _ = refine.segment_surface_fit(leaning, lab, K, [ROAD], generator=g(), travel=torch.zeros_like(forward),
                                          roll=true_roll[0])
    assert torch.equal(still, refine.segment_surface_fit(leaning, lab, K, [ROAD], generator=g())[0])


def test_a_flipped_image_measures_the_mirrored_roll():
    """The loader's horizontal flip mirrors the camera: the road's roll changes sign, which is why votes and
    the voted roll are taken back to the unflipped camera (refine.terms)."""
    K, depth, lab, forward = _street(yaw=10.0, pitch=-4.0, roll=6.0)
    mirrored = forward * torch.tensor([-1.0, 1.0, 1.0], dtype=forward.dtype)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    roll = refine.ground_rolls(depth, lab, K, [ROAD], forward, generator=g())
    flipped = refine.ground_rolls(depth.flip(-1), lab.flip(-1), geometry.flip_intrinsics(K, W), [ROAD], mirrored,
                                  generator=g())
    assert abs(float(roll)) > math.radians(3) and float(flipped) == pytest.approx(-float(roll), abs=1e-3)


def test_only_images_with_a_direction_of_travel_and_an_accepted_road_vote():
    K, depth, lab, forward = _street(yaw=10.0, pitch=-4.0)
    two = torch.cat([depth, depth]), torch.cat([lab, lab]), torch.cat([K, K])
    rolls = refine.ground_rolls(*two, [ROAD], torch.cat([forward, torch.zeros_like(forward)]))
    assert math.isfinite(float(rolls[0])) and math.isnan(float(rolls[1]))
    assert refine.ground_rolls(*two, [BUILDING + 50], torch.cat([forward, forward])).isnan().all()  # no such segment
    with pytest.raises(ConfigError, match=r"refine\.ground_roll_votes"):
        from_dict({"refine": {"ground_roll_votes": 8}})  # needs planes through the direction of travel
    with pytest.raises(ConfigError, match=r"refine\.ground_roll_votes"):
        from_dict({"refine": {"ground_travel": True, "ground_roll_votes": -1}})


def test_roll_votes_keep_the_last_images_and_take_a_median_that_does_not_split_at_180_degrees():
    votes = refine.RollVotes(3)
    assert votes.consensus() is None
    votes.add(torch.tensor([0.5, float("nan"), 0.1]))
    votes.add(torch.tensor([0.2, 0.3]))
    assert votes.votes == pytest.approx([0.1, 0.2, 0.3])  # NaN does not vote; the oldest dropped out
    assert float(votes.consensus()) == pytest.approx(0.2)
    flipped = refine.RollVotes(3)
    flipped.add(torch.tensor([math.pi - 0.1, -math.pi + 0.05, math.pi - 0.02]))  # one camera, upside down
    assert abs(math.remainder(float(flipped.consensus()) - (math.pi - 0.02), 2 * math.pi)) < 1e-6
    resumed = refine.RollVotes(3)
    resumed.load_state_dict(votes.state_dict())
    assert resumed.votes == votes.votes
    with pytest.raises(ValueError, match="at least one vote"):
        refine.RollVotes(0)
