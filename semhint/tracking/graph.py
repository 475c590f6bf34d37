"""Depth-driven embedded-deformation graph tracker ("SuPer-lite").

Why this exists: a tracker that follows 2D flow and then lifts points has a 2D error independent of
depth. Here the points move with the *depth*: surface samples of the first frame are skinned to a
coarse graph of nodes, and every frame the node translations are solved so that the deformed
samples lie on the new depth map (point-to-plane, as SuPer does), optionally also where the optical
flow says they went, with a smoothness term between neighbouring nodes. Better depth -> better
tracks, which is the downstream claim to test.

Translations only (no per-node rotations): with translations the deformed points are *linear* in
the unknowns, p = p0 + W T, so each Gauss-Newton step is one sparse linear least-squares solve.
The non-linearity left is the projective data association, refreshed every iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.spatial import cKDTree

from semhint.tracking.flow import inside, sample_field
from semhint.tracking.lift import backproject_points, project_points, sample_depth


@dataclass
class GraphConfig:
    """Every knob of the graph tracker (the presets of the two graph modes live in
    semhint.tracking.GRAPH_PRESETS). ``w_flow`` = 0 is depth only, as in SuPer."""

    nodes_across: int = 20  # graph nodes across the image width (spacing = width / this)
    samples_across: int = 64  # surface samples across the width; they carry the data terms
    k_nodes: int = 4  # nodes each point is skinned to
    k_neighbours: int = 6  # node-node edges for smoothness
    iterations: int = 4  # Gauss-Newton steps (data association refreshed each)
    rigid_iterations: int = 1  # global rigid point-to-plane steps before the non-rigid solve (0 = off)
    w_plane: float = 1.0
    w_flow: float = 0.0
    w_smooth: float = 0.1
    w_temporal: float = 0.05  # damping: pulls each step towards the current estimate
    w_slide: float = 0.0  # prior against tangential sliding of nodes from their rest position
    max_dist_rel: float = 0.1  # reject correspondences farther than this fraction of the depth
    huber_rel: float = 0.01  # robust kernel width, as a fraction of the first frame's median depth
    occlusion_rel: float = 0.03  # a query is occluded if it lies this much behind the observed surface
    semantic: bool = False  # skin within one class; drop data that changed class
    occluder_classes: tuple[int, ...] = ()  # classes (e.g. instrument) that carry no tissue data


def normal_map(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Per-pixel unit surface normals (H x W x 3, facing the camera) from a depth map; 0 where invalid.

    Central differences of the back-projected points, in float32 (this runs once per frame).
    """
    h, w = depth.shape
    z = depth.astype(np.float32)
    u = (np.arange(w, dtype=np.float32) - np.float32(K[0, 2])) / np.float32(K[0, 0])
    v = (np.arange(h, dtype=np.float32) - np.float32(K[1, 2])) / np.float32(K[1, 1])
    X, Y = z * u[None, :], z * v[:, None]
    pts = np.stack([X, Y, z], -1)
    dx = np.zeros_like(pts)
    dy = np.zeros_like(pts)
    dx[:, 1:-1] = pts[:, 2:] - pts[:, :-2]
    dy[1:-1] = pts[2:] - pts[:-2]
    n = np.stack([dx[..., 1] * dy[..., 2] - dx[..., 2] * dy[..., 1],
                  dx[..., 2] * dy[..., 0] - dx[..., 0] * dy[..., 2],
                  dx[..., 0] * dy[..., 1] - dx[..., 1] * dy[..., 0]], -1)
    norm = np.sqrt((n * n).sum(-1, keepdims=True))
    n = n / np.maximum(norm, 1e-12)
    n *= -np.sign(n[..., 2:3] + 1e-12)  # face the camera (negative z)
    n[(depth <= 0) | (norm[..., 0] < 1e-12)] = 0.0
    return n


def grid_pixels(height: int, width: int, stride: float) -> np.ndarray:
    """Pixel centres of a regular grid with the given stride, N x 2 (x, y)."""
    off = stride / 2.0 - 0.5
    xs = np.arange(off, width, stride)
    ys = np.arange(off, height, stride)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], 1)


def skinning_matrix(points: np.ndarray, nodes: np.ndarray, k: int, sigma: float,
                    point_class: np.ndarray | None = None, node_class: np.ndarray | None = None) -> sp.csr_matrix:
    """Sparse P x J skinning weights: Gaussian of the distance to the k nearest nodes, rows sum to 1.

    With classes given, a point is skinned only to nodes of its own class (so a tissue border does
    not couple the two tissues' motion); a class with too few nodes falls back to all nodes.
    """
    n_pts, n_nodes = len(points), len(nodes)
    k = min(k, n_nodes)
    rows = np.repeat(np.arange(n_pts), k)
    cols = np.empty((n_pts, k), dtype=np.int64)
    dist = np.empty((n_pts, k))
    groups = [(np.arange(n_pts), np.arange(n_nodes))]
    if point_class is not None and node_class is not None:
        groups = []
        leftover = np.ones(n_pts, bool)
        for c in np.unique(point_class):
            member = np.flatnonzero(node_class == c)
            if len(member) >= k:
                sel = np.flatnonzero(point_class == c)
                groups.append((sel, member))
                leftover[sel] = False
        if leftover.any():
            groups.append((np.flatnonzero(leftover), np.arange(n_nodes)))
    for sel, member in groups:
        d, idx = cKDTree(nodes[member]).query(points[sel], k=k)
        d, idx = d.reshape(len(sel), k), idx.reshape(len(sel), k)
        cols[sel], dist[sel] = member[idx], d
    w = np.exp(-0.5 * (dist / sigma) ** 2) + 1e-12
    w /= w.sum(axis=1, keepdims=True)
    return sp.csr_matrix((w.ravel(), (rows, cols.ravel())), shape=(n_pts, n_nodes))


def node_edges(nodes: np.ndarray, k: int) -> np.ndarray:
    """Unique undirected edges (E x 2) joining each node to its k nearest neighbours."""
    k = min(k + 1, len(nodes))
    _, idx = cKDTree(nodes).query(nodes, k=k)
    idx = idx.reshape(len(nodes), k)
    a = np.repeat(np.arange(len(nodes)), k - 1)
    b = idx[:, 1:].ravel()
    edges = np.sort(np.stack([a, b], 1), axis=1)
    return np.unique(edges, axis=0)


def _coord_blocks(W: sp.csr_matrix, coeffs: np.ndarray) -> sp.csr_matrix:
    """[diag(c_x) W, diag(c_y) W, diag(c_z) W]: the Jacobian of c . (p0 + W T) w.r.t. [T_x; T_y; T_z]."""
    n_rows, n_nodes = W.shape
    rows = np.repeat(np.arange(n_rows), np.diff(W.indptr))
    data = np.concatenate([W.data * coeffs[rows, c] for c in range(3)])
    cols = np.concatenate([W.indices + c * n_nodes for c in range(3)])
    return sp.csr_matrix((data, (np.tile(rows, 3), cols)), shape=(n_rows, 3 * n_nodes))


class DeformationGraph:
    """Track query points by deforming the first frame's surface to fit each new depth map.

    ``start(depth0, K, queries, labels0)`` builds nodes, samples and skinning; each
    ``step(depth, labels, flow_xy, flow_ok)`` solves the node translations for one new frame and
    returns the queries' (xy, xyz, visible). ``sample_xy`` lists the surface samples whose 2D flow
    ``step`` wants when ``w_flow`` > 0 (rows in the same order).
    """

    def __init__(self, config: GraphConfig | None = None):
        self.cfg = config or GraphConfig()

    # ---- set-up on the first frame -------------------------------------------------------------
    def start(self, depth0: np.ndarray, K: np.ndarray, queries: np.ndarray, labels0: np.ndarray | None = None) -> None:
        cfg = self.cfg
        self.K = np.asarray(K, dtype=np.float64)[:3, :3]
        h, w = depth0.shape
        usable = depth0 > 0
        if labels0 is not None and cfg.occluder_classes:
            usable &= ~np.isin(labels0, cfg.occluder_classes)
        if not usable.any():
            raise ValueError("the first frame has no valid tissue depth: the deformation graph cannot start")
        node_xy = _on_mask(grid_pixels(h, w, w / cfg.nodes_across), usable)
        sample_xy = _on_mask(grid_pixels(h, w, w / cfg.samples_across), usable)
        if len(node_xy) < 2:
            raise ValueError("too few valid-depth pixels for a deformation graph (need >= 2 nodes)")
        self.nodes = backproject_points(node_xy, sample_depth(depth0, node_xy), self.K)
        self.sample_xy = sample_xy
        self.samples = backproject_points(sample_xy, sample_depth(depth0, sample_xy), self.K)
        self.queries = backproject_points(queries, sample_depth(depth0, queries), self.K)
        bad = ~np.isfinite(self.queries).all(1)
        if bad.any():  # a query on a depth hole: borrow the nearest sample's depth
            nearest = cKDTree(sample_xy).query(np.asarray(queries)[bad])[1]
            self.queries[bad] = backproject_points(np.asarray(queries)[bad], self.samples[nearest, 2], self.K)
        self.z_ref = float(np.median(self.samples[:, 2]))
        spacing = float(np.median(cKDTree(self.nodes).query(self.nodes, k=2)[0][:, 1]))
        classes = self._classes(labels0, node_xy, sample_xy, queries)
        self.sample_class = classes[1]
        self.W_samples = skinning_matrix(self.samples, self.nodes, cfg.k_nodes, spacing, classes[1], classes[0])
        self.W_queries = skinning_matrix(self.queries, self.nodes, cfg.k_nodes, spacing, classes[2], classes[0])
        self.edges = node_edges(self.nodes, cfg.k_neighbours)
        n = len(self.nodes)
        self.D = sp.csr_matrix((np.r_[np.ones(len(self.edges)), -np.ones(len(self.edges))],
                                (np.r_[np.arange(len(self.edges)), np.arange(len(self.edges))],
                                 np.r_[self.edges[:, 0], self.edges[:, 1]])), shape=(len(self.edges), n))
        # constant parts of the normal equations: smoothness (balanced per node-equivalent: each node
        # carries about M / n sample rows) and the temporal prior
        w_smooth = cfg.w_smooth * np.sqrt(len(self.samples) / n) / self.z_ref
        S = sp.block_diag([self.D] * 3, format="csr")
        self._prior = (w_smooth ** 2 * (S.T @ S) + (cfg.w_temporal / self.z_ref) ** 2 * sp.identity(3 * n)
                       + (cfg.w_slide * np.sqrt(len(self.samples) / n) / self.z_ref) ** 2
                       * self._tangent_projector(depth0, node_xy)).tocsr()
        self.T = np.zeros((n, 3))

    def _tangent_projector(self, depth0: np.ndarray, node_xy: np.ndarray) -> sp.csr_matrix:
        """Block matrix of I - n n^T per node (rest normals), in the [T_x; T_y; T_z] unknown order.

        Depth alone cannot see tissue slide along its own surface (point-to-plane only measures
        n . motion); without a prior, each frame's tangential slack accumulates into drift. This
        prior says "absent evidence, tissue does not slide": only surface shape (bumps, edges)
        moving in the depth maps can overcome it, which is exactly where depth quality matters.
        """
        nrm = sample_field(normal_map(depth0, self.K), node_xy).astype(np.float64)
        nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-9)
        n = len(nrm)
        proj = np.eye(3)[None] - nrm[:, :, None] * nrm[:, None, :]
        idx = np.arange(n)
        rows = np.concatenate([c * n + idx for c in range(3) for _ in range(3)])
        cols = np.concatenate([d * n + idx for _ in range(3) for d in range(3)])
        data = np.concatenate([proj[:, c, d] for c in range(3) for d in range(3)])
        return sp.csr_matrix((data, (rows, cols)), shape=(3 * n, 3 * n))

    def _classes(self, labels0, node_xy, sample_xy, queries):
        if labels0 is None or not self.cfg.semantic:
            return None, None, None
        lab = labels0.astype(np.float32)[..., None]
        return tuple(sample_field(lab, xy, nearest=True)[:, 0].astype(np.int64) for xy in (node_xy, sample_xy, queries))

    # ---- one frame -------------------------------------------------------------------------------
    def step(self, depth: np.ndarray, labels: np.ndarray | None = None,
             flow_xy: np.ndarray | None = None, flow_ok: np.ndarray | None = None):
        normals = normal_map(depth, self.K)
        for _ in range(self.cfg.rigid_iterations):
            self._rigid_step(depth, normals, labels)
        for _ in range(self.cfg.iterations):
            self.T = self._solve(depth, normals, labels, flow_xy, flow_ok)
        xyz = self.queries + self.W_queries @ self.T
        xy = project_points(xyz, self.K)
        return xy, xyz, self._visible(xy, xyz, depth, labels)

    def _solve(self, depth, normals, labels, flow_xy, flow_ok) -> np.ndarray:
        """One Gauss-Newton step: normal equations of the data rows plus the constant prior, solved by
        Jacobi-preconditioned conjugate gradients warm-started at the current translations."""
        cfg = self.cfg
        n = len(self.nodes)
        p = self.samples + self.W_samples @ self.T
        A, b = self._plane_rows(p, depth, normals, labels)
        scale = cfg.w_plane / self.z_ref  # residuals in units of the scene depth: weights are scale-free
        lhs = (scale ** 2) * (A.T @ A)
        rhs = (scale ** 2) * (A.T @ b)
        if cfg.w_flow > 0 and flow_xy is not None:
            A, b = self._flow_rows(p, flow_xy, flow_ok)
            scale = cfg.w_flow / self.z_ref
            lhs = lhs + (scale ** 2) * (A.T @ A)
            rhs = rhs + (scale ** 2) * (A.T @ b)
        x_prev = self.T.T.ravel()
        lhs = (lhs + self._prior).tocsr()
        rhs = rhs + (cfg.w_temporal / self.z_ref) ** 2 * x_prev
        x = pcg(lhs, rhs, x_prev, rtol=1e-6)
        if x is None:  # did not converge: fall back to a direct sparse solve
            x = spla.spsolve(lhs.tocsc(), rhs)
        return x.reshape(3, n).T

    def _rigid_step(self, depth, normals, labels) -> None:
        """One point-to-plane step of a global small rigid motion (omega, v), applied to every node.

        Camera drift and bulk tissue motion move the whole surface at once; solving them with all
        samples together (6 unknowns) is far better conditioned than letting each node find its
        share, and leaves the graph only the non-rigid remainder.
        """
        p = self.samples + self.W_samples @ self.T
        nrm, q, weight = self._associate(p, depth, normals, labels)
        if weight.sum() < 6:
            return
        J = np.concatenate([np.cross(p, nrm), nrm], axis=1) * weight[:, None]
        r = np.einsum("ij,ij->i", nrm, q - p) * weight
        damping = 1e-6 * np.trace(J.T @ J) / 6
        x = np.linalg.solve(J.T @ J + damping * np.eye(6), J.T @ r)
        omega, v = x[:3], x[3:]
        self.T = self.T + np.cross(omega, self.nodes + self.T) + v

    def _associate(self, p, depth, normals, labels):
        """Projective data association: per sample its surface normal, surface point and robust weight."""
        h, w = depth.shape
        uv = project_points(p, self.K)
        z = sample_depth(depth, uv)
        q = backproject_points(uv, z, self.K)
        nrm = sample_field(normals, uv)
        nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-9)
        ok = inside(uv, h, w) & np.isfinite(z) & (z > 0) & (np.abs(nrm).sum(1) > 0)
        ok &= np.linalg.norm(p - q, axis=1) < self.cfg.max_dist_rel * np.nan_to_num(z, nan=0.0)
        if labels is not None:
            lab = sample_field(labels.astype(np.float32)[..., None], uv, nearest=True)[:, 0].astype(np.int64)
            if self.cfg.occluder_classes:
                ok &= ~np.isin(lab, self.cfg.occluder_classes)
            if self.cfg.semantic and self.sample_class is not None:
                ok &= lab == self.sample_class
        q = np.nan_to_num(q)
        resid = np.einsum("ij,ij->i", nrm, p - q)
        delta = self.cfg.huber_rel * self.z_ref
        return nrm, q, ok / np.maximum(1.0, np.abs(resid) / delta)

    def _plane_rows(self, p, depth, normals, labels):
        """Point-to-plane rows n . (p0 + W T) = n . q with projective association and a Huber weight."""
        nrm, q, weight = self._associate(p, depth, normals, labels)
        A = _coord_blocks(self.W_samples, nrm * weight[:, None])
        b = weight * (np.einsum("ij,ij->i", nrm, q) - np.einsum("ij,ij->i", nrm, self.samples))
        return A, b

    def _flow_rows(self, p, flow_xy, flow_ok):
        """Linearised reprojection rows: J_pi (p0 + W T) = target - pi(p) + J_pi p, scaled px -> depth units."""
        fx, fy = self.K[0, 0], self.K[1, 1]
        zc = np.maximum(p[:, 2], 1e-6)
        uv = project_points(p, self.K)
        jx = np.stack([fx / zc, np.zeros_like(zc), -fx * p[:, 0] / zc ** 2], 1)
        jy = np.stack([np.zeros_like(zc), fy / zc, -fy * p[:, 1] / zc ** 2], 1)
        ok = np.ones(len(p), bool) if flow_ok is None else np.asarray(flow_ok, bool)
        weight = ok * zc / fx  # one pixel of reprojection error ~ z / f in depth units
        rows, rhs = [], []
        for jac, c in ((jx, 0), (jy, 1)):
            rows.append(_coord_blocks(self.W_samples, jac * weight[:, None]))
            target = flow_xy[:, c] - uv[:, c] + np.einsum("ij,ij->i", jac, p) - np.einsum("ij,ij->i", jac, self.samples)
            rhs.append(weight * target)
        return sp.vstack(rows), np.concatenate(rhs)

    def _visible(self, xy, xyz, depth, labels) -> np.ndarray:
        h, w = depth.shape
        vis = inside(xy, h, w)
        z_seen = sample_depth(depth, xy)
        behind = np.nan_to_num(z_seen, nan=np.inf) < xyz[:, 2] * (1.0 - self.cfg.occlusion_rel)
        vis &= ~behind
        if labels is not None and self.cfg.occluder_classes:
            lab = sample_field(labels.astype(np.float32)[..., None], xy, nearest=True)[:, 0].astype(np.int64)
            vis &= ~np.isin(lab, self.cfg.occluder_classes)
        return vis


def pcg(A: sp.csr_matrix, b: np.ndarray, x0: np.ndarray, rtol: float = 1e-6, maxiter: int | None = None) -> np.ndarray | None:
    """Jacobi-preconditioned conjugate gradients for a symmetric positive-definite A; None if not converged.

    A plain loop rather than scipy's cg: the systems are small (3 x nodes unknowns), warm-started
    from the previous frame, and the wrapper overhead per iteration would dominate the solve.
    """
    inv_diag = 1.0 / np.maximum(A.diagonal(), 1e-12)
    x = x0.copy()
    r = b - A @ x
    stop = rtol * max(np.linalg.norm(b), 1e-30)
    z = inv_diag * r
    p = z.copy()
    rz = r @ z
    for _ in range(maxiter or 10 * len(b)):
        if np.linalg.norm(r) <= stop:
            return x
        Ap = A @ p
        alpha = rz / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        z = inv_diag * r
        rz, rz_old = r @ z, rz
        p = z + (rz / rz_old) * p
    return x if np.linalg.norm(r) <= stop else None


def _on_mask(xy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    ix = np.clip(np.round(xy).astype(int), 0, [mask.shape[1] - 1, mask.shape[0] - 1])
    return xy[mask[ix[:, 1], ix[:, 0]]]
