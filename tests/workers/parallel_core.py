"""Run under torchrun (gloo): the parallel collectives, CFG parallel in the sampler and Ulysses on
tiny transformers, each against the same computation in one process (made here, on every rank).
Rank 0 writes ``{check: max abs difference}`` as JSON to ``argv[1]``."""

import json
import sys

import torch
import torch.distributed as dist

from cogsample import SamplingConfig, SeededNoise, sample
from cogsample.sampling.context_windows import ContextWindows, WindowedNetwork
from cogsample.sampling.guidance import CFG, Conditioning, DynamicCFG, GuidanceInterval, NoGuidance
from cogsample.sampling.parallel import (
    ParallelConfig,
    ParallelGroups,
    all_gather_heads,
    gather_sequence,
    heads_to_sequence,
    sequence_to_heads,
    shard_sizes,
)


def diff(a, b):
    return (a.double() - b.double()).abs().max().item() if a.shape == b.shape else float("inf")


def collectives(results, group, rank, size):
    for s in (size, 7, 18):  # even and uneven shards
        full = torch.randn(3, 2, 4, s, 8, generator=torch.Generator().manual_seed(s))
        sizes = shard_sizes(s, size)
        off, n = sum(sizes[:rank]), sizes[rank]
        shard = full[..., off : off + n, :].contiguous()
        h = 4 // size
        heads = sequence_to_heads(shard, sizes, group)
        results[f"sequence_to_heads/S={s}"] = diff(heads, full[:, :, rank * h : (rank + 1) * h])
        results[f"heads_to_sequence/S={s}"] = diff(heads_to_sequence(heads, sizes, group), shard)
        results[f"all_gather_heads/S={s}"] = diff(all_gather_heads(full[:, :, rank * h : (rank + 1) * h], group), full)
        results[f"gather_sequence/S={s}"] = diff(gather_sequence(shard, sizes, group, dim=3), full)


def net(x, t, context, ofs=None):
    # depends on every input, row by row (so a branch on its own rank computes its rows' bits)
    return torch.tanh(x[:, :, :16] * (1 + context.mean((1, 2))[:, None, None, None, None])) + 1e-3 * t.view(
        -1, 1, 1, 1, 1
    )


def cfg_parallel(results, groups):
    x0 = torch.randn(1, 3, 16, 4, 6, generator=torch.Generator().manual_seed(3))
    ctx = torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(4))
    unc = torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(5))
    img = torch.randn(1, 3, 16, 4, 6, generator=torch.Generator().manual_seed(6))
    rules = {
        "dynamic": (DynamicCFG(6, 5, 10), False),
        "cfg+skip_unit": (DynamicCFG(6, 5, 10, step_index="loop"), True),
        "interval": (GuidanceInterval(CFG(4.0), 0.4, 1.0), False),
        "none": (NoGuidance(), False),
    }
    for sampler in ("vpsde_dpmpp_2m", "vpode_dpmpp_2m", "video_ddim", "euler"):
        for name, (guidance, skip) in rules.items():
            for cond in (Conditioning(ctx, uncond_context=unc), Conditioning(ctx, image_latents=img)):
                extra = {} if sampler != "euler" else {"schedule": __import__("cogsample").LegacyDDPM()}
                if sampler == "euler":
                    from cogsample import DenoiserConfig, EpsScaling

                    extra["denoiser"] = DenoiserConfig(EpsScaling())
                    if name == "dynamic":
                        continue  # DynamicCFG's reference index needs DDPM timesteps
                config = SamplingConfig(sampler=sampler, steps=10, guidance=guidance, skip_unit_cfg=skip, **extra)
                key = f"cfg/{sampler}/{name}/{'i2v' if cond.image_latents is not None else 't2v'}"
                ref = sample(net, x0.clone(), cond, config, noise=SeededNoise.from_seed(7, 1))
                got = sample(
                    net, x0.clone(), cond, config, noise=SeededNoise.from_seed(7, 1), branches=groups.cfg_parallel()
                )
                results[key] = diff(got, ref)
    # context windows compose with CFG parallel: each window's branches on their ranks
    windowed = SamplingConfig(steps=10, context=ContextWindows(2, 1))
    for cond in (Conditioning(ctx, uncond_context=unc), Conditioning(ctx, image_latents=img)):
        ref = sample(net, x0.clone(), cond, windowed, noise=SeededNoise.from_seed(7, 1))
        got = sample(net, x0.clone(), cond, windowed, noise=SeededNoise.from_seed(7, 1), branches=groups.cfg_parallel())
        results[f"windows/cfg/{'i2v' if cond.image_latents is not None else 't2v'}"] = diff(got, ref)


def ulysses(results, group, rank, size):
    from cogsample.models.cogvideox import CogVideoXTransformerNetwork
    from cogsample.models.tiny import TinySize, tiny_transformer
    from cogsample.models.ulysses import SequenceParallel

    for kind in ("t2v", "t2v-2b", "i2v", "t2v-1.5", "i2v-1.5"):
        torch.manual_seed(0)
        tr = tiny_transformer(kind, TinySize(num_heads=4, text_len=18, num_layers=2))
        network = CogVideoXTransformerNetwork(tr)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, 3, tr.config.in_channels, 4, 6, generator=g)
        ctx = torch.randn(2, 18, 32, generator=g)
        t = torch.tensor([999.0, 321.0])
        ref = network(x, t, ctx)
        windowed = WindowedNetwork(network, ContextWindows(2, 1))
        ref_windowed = windowed(x, t, ctx)
        sp = SequenceParallel(group, rank, size).attach(tr)
        got = network(x, t, ctx)
        got_windowed = windowed(x, t, ctx)
        sp.detach()
        # relative to the output's scale: the projections run on fewer rows, which may round otherwise
        results[f"ulysses/{kind}"] = diff(got, ref) / max(1.0, ref.abs().max().item())
        results[f"windows/ulysses/{kind}"] = diff(got_windowed, ref_windowed) / max(1.0, ref.abs().max().item())
        results[f"ulysses/{kind}/detached"] = diff(network(x, t, ctx), ref)


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    results = {}
    collectives(results, dist.group.WORLD, rank, world)
    ulysses(results, dist.group.WORLD, rank, world)
    if world % 2 == 0:
        groups = ParallelGroups.build(ParallelConfig(cfg=2, ulysses=world // 2))
        cfg_parallel(results, groups)
    gathered = [None] * world
    dist.all_gather_object(gathered, results)
    if rank == 0:
        worst = {k: max(r[k] for r in gathered) for k in results}
        with open(sys.argv[1], "w") as f:
            json.dump(worst, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
