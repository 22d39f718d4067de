"""PNG plots of a bench run (matplotlib, headless)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["plot_long_video", "plot_loss", "plot_ode_error", "plot_quality"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(results: list[dict[str, Any]], key: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in results:
        if key in r:
            out[r["candidate"]].append((r["forwards"], r[key]))
    return {k: sorted(v) for k, v in out.items()}


def _save(fig: Any, path: Path) -> Path:
    """``fig`` as a PNG at ``path`` (written beside it, then renamed: never half a file), then closed."""
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    tmp.replace(path)
    _pyplot().close(fig)
    return path


def plot_quality(quality: dict[str, Any], path: Path) -> Path:
    """Within-mode KL and mode TV against forwards per sample, one line per configuration, the
    reference default at 50 steps as a star and its level as a dashed line."""
    plt = _pyplot()
    ref, results = quality["reference"], quality["results"]
    fig, axes = plt.subplots(1, 2, figsize=(15, 6))
    for ax in axes:
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
    for ax, key, label in ((axes[0], "kl", "within-mode KL per dimension (nats)"), (axes[1], "mode_tv", "mode TV")):
        for name, pts in _series(results, key).items():
            xs, ys = zip(*pts, strict=True)
            style = "--" if "/reference/" in name else "-"
            ax.plot(xs, ys, style, marker="o", ms=3, lw=1, label=name)
        ax.plot([ref["forwards"]], [ref[key]], "k*", ms=14, label="reference default, 50 steps")
        ax.axhline(ref[key], color="k", ls=":", lw=1)
        if key == "mode_tv":
            ax.axhline(quality["mode_tv_floor"]["p90"], color="grey", ls="-.", lw=1, label="exact sampler (90th pct.)")
        else:
            ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlabel("network forwards per sample")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    best = quality.get("best")
    title = "quality per forward on the built-in exact model"
    if best:
        title += f": {best['candidate']} matches the reference in {best['forwards']} forwards (reference: 100)"
    fig.suptitle(title, fontsize=10)
    axes[1].legend(fontsize=6, loc="upper right", ncol=1)
    return _save(fig, path)


def plot_ode_error(quality: dict[str, Any], path: Path) -> Path:
    """Deterministic samplers: RMS distance (in tau) from their many-step solution, vs forwards."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)
    for name, pts in _series(quality["results"], "ode_error").items():
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="o", ms=3, lw=1, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network forwards per sample")
    ax.set_ylabel("RMS error vs many-step solution (units of tau)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("deterministic samplers: error against the ODE solution from the same noise", fontsize=10)
    return _save(fig, path)


def plot_long_video(section: dict[str, Any], path: Path) -> Path:
    """The long-video section: ``on_clip``, ``within_clip`` and ``seam_agreement`` per sampled
    configuration, one bar per seed set and sampler (the reference default, then ``--fast``), with
    the ``data`` (true samples) and ``native`` (the model at its own length) rows' figures, averaged
    over the seed sets, as reference lines."""
    plt = _pyplot()
    runs = section["runs"]
    fast = section.get("fast", {})
    bars = [(f"seed set {run['seed']}", run) for run in runs]
    bars += [(f"--fast, seed set {run['seed']}", run) for run in fast.get("runs", [])]
    refs = ("data", "native")
    names = [r["config"] for r in runs[0]["rows"] if r["config"] not in refs]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    width = 0.8 / len(bars)
    keys = (
        ("on_clip", "on_clip (nearest long clip allowed)"),
        ("within_clip", "within_clip (RMS distance to nearest clip / tau)"),
        ("seam_agreement", "seam_agreement (neighbouring segments, same clip)"),
    )
    for ax, (key, label) in zip(axes, keys, strict=True):
        for i, (label_i, run) in enumerate(bars):
            rows = {r["config"]: r for r in run["rows"]}
            ys = [rows[n][key] if rows[n][key] is not None else float("nan") for n in names]
            xs = [j + (i - (len(bars) - 1) / 2) * width for j in range(len(names))]
            ax.bar(xs, ys, width, label=label_i, hatch="//" if label_i.startswith("--fast") else None)
        for ref, style in zip(refs, ("-", "--"), strict=True):
            vals = [r[key] for run in runs for r in run["rows"] if r["config"] == ref and r[key] is not None]
            if vals:
                ax.axhline(sum(vals) / len(vals), color="k", ls=style, lw=1, label=f"{ref} (mean of seed sets)")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(label, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        if key != "within_clip":  # shares: room above 1 for the legend
            ax.set_ylim(0, 1.3)
    axes[0].legend(fontsize=7, loc="upper center", ncol=2)
    su, rec = section["setup"], section["recommendation"]
    fig.suptitle(
        f"{su['model']} at {su['frames']} frames ({su['latent_frames']} latent, native {su['native_latent_frames']}), "
        f"{su['samples']} samples x {len(runs)} seed sets, {su['sampler']} {su['steps']} steps"
        + (f" and --fast ({fast['steps']} steps)" if fast else "")
        + f": recommendation {rec['config'] or 'none'}",
        fontsize=10,
    )
    return _save(fig, path)


def plot_loss(record: dict[str, Any], path: Path) -> Path:
    """The training loss (mean over each logged window) against steps, log scale, with the wall time."""
    plt = _pyplot()
    curve = record["curve"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot([c["step"] for c in curve], [c["loss"] for c in curve], lw=1.2)
    ax.axhline(record["eval_loss"], color="gray", ls="--", lw=0.8, label=f"held-out loss {record['eval_loss']:.4f}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("v-prediction MSE")
    cfg = record["config"]
    ax.set_title(
        f"train-tiny: {record['parameters'] / 1e6:.2f}M parameters, batch {cfg['batch']}, "
        f"{record['seconds'] / 60:.1f} min on {record['threads']} threads",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
