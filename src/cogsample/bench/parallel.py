"""Time per step against ranks: one video on 1, 2 and 4 processes (``--parallel``), each a real
``torchrun`` launch of this module, the same random-weight transformer, latents and draws.

On the CPU (gloo) the figures are informative only: the ranks share the machine's cores (torchrun
gives each one thread, and so the single rank too) and the all-to-alls go through memory. With as
many CUDA devices as ranks, each rank takes ``cuda:LOCAL_RANK`` (NCCL) and the transformer is
CogVideoX-5B's shape (random weights, bf16, 49 frames at 480 x 720): what a multi-GPU user gets.

``python -m cogsample.bench.parallel OUT.json --parallel SPEC --steps N`` is the worker.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .harness import stats

__all__ = ["MODES", "parallel_speed"]

#: (ranks, --parallel) of each row; None: one process, no parallel.
MODES: list[tuple[int, str | None]] = [
    (1, None),
    (2, "cfg=2"),
    (2, "ulysses=2"),
    (4, "cfg=2,ulysses=2"),
    (4, "ulysses=4"),
]
QUICK_MODES = MODES[:3]
#: The CPU run's latent: 4 latent frames of 16 x 24 (a 13-frame 128 x 192 px video), 384 tokens:
#: enough that the transformer, not the exchange, is most of a step.
CPU_LATENT = (1, 4, 16, 16, 24)


def parallel_speed(quick: bool = False, timeout: float = 600) -> dict[str, Any]:
    """One row per :data:`MODES` entry (``ranks``, ``parallel``, ``ms_per_step`` median and minimum
    over the timed steps, ``speedup`` against one rank, ``max_rel_diff`` of its latents from one
    rank's), plus the setup. ``quick``: 1 and 2 ranks, 2 timed steps."""
    cuda = torch.cuda.device_count()
    steps = 2 if quick else 8
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base_latents = None
        for ranks, spec in QUICK_MODES if quick else MODES:
            if cuda and ranks > cuda:
                rows.append({"ranks": ranks, "parallel": spec, "skipped": f"{cuda} CUDA devices"})
                continue
            out = Path(tmp) / f"r{ranks}-{spec}.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
            cmd += ["-m", "cogsample.bench.parallel", str(out), "--steps", str(steps)]
            if spec is not None:
                cmd += ["--parallel", spec]
            env = {**os.environ, "MASTER_ADDR": "127.0.0.1"}
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"parallel bench {spec or 'one rank'} failed:\n{proc.stderr[-3000:]}")
            rec = json.loads(out.read_text())
            latents = torch.load(rec["latents"], weights_only=True)
            if base_latents is None:
                base_latents = latents
            scale = max(1.0, base_latents.abs().max().item())
            times = rec["step_ms"]
            rows.append(
                {
                    "ranks": ranks,
                    "parallel": spec,
                    "ms_per_step": stats(times),
                    "max_rel_diff": (latents.double() - base_latents.double()).abs().max().item() / scale,
                }
            )
            setup = rec["setup"]
    one = rows[0]["ms_per_step"]["median"]
    for row in rows:
        if "ms_per_step" in row:
            row["speedup"] = one / row["ms_per_step"]["median"]
    return {"setup": setup, "rows": rows}


def _worker(out: str, spec: str | None, steps: int) -> None:
    import torch.distributed as dist

    from ..jobs.distributed import Launch
    from ..models.cogvideox import CogVideoXTransformerNetwork
    from ..models.tiny import tiny_transformer
    from ..sampling.config import SamplingConfig, build_model, release
    from ..sampling.guidance import Conditioning, DynamicCFG
    from ..sampling.noise import SeededNoise
    from ..sampling.parallel import ParallelConfig, ParallelGroups, init_parallel
    from .harness import BENCH_SIZE, step_times, sync
    from .speed import COGVIDEOX_5B_TRANSFORMER

    launch = Launch.from_env()
    cuda = torch.cuda.is_available() and torch.cuda.device_count() >= launch.world_size
    device = torch.device(f"cuda:{launch.local_rank}" if cuda else "cpu")
    torch.manual_seed(0)  # the same random weights on every rank
    if cuda:
        from diffusers import CogVideoXTransformer3DModel

        dtype = torch.bfloat16
        transformer = CogVideoXTransformer3DModel(**COGVIDEOX_5B_TRANSFORMER).to(device, dtype).eval()
        shape, text = (1, 13, 16, 60, 90), (1, 226, 4096)
        what = "CogVideoX-5B transformer shape, random weights, bf16, 49 x 480 x 720"
    else:
        dtype = torch.float32
        transformer = tiny_transformer("t2v", BENCH_SIZE).eval()
        shape, text = CPU_LATENT, (1, BENCH_SIZE.text_len, BENCH_SIZE.text_dim)
        what = (
            f"tiny transformer {BENCH_SIZE.num_layers} x {BENCH_SIZE.num_heads} x {BENCH_SIZE.head_dim}, latent {shape}"
        )
    network = CogVideoXTransformerNetwork(transformer, device=device)
    groups = None
    if launch.distributed:
        init_parallel(device)
        groups = ParallelGroups.build(ParallelConfig.parse(spec or "cfg=1"))
        if groups.config.ulysses > 1:
            network.sequence_parallel(groups.seq_group, groups.seq_rank, groups.config.ulysses)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(shape, generator=g).to(device)
    cond = Conditioning(torch.randn(text, generator=g).to(device, dtype))
    branches = None if groups is None else groups.cfg_parallel()

    def run(n: int) -> tuple[torch.Tensor, list[float]]:
        config = SamplingConfig(steps=n, guidance=DynamicCFG(6, 5, n))
        model, grid = build_model(network, x0, cond, config, branches=branches)
        stamps: list[float] = []

        def tick(*_a: Any) -> None:
            sync(device)
            stamps.append(time.perf_counter())

        start = time.perf_counter()
        with torch.inference_mode():
            x = config.spec.fn(model, x0.clone(), grid, SeededNoise.from_seed(3, 1), callback=tick)
        release(model)
        return x, [1000 * t for t in step_times(start, stamps)]

    run(2)  # warm-up: kernels, allocator, the rotary table
    latents, step_ms = run(steps)
    if launch.rank == 0:
        path = str(Path(out).with_suffix(".pt"))
        torch.save(latents.float().cpu(), path)
        setup = {"what": what, "device": str(device), "steps": steps, "sampler": "vpsde_dpmpp_2m, DynamicCFG 6"}
        Path(out).write_text(json.dumps({"step_ms": step_ms, "latents": path, "setup": setup}))
    if dist.is_initialized():
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cogsample.bench.parallel")
    ap.add_argument("out")
    ap.add_argument("--parallel")
    ap.add_argument("--steps", type=int, default=8)
    a = ap.parse_args(argv)
    _worker(a.out, a.parallel, a.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
