"""Run under torchrun (gloo): whole generations (encode, sample, decode) of tiny CogVideoX folders
on a video group, against the same generation in one process (made here, on every rank, before
any group exists). ``argv``: results JSON path, then ``KIND=FOLDER`` pairs. Rank 0 writes
``{case: {"latents": max abs difference / max(1, max |latents|), "frames": max uint8 difference,
"forwards": [parallel, single]}}``."""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from cogsample.pipeline.pipeline import Pipeline
from cogsample.sampling.parallel import ParallelConfig, ParallelGroups

PROMPT = "a red car drives through the city at night"
#: per-video options: guidance that skips the unconditional branch on some steps (--fast's interval
#: and unit scale: the unconditional rank waits; the sampler on every step guided is the core's
#: test), and a step cache whose decisions agree on every Ulysses rank (diffusers' pyramid attention
#: broadcast: counters and timesteps alone; first-block is refused under Ulysses), and PAG's third,
#: perturbed call (diffusers' layer-skip hooks on every rank: the identity attention map in the
#: Ulysses processor; on the conditional rank under CFG parallel, broadcast).
RUNS = {
    "fast": {"fast": True, "steps": 6},
    "pag": {"steps": 4, "guidance": "pag:end=1,layers=0-1"},
    "pab-cache": {"steps": 8, "sampler": "vpode_dpmpp_2m", "cache": "pab:above=0,below=1000"},
}


def modes(world: int) -> list[ParallelConfig]:
    return [ParallelConfig(2, 1), ParallelConfig(1, 2)] if world == 2 else [ParallelConfig(1, 4), ParallelConfig(2, 2)]


def generate(pipe: Pipeline, kind: str, image: str, options: dict):
    image = image if kind.startswith("i2v") else None
    return pipe(PROMPT, image=image, seed=3, frames=9, height=32, width=48, **options)


def main():
    out, pairs = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    image = str(Path(out).with_name(f"first-{dist.get_rank()}.png"))
    pixels = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    results = {}
    for kind, folder in pairs.items():
        single = Pipeline.load(folder)
        refs = {name: generate(single, kind, image, o) for name, o in RUNS.items()}
        for config in modes(world):
            groups = ParallelGroups.build(config)
            pipe = Pipeline.load(folder, parallel=groups)
            for name, options in RUNS.items():
                if name == "pab-cache" and (config.ulysses == 1 or config.cfg > 1):
                    # every Ulysses rank skips the same attentions (one process's decisions); under
                    # CFG parallel each branch's cache holds its own rows
                    continue
                got, ref = generate(pipe, kind, image, options), refs[name]
                scale = max(1.0, ref.latents.abs().max().item())
                frames = np.abs(got.frames.astype(int) - ref.frames.astype(int)).max()
                results[f"{kind}/{config}/{name}"] = {
                    "latents": (got.latents.double() - ref.latents.double()).abs().max().item() / scale,
                    "frames": int(frames),
                    "equal": bool(torch.equal(got.latents, ref.latents)),
                }
    gathered = [None] * world
    dist.all_gather_object(gathered, results)
    if dist.get_rank() == 0:
        worst = {
            k: {
                "latents": max(r[k]["latents"] for r in gathered),
                "frames": max(r[k]["frames"] for r in gathered),
                "equal": all(r[k]["equal"] for r in gathered),
            }
            for k in results
        }
        with open(out, "w") as f:
            json.dump(worst, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
