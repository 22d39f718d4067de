"""Peak memory of CogVideoX's VAE decode, untiled and tiled, at the released models' latent shapes.

The released VAE's structure (diffusers' ``AutoencoderKLCogVideoX()`` defaults: blocks 128-256-256-512,
3 layers each, 16 latent channels) with random weights: memory does not depend on the weights.
Prints one JSON line per shape: the peak above the loaded weights, untiled (diffusers' 2-frame
batches, and SAT's 1.5 chunking where it differs) and tiled, and ``bytes_per_px``, the untiled
peak over ``first-batch latent frames x H x W x element size`` that
:func:`cogsample.models.cogvideox.untiled_decode_bytes` uses for ``--vae-tiling auto``.

    python benchmarks/vae_memory.py                 # CUDA, bf16, the released shapes
    python benchmarks/vae_memory.py --device cpu    # float32, small shapes (RSS is not measured here)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from cogsample.models.cogvideox import first_frame_batch

CUDA_SHAPES = [  # (latent frames, latent h, latent w): 1.0 at 480x720 (13, 9 and 5 latent frames), 1.5 at 768x1360
    (13, 60, 90),
    (9, 60, 90),
    (5, 60, 90),
    (13, 30, 46),
    (21, 96, 170),
    (41, 96, 170),
]
CPU_SHAPES = [(5, 16, 24), (5, 32, 48), (9, 32, 48)]


def measure(vae, z: torch.Tensor, tiling: bool, batch: int = 2) -> tuple[float, float]:
    """(peak bytes above the start, seconds) of one ``vae.decode(z)``."""
    dev = z.device
    vae.enable_tiling() if tiling else vae.disable_tiling()
    vae.num_latent_frames_batch_size = batch
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = vae.decode(z).sample
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) - base
    else:
        peak = float("nan")
    del out
    vae.num_latent_frames_batch_size = 2
    return peak, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on the CPU")
    args = ap.parse_args()
    from diffusers import AutoencoderKLCogVideoX

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX().to(device=device, dtype=dtype).eval()
    esize = torch.finfo(dtype).bits // 8
    shapes = CUDA_SHAPES if device.type == "cuda" else CPU_SHAPES
    for t, h, w in shapes:
        z = torch.randn(1, 16, t, h, w, device=device, dtype=dtype)
        row = {"device": str(device), "dtype": str(dtype), "latent": [t, h, w]}
        row["pixels"] = [4 * (t - 1) + 1, 8 * h, 8 * w]
        try:
            row["untiled_bytes"], row["untiled_s"] = measure(vae, z, tiling=False)
            row["bytes_per_px"] = row["untiled_bytes"] / (first_frame_batch(t, 2) * 64 * h * w * esize)
            n = min(10, t // 2)
            if n and t // n != 2 and t % n <= 1:  # SAT's 1.5 chunking, where it is a diffusers plan of another size
                row["sat_batch"] = t // n
                row["sat_untiled_bytes"], row["sat_untiled_s"] = measure(vae, z, tiling=False, batch=t // n)
                row["sat_bytes_per_px"] = row["sat_untiled_bytes"] / (first_frame_batch(t, t // n) * 64 * h * w * esize)
        except torch.OutOfMemoryError as e:
            row["untiled_error"] = str(e).splitlines()[0]
        try:
            row["tiled_bytes"], row["tiled_s"] = measure(vae, z, tiling=True)
        except torch.OutOfMemoryError as e:
            row["tiled_error"] = str(e).splitlines()[0]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
