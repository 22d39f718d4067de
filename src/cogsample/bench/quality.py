"""Quality per forward on models whose true distribution is known.

Three models (:data:`MODELS`): ``builtin`` (exact: the built-in model's network is the posterior
mean of its 16-clip mixture), ``builtin-trained`` (the trained transformer of
:mod:`cogsample.models.trained`: real learned error, and guidance has something to correct) and
``family-exact`` (exact, the trained model's 616-clip family: held out, it checks a choice made on
the other two). Each model's data are the mixture ``p(x0 | prompt) = sum_k w_k N(mu_k, tau^2 I)`` over the
clip latents ``mu_k`` the prompt allows (``w`` uniform over them), and its network is the exact
posterior mean, so every difference between samplers is the sampler's. For ``N`` samples ``x``
(latents, ``d`` values each) the figures are:

* ``on_prompt``: the share of samples whose nearest clip (``argmin_k |x - mu_k|``, over all clips)
  is one the prompt allows;
* ``kl``: the within-mode KL divergence per dimension, ``0.5 (v - 1 - ln v)`` averaged over
  samples, with ``v = |x - mu_k*|^2 / (d tau^2)`` the sample's variance around its clip relative to
  the true ``tau^2``. For a Gaussian residual this is ``KL(N(mu, v tau^2 I) || N(mu, tau^2 I)) / d``:
  0 for a perfect sample, positive for too little noise (``v < 1``: a denoised estimate returned
  at a noisy level) and for too much (``v > 1``: leftover noise or a blend of clips);
* ``loglik``: ``log p(x | prompt) / d`` under the true conditional mixture (higher is likelier,
  but a sample with too little noise scores *higher* than a true one, so it is reported, not
  used to rank);
* ``mode_tv``: the total-variation distance between the clips the samples of a prompt landed on
  (their empirical frequencies) and the true weights ``w``, averaged over prompts: mode collapse
  and off-prompt samples raise it. Even an exact sampler scores above 0 with finitely many
  samples; ``mode_tv_floor`` is that expected value (multinomial draws from ``w`` of the same
  sizes);
* ``ode_error`` (deterministic samplers): RMS distance, in units of ``tau``, from the same
  configuration's many-step solution from the same noise.

``forwards`` counts network evaluations per sample (2 for a guided call, 1 for a
conditional-only one). How presets are chosen (distance to the converged limit at equal guidance,
and the truth) is :mod:`cogsample.bench.presets`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..models.builtin import CLIPS, DEFAULT_TAU, MixtureNetwork, match_prompt
from ..sampling.config import SamplingConfig, build_model
from ..sampling.denoiser import DenoiserConfig
from ..sampling.guidance import Conditioning, DynamicCFG, Guidance, GuidanceInterval
from ..sampling.noise import latent_shape
from ..sampling.samplers import get_sampler
from ..sampling.scalings import VideoScaling
from ..sampling.schedules import Schedule, SpacedDDPM, ZeroSNRDDPM
from .harness import initial_noise, nearest_clip, sample_noise, sq_distances, timed_sample

Tensor = torch.Tensor

__all__ = [
    "FAMILY_PROMPTS",
    "HELD_OUT",
    "MODELS",
    "PROMPTS",
    "TRAINED",
    "Candidate",
    "Setup",
    "evaluate",
    "fast_candidate",
    "prompt_rows",
    "reference_default",
]

#: Prompts that allow 4, 3 and 4 clips of the built-in model.
PROMPTS = ("a ball", "a square", "something rotating")
#: Prompts for the trained model: each names a colour and a background, what it learned (see
#: docs/training.md: it gets those right most of the time, shapes and motions far less often), and allows
#: the 28 clips of every shape and motion in them.
FAMILY_PROMPTS = ("a red shape on a black background", "something yellow on a white background",
                  "a green object on a blue background")  # fmt: skip
#: Other prompts (5, 4 and 4 clips) for the held-out exact family model.
HELD_OUT_PROMPTS = ("a blue ring on a gray background", "a purple square shrinking", "a green triangle moving left")
#: The models a setup can name.
MODELS = ("builtin", "builtin-trained", "family-exact")
#: The reference's DynamicCFG exponent and scale (cogvideox_5b.yaml).
SCALE, EXP = 6.0, 5.0


@dataclass(frozen=True)
class Setup:
    """The size of the experiment: ``seeds`` samples of each prompt at ``frames x height x width``
    on ``model`` (one of :data:`MODELS`); ``seed``: the first sample's noise seed."""

    model: str = "builtin"
    frames: int = 13
    height: int = 64
    width: int = 96
    seeds: int = 24
    prompts: tuple[str, ...] = PROMPTS
    tau: float = DEFAULT_TAU
    seed: int = 1234
    weights: str | None = None  # the trained model's transformer folder (None: the shipped one)


QUICK = Setup(frames=5, height=32, width=48, seeds=3)
#: The trained model works at its training size only (9 frames, 64 x 96).
TRAINED = Setup(model="builtin-trained", frames=9, height=64, width=96, seeds=24, prompts=FAMILY_PROMPTS)
HELD_OUT = Setup(model="family-exact", frames=9, height=64, width=96, seeds=24, prompts=HELD_OUT_PROMPTS)


@dataclass(frozen=True)
class Candidate:
    """A configuration family: ``config(steps)`` is its :class:`SamplingConfig` at a step count.

    ``grid``: ``"reference"`` (ZeroSNR DDPM's trailing steps, as shipped) or a
    :class:`SpacedDDPM` spacing ending at t = 0 (``"logsnr"``, ``"power"`` with ``rho``,
    ``"uniform"``); ``cfg``: ``"reference"`` (DynamicCFG with the shipped step index), ``"loop"``
    (DynamicCFG on the loop counter) or ``"level"`` (the reference's 50 scales carried by noise
    level, :func:`~cogsample.pipeline.options.level_guidance`); ``interval``: the
    guidance interval's start (fraction of steps), 0 for none; ``skip_unit``: skip the uncond
    forward where the scale is exactly 1.
    """

    sampler: str
    grid: str = "logsnr"
    cfg: str = "loop"
    interval: float = 0.0
    skip_unit: bool = True
    rho: float = 2.0
    options: tuple[tuple[str, Any], ...] = ()
    scale: float = SCALE

    @property
    def name(self) -> str:
        parts = [self.sampler, f"power{self.rho:g}" if self.grid == "power" else self.grid]
        parts.append(f"cfg-{self.cfg}")
        if self.interval:
            parts.append(f"interval{self.interval:g}")
        if self.skip_unit:
            parts.append("skip1")
        if self.scale != SCALE:
            parts.append(f"scale{self.scale:g}")
        parts += [f"{k}={v}" for k, v in self.options]
        return "/".join(parts)

    def schedule(self) -> Schedule:
        if self.grid == "reference":
            return ZeroSNRDDPM(1.0)
        # sigma-space samplers cannot start at alpha = 0 (infinite sigma): one step below it
        t_max = 998 if get_sampler(self.sampler).space == "sigma" else None
        return SpacedDDPM(ZeroSNRDDPM(1.0), self.grid, self.rho, t_max=t_max)

    def guidance(self, steps: int) -> Guidance:
        g: Guidance = DynamicCFG(self.scale, EXP, steps, "reference" if self.cfg == "reference" else "loop")
        if self.cfg == "level":
            from ..pipeline.options import level_guidance

            g = level_guidance(DynamicCFG(self.scale, EXP, steps), ZeroSNRDDPM(1.0), "sat")
        return GuidanceInterval(g, self.interval, 1.0) if self.interval else g

    def config(self, steps: int) -> SamplingConfig:
        return SamplingConfig(
            sampler=self.sampler,
            steps=steps,
            schedule=self.schedule(),
            denoiser=DenoiserConfig(VideoScaling(), table=ZeroSNRDDPM(1.0)),
            guidance=self.guidance(steps),
            options=dict(self.options),
            skip_unit_cfg=self.skip_unit,
        )


def reference_default() -> Candidate:
    """CogVideoX-5B's shipped sampler: VPSDEDPMPP2M on the trailing grid, DynamicCFG as shipped."""
    return Candidate("vpsde_dpmpp_2m", grid="reference", cfg="reference", skip_unit=False)


def fast_candidate() -> tuple[Candidate, int]:
    """``--fast`` (:data:`cogsample.pipeline.pipeline.FAST`) as a bench candidate and its step count."""
    from ..pipeline.options import FAST

    start = FAST["cfg_interval"][0] if FAST.get("cfg_interval") else 0.0
    cand = Candidate(
        FAST["sampler"],
        grid=FAST["grid"],
        cfg=FAST["cfg_index"],
        interval=start,
        skip_unit=FAST.get("skip_unit_cfg", False),
    )
    return cand, FAST["steps"]


@dataclass
class Env:
    """Everything shared by the runs of one setup: the network, the noise, the true mixture."""

    setup: Setup
    network: Any  # the model's network (core protocol)
    cond: Conditioning
    x_t: Tensor  # the initial unit noise, (N, T, C, h, w)
    mu: Tensor  # (K, d) float64
    log_w: Tensor  # (N, K) the true conditional log weights (-inf: not allowed)
    prompt_of: list[int]
    ode: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def build(cls, setup: Setup) -> Env:
        if setup.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}; got {setup.model!r}")
        prompt_of = prompt_rows(setup)
        shape = latent_shape(len(prompt_of), setup.frames, setup.height, setup.width)
        x_t = initial_noise(setup.seed, shape)
        _, t, _, h, w = shape
        prompts = [setup.prompts[p] for p in prompt_of]
        if setup.model == "builtin":
            network: Any = MixtureNetwork(CLIPS, setup.tau)
            weights = torch.tensor([match_prompt(p) for p in prompts], dtype=torch.float64)
            context = weights.to(torch.float32).unsqueeze(1)
        else:
            from ..models.family import FAMILY, family_weights

            network = MixtureNetwork(FAMILY, setup.tau)
            weights = torch.tensor([family_weights(p) for p in prompts], dtype=torch.float64)
            context = weights.to(torch.float32).unsqueeze(1)
        mu = network.means(t, h, w).mu  # the exact model's clip latents score the trained one's samples
        if setup.model == "builtin-trained":
            from ..models.trained import TrainedModel

            trained = TrainedModel() if setup.weights is None else TrainedModel(weights=setup.weights)
            trained.check_size(setup.frames, setup.height, setup.width)
            network, context = trained.network, trained.encode_prompts(prompts)
        return cls(setup, network, Conditioning(context=context), x_t, mu, weights.log(), prompt_of)


def prompt_rows(setup: Setup) -> list[int]:
    """Each sample row's prompt index: ``setup.seeds`` rows per prompt, prompt after prompt."""
    return [p for p in range(len(setup.prompts)) for _ in range(setup.seeds)]


def _metrics(env: Env, x: Tensor) -> dict[str, float]:
    """The figures of the module docstring for final latents ``x``."""
    tau, mu = env.setup.tau, env.mu
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    d = flat.shape[1]
    dist2 = sq_distances(flat, mu)
    nearest, near2, allowed = nearest_clip(dist2, env.log_w)
    v = near2 / (d * tau**2)
    kl = 0.5 * (v - 1 - v.log())
    log_n = -dist2 / (2 * tau**2) - 0.5 * d * math.log(2 * math.pi * tau**2)
    loglik = torch.logsumexp(env.log_w + log_n, dim=1) / d
    tv = []
    for p in range(len(env.setup.prompts)):
        rows = [i for i, q in enumerate(env.prompt_of) if q == p]
        freq = torch.bincount(nearest[rows], minlength=mu.shape[0]).double() / len(rows)
        tv.append(0.5 * float((freq - env.log_w[rows[0]].exp()).abs().sum()))
    return {
        "on_prompt": float(allowed.double().mean()),
        "kl": float(kl.mean()),
        "var_ratio": float(v.mean()),
        "loglik": float(loglik.mean()),
        "mode_tv": sum(tv) / len(tv),
    }


def mode_tv_floor(env: Env, draws: int = 2000) -> dict[str, float]:
    """``mode_tv`` of an exact sampler (multinomial draws from ``w`` of the same sizes): its mean
    and 90th percentile over ``draws`` repetitions."""
    gen = torch.Generator().manual_seed(0)
    total = torch.zeros(draws, dtype=torch.float64)
    for p in range(len(env.setup.prompts)):
        w = env.log_w[env.prompt_of.index(p)].exp()
        n = env.prompt_of.count(p)
        picks = torch.multinomial(w.expand(draws, -1), n, replacement=True, generator=gen)
        freq = torch.nn.functional.one_hot(picks, w.numel()).double().mean(1)
        total += 0.5 * (freq - w).abs().sum(1)
    total /= len(env.setup.prompts)
    return {"mean": float(total.mean()), "p90": float(total.quantile(0.9))}


def evaluate(env: Env, cand: Candidate, steps: int, *, ode_steps: int = 0) -> dict[str, Any]:
    """Run ``cand`` at ``steps`` on every sample of ``env`` and score it; ``ode_steps`` > 0 adds
    ``ode_error`` against the same configuration at that many steps (deterministic samplers)."""
    config = cand.config(steps)
    spec = config.spec
    model, grid = build_model(env.network, env.x_t, env.cond, config)
    noise = sample_noise(env.setup.seed, env.x_t.shape[0])
    x, seconds = timed_sample(config, model, env.x_t, grid, noise)
    out: dict[str, Any] = {"steps": steps, "forwards": model.forwards, "seconds": seconds, **_metrics(env, x)}
    if ode_steps and not spec.stochastic:
        ref = env.ode.get(cand.name)
        if ref is None:
            ref_config = cand.config(ode_steps)
            ref_model, ref_grid = build_model(env.network, env.x_t, env.cond, ref_config)
            ref = env.ode[cand.name] = spec.fn(ref_model, env.x_t, ref_grid, noise, **ref_config.options)
        err = (x.double() - ref.double()).pow(2).mean().sqrt() / env.setup.tau
        out["ode_error"] = float(err)
    return out
