"""Operator F: an occluder is in front of the surface around it (an instrument over tissue).

An instrument moves on its own while the scope moves; warped with the scope's motion alone, its
pixels reproject best far away (like a car driving with the camera), so a self-supervised network
learns to put it behind the tissue it covers. Semantics say what photometry cannot here: whatever
occludes a surface is nearer than that surface. The hint bounds each occluder blob by the depth of
the surface ring around it (the ring's median of the current prediction) and leaves pixels already
in front unchanged, so it never invents a depth; it only forbids one that occlusion rules out.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from semhint.core.conventions import IGNORE_INDEX


def occluders_in_front(depth: torch.Tensor, labels: torch.Tensor, occluder_classes: list[int], ring: int = 4,
                       min_pixels: int = 4) -> torch.Tensor:
    """Depth with every occluder blob no farther than the median depth of the ring of surface around it.

    depth (B,1,H,W) > 0; labels (B,H,W) int64 (255 = unknown). A blob is a 4-connected component of
    ``occluder_classes`` pixels (blobs, not a class mask per image: two instruments over tissue at
    different depths each get their own bound); its ring is the pixels within ``ring`` px of it that
    are of another known class. A blob with fewer than ``min_pixels`` ring pixels (it fills the frame)
    is left alone. Returns a new tensor; pixels outside occluders are unchanged.
    """
    if depth.dim() != 4 or depth.shape[1] != 1 or labels.shape != (depth.shape[0], *depth.shape[-2:]):
        raise ValueError(f"occluders_in_front: depth must be B x 1 x H x W and labels B x H x W, "
                         f"got {tuple(depth.shape)} and {tuple(labels.shape)}")
    out = depth.clone()
    if not occluder_classes:
        return out
    classes = torch.tensor([int(c) for c in occluder_classes], device=labels.device, dtype=labels.dtype)
    occluder = torch.isin(labels, classes)
    surface = ~occluder & (labels != IGNORE_INDEX)
    h, w = labels.shape[-2:]
    for b in range(depth.shape[0]):
        if not occluder[b].any():
            continue
        # blob labelling on the CPU (OpenCV): one device sync per image with occluders, none without
        count, blobs, boxes, _ = cv2.connectedComponentsWithStats(occluder[b].cpu().numpy().astype(np.uint8),
                                                                  connectivity=4)
        blobs = torch.from_numpy(blobs).to(depth.device)
        for i in range(1, count):
            # only the blob's box grown by the ring is dilated: noisy labels make many small blobs
            x, y, bw, bh = (int(v) for v in boxes[i, :4])
            y0, y1, x0, x1 = max(0, y - ring), min(h, y + bh + ring), max(0, x - ring), min(w, x + bw + ring)
            blob = blobs[y0:y1, x0:x1] == i
            near = F.max_pool2d(blob[None, None].float(), 2 * ring + 1, stride=1, padding=ring)[0, 0] > 0
            window = out[b, 0, y0:y1, x0:x1]
            around = near & surface[b, y0:y1, x0:x1]
            if int(around.sum()) < min_pixels:
                continue
            bound = depth[b, 0, y0:y1, x0:x1][around].median()
            out[b, 0, y0:y1, x0:x1] = torch.where(blob, torch.minimum(window, bound), window)
    return out
