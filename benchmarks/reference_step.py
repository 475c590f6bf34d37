"""A plain reference of the training step and of depth inference, to compare speed on the same machine.

This is an independent, deliberately naive Monodepth2-style implementation written for this
benchmark (it shares no code with ``semhint``): a ResNet-18 depth encoder with the 5-stage U-Net
decoder (reflection-padded 3x3 convs, ELU, nearest x2 upsampling, sigmoid disparity at 4 scales), a
ResNet-18 pose encoder fed two frames (6 channels) with the 4-conv pose decoder (x0.01), and the
Monodepth2 loss written the obvious way: SSIM with ``F.avg_pool2d``, back-projection with
``invK @ pixels``, warping with ``F.grid_sample``, per-pixel minimum reprojection with the automask
(identity errors plus tiny tie-break noise), edge-aware smoothness of mean-normalised disparity.

One step matches what ``benchmarks/bench_step.py`` times for the package: batch 4, frames (0, -1, +1),
all 4 disparity scales upsampled to full resolution before warping, min-reprojection + automask,
smoothness (1e-3 / 2^s) at each scale's own resolution, backward, Adam (lr 1e-4). Depth range
0.1..100 as the package's defaults. Inference is the depth net alone at batch 1, fp32, in
``torch.inference_mode``.

The issue's reference numbers came from another machine; timing this module beside the package in
one process (``bench_step.py`` interleaves them) is what makes a speed comparison meaningful.

    .venv/bin/python benchmarks/reference_step.py --threads 2 --size 96x320
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH = 4
FRAMES = (0, -1, 1)
SCALES = (0, 1, 2, 3)
MIN_DEPTH, MAX_DEPTH = 0.1, 100.0


# ----------------------------------------------------------------------------------------------
# networks
# ----------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.down is None else self.down(x)))


class Encoder(nn.Module):
    """ResNet-18 trunk returning the 5 feature maps (strides 2, 4, 8, 16, 32)."""

    def __init__(self, c_in: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths = (64, 128, 256, 512)
        layers, c = [], 64
        for i, w in enumerate(widths):
            layers.append(nn.Sequential(BasicBlock(c, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)))
            c = w
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [F.relu(self.bn1(self.conv1((x - 0.45) / 0.225)))]
        x = F.max_pool2d(feats[0], 3, 2, 1)
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class PadConv(nn.Module):
    """Reflection pad 1, 3x3 conv, optional ELU."""

    def __init__(self, c_in: int, c_out: int, elu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3)
        self.elu = elu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.pad(x, (1, 1, 1, 1), mode="reflect"))
        return F.elu(x) if self.elu else x


class DepthDecoder(nn.Module):
    """Stage i = 4..0: conv, nearest x2, concat skip (none at stage 0), conv; disparity at stages 3..0."""

    def __init__(self, enc=(64, 64, 128, 256, 512), dec=(16, 32, 64, 128, 256)):
        super().__init__()
        self.conv0 = nn.ModuleDict()
        self.conv1 = nn.ModuleDict()
        for i in range(4, -1, -1):
            self.conv0[str(i)] = PadConv(enc[-1] if i == 4 else dec[i + 1], dec[i])
            self.conv1[str(i)] = PadConv(dec[i] + (enc[i - 1] if i > 0 else 0), dec[i])
        self.disp = nn.ModuleDict({str(s): PadConv(dec[s], 1, elu=False) for s in SCALES})

    def forward(self, feats: list[torch.Tensor]) -> dict[int, torch.Tensor]:
        x, out = feats[-1], {}
        for i in range(4, -1, -1):
            x = F.interpolate(self.conv0[str(i)](x), scale_factor=2, mode="nearest")
            if i > 0:
                x = torch.cat([x, feats[i - 1]], 1)
            x = self.conv1[str(i)](x)
            if i in SCALES:
                out[i] = torch.sigmoid(self.disp[str(i)](x))
        return out


class PoseDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.squeeze = nn.Conv2d(512, 256, 1)
        self.conv1 = nn.Conv2d(256, 256, 3, 1, 1)
        self.conv2 = nn.Conv2d(256, 256, 3, 1, 1)
        self.out = nn.Conv2d(256, 6, 1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(F.relu(self.squeeze(feat))))))
        return 0.01 * self.out(x).mean((2, 3))  # B x 6: axis-angle, translation


# ----------------------------------------------------------------------------------------------
# geometry and losses, written the obvious way
# ----------------------------------------------------------------------------------------------
def pose_matrix(v: torch.Tensor, invert: bool) -> torch.Tensor:
    """B x 6 (axis-angle, translation) to a B x 4 x 4 pose (Rodrigues); ``invert`` by torch.linalg.inv."""
    angle = v[:, :3].norm(dim=1, keepdim=True).clamp_min(1e-7)
    axis = v[:, :3] / angle
    c, s = torch.cos(angle), torch.sin(angle)
    C = 1 - c
    x, y, z = axis[:, 0:1], axis[:, 1:2], axis[:, 2:3]
    R = torch.stack([torch.cat([x * x * C + c, x * y * C - z * s, x * z * C + y * s], 1),
                     torch.cat([y * x * C + z * s, y * y * C + c, y * z * C - x * s], 1),
                     torch.cat([z * x * C - y * s, z * y * C + x * s, z * z * C + c], 1)], 1)
    top = torch.cat([R, v[:, 3:, None]], 2)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], device=v.device).expand(v.shape[0], 1, 4)
    T = torch.cat([top, bottom], 1)
    return torch.linalg.inv(T) if invert else T


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mx, my = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sx = F.avg_pool2d(x * x, 3, 1) - mx**2
    sy = F.avg_pool2d(y * y, 3, 1) - my**2
    sxy = F.avg_pool2d(x * y, 3, 1) - mx * my
    n = (2 * mx * my + 1e-4) * (2 * sxy + 9e-4)
    d = (mx**2 + my**2 + 1e-4) * (sx + sy + 9e-4)
    return torch.clamp((1 - n / d) / 2, 0, 1)


def photometric(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.85 * ssim(a, b).mean(1, True) + 0.15 * (a - b).abs().mean(1, True)


def smoothness(disp: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    d = disp / (disp.mean((2, 3), True) + 1e-7)
    gx = (d[..., :-1] - d[..., 1:]).abs() * torch.exp(-(image[..., :-1] - image[..., 1:]).abs().mean(1, True))
    gy = (d[..., :-1, :] - d[..., 1:, :]).abs() * torch.exp(
        -(image[..., :-1, :] - image[..., 1:, :]).abs().mean(1, True))
    return gx.mean() + gy.mean()


# ----------------------------------------------------------------------------------------------
# one training step
# ----------------------------------------------------------------------------------------------
class ReferenceStep:
    """Networks, Adam and one synthetic batch on ``device``; calling it runs one optimiser step (fp32)."""

    def __init__(self, height: int, width: int, batch_size: int = BATCH, seed: int = 0, device: str = "cpu"):
        if height % 32 or width % 32 or min(height, width) < 64:
            raise ValueError("the plain decoder upsamples by exactly x2 and reflection-pads the stride-32 map: height "
                             f"and width must be multiples of 32 and at least 64, got {height}x{width}")
        torch.manual_seed(seed)
        self.h, self.w, self.b, self.device = height, width, batch_size, torch.device(device)
        nets = [Encoder(3), DepthDecoder(), Encoder(6), PoseDecoder()]
        self.depth_enc, self.depth_dec, self.pose_enc, self.pose_dec = (n.to(self.device) for n in nets)
        params = [p for m in (self.depth_enc, self.depth_dec, self.pose_enc, self.pose_dec) for p in m.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=1e-4)
        g = torch.Generator().manual_seed(seed)
        base = F.interpolate(torch.rand(batch_size, 3, height // 8, width // 8, generator=g), size=(height, width),
                             mode="bilinear", align_corners=False)
        self.images = {f: torch.roll(base, 2 * i, 3).contiguous().to(self.device) for i, f in enumerate(FRAMES)}
        K = torch.tensor([[0.58 * width, 0, 0.5 * width, 0], [0, 1.92 * height, 0.5 * height, 0],
                          [0, 0, 1, 0], [0, 0, 0, 1.0]])
        self.K = K.expand(batch_size, 4, 4).to(self.device)
        self.inv_K = torch.linalg.inv(K).expand(batch_size, 4, 4).to(self.device)
        ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                                indexing="ij")
        self.pixels = torch.stack([xs.flatten(), ys.flatten(), torch.ones(height * width)], 0).to(self.device)

    def warp(self, image: torch.Tensor, depth: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        b, h, w = self.b, self.h, self.w
        cam = (self.inv_K[:, :3, :3] @ self.pixels) * depth.view(b, 1, -1)
        cam = torch.cat([cam, torch.ones(b, 1, h * w, device=self.device)], 1)
        p = (self.K @ T)[:, :3] @ cam
        p = p[:, :2] / (p[:, 2:3] + 1e-7)
        p = p.view(b, 2, h, w).permute(0, 2, 3, 1)
        grid = torch.stack([p[..., 0] / (w - 1), p[..., 1] / (h - 1)], -1) * 2 - 1
        return F.grid_sample(image, grid, padding_mode="border", align_corners=True)

    def loss(self) -> torch.Tensor:
        imgs, target = self.images, self.images[0]
        disps = self.depth_dec(self.depth_enc(target))
        poses = {}
        for f in FRAMES[1:]:
            pair = torch.cat([imgs[f], target] if f < 0 else [target, imgs[f]], 1)
            poses[f] = pose_matrix(self.pose_dec(self.pose_enc(pair)[-1]), invert=f < 0)
        identity = torch.cat([photometric(imgs[f], target) for f in FRAMES[1:]], 1)
        identity = identity + 1e-5 * torch.randn_like(identity)
        photo, smooth = [], []
        for s in SCALES:
            disp = F.interpolate(disps[s], (self.h, self.w), mode="bilinear", align_corners=False)
            depth = 1 / (1 / MAX_DEPTH + (1 / MIN_DEPTH - 1 / MAX_DEPTH) * disp)
            reproj = torch.cat([photometric(self.warp(imgs[f], depth, poses[f]), target) for f in FRAMES[1:]], 1)
            photo.append(torch.cat([identity, reproj], 1).min(1)[0].mean())
            colour = F.interpolate(target, disps[s].shape[-2:], mode="area")
            smooth.append(1e-3 * smoothness(disps[s], colour) / 2**s)
        return torch.stack(photo).mean() + torch.stack(smooth).mean()

    def __call__(self) -> None:
        loss = self.loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


class ReferenceInference:
    """The depth net alone in eval mode on ``device``; calling it runs one forward of ``batch_size`` images."""

    def __init__(self, height: int = 192, width: int = 640, seed: int = 0, device: str = "cpu", batch_size: int = 1):
        torch.manual_seed(seed)
        self.encoder, self.decoder = Encoder(3).to(device).eval(), DepthDecoder().to(device).eval()
        self.image = torch.rand(batch_size, 3, height, width, device=device)

    def __call__(self) -> None:
        with torch.inference_mode():
            self.decoder(self.encoder(self.image))


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------
def _median_seconds(fn, threads: int, repeats: int, warmup: int) -> float:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = []
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        return statistics.median(times)
    finally:
        torch.set_num_threads(previous)


def reference_step_seconds(height: int = 96, width: int = 320, threads: int = 2, repeats: int = 3,
                           warmup: int = 2) -> float:
    """Median seconds of one plain training step (batch 4, frames 0/-1/+1, 4 scales, Adam)."""
    return _median_seconds(ReferenceStep(height, width), threads, repeats, warmup)


def reference_inference_ms(threads: int = 2, repeats: int = 5, warmup: int = 2, height: int = 192,
                           width: int = 640) -> float:
    """Median milliseconds of one plain depth-net forward, batch 1 (192x640 unless told)."""
    return 1000 * _median_seconds(ReferenceInference(height, width), threads, repeats, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", default="96x320", help="training step size HxW (multiples of 32, >= 64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    step = reference_step_seconds(h, w, args.threads, args.repeats, args.warmup)
    print(f"reference step {h}x{w}, batch {BATCH}, threads {args.threads}: {step:.3f} s")
    infer = reference_inference_ms(args.threads, max(args.repeats, 3), args.warmup)
    print(f"reference inference 192x640, batch 1, threads {args.threads}: {infer:.1f} ms")


if __name__ == "__main__":
    main()
