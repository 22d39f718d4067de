"""PNG plots of a bench run (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_caches", "plot_distance", "plot_guiders", "plot_long_video", "plot_loss", "plot_truth"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _star(ax: Any, x: float, ci: list[float], label: str) -> None:
    """A reference point: a star at ``ci[0]`` with its interval ``ci[1]..ci[2]``."""
    ax.errorbar([x], [ci[0]], yerr=[[ci[0] - ci[1]], [ci[2] - ci[0]]], fmt="k*", ms=12, capsize=3, label=label)


def _save(fig: Any, path: Path) -> Path:
    """``fig`` as a PNG at ``path`` (written beside it, then renamed: never half a file), then closed."""
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    tmp.replace(path)
    _pyplot().close(fig)
    return path


def plot_distance(presets: dict[str, Any], path: Path) -> Path:
    """Per model (one panel each) and seed set (solid: the first, dashed: the second): W2 distance
    from the converged limit of the reference's guidance definition against forwards per sample,
    one line per solver with its 95% band; the reference default as a star, its level dotted."""
    plt = _pyplot()
    models = list(presets["solver"])
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 5.2), squeeze=False)
    colors = dict(zip(sorted({r["solver"] for ms in presets["solver"].values() for m in ms for r in m["rows"]}),
                      plt.cm.tab10.colors, strict=False))  # fmt: skip
    for ax, model in zip(axes[0], models, strict=True):
        for k, m in enumerate(presets["solver"][model]):
            style = "-" if k == 0 else "--"
            for name, color in colors.items():
                rows = sorted((r for r in m["rows"] if r["solver"] == name), key=lambda r: r["forwards"])
                xs = [r["forwards"] for r in rows]
                ax.plot(xs, [r["distance"][0] for r in rows], style, color=color, marker="o", ms=3, lw=1,
                        label=f"{name} (seed {m['seed']})")  # fmt: skip
                ax.fill_between(xs, [r["distance"][1] for r in rows], [r["distance"][2] for r in rows], color=color,
                                alpha=0.08)  # fmt: skip
            ref = m["reference"]
            _star(ax, ref["forwards"], ref["distance"], f"reference default, 50 steps (seed {m['seed']})")
            ax.axhline(ref["distance"][0], color="k", ls=":" if k == 0 else "-.", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("network forwards per sample")
        ax.set_ylabel("W2 distance from the converged limit (units of tau)")
        ax.set_title(f"{model}: {len(presets['solver'][model])} seed sets x "
                     f"{presets['solver'][model][0]['samples']} samples", fontsize=9)  # fmt: skip
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=6, loc="upper right")
    choice = presets["fast"].get("choice")
    pick = (
        f"--fast = {choice['solver']} at {choice['steps']} steps ({choice['forwards']} forwards)" if choice else "none"
    )
    fig.suptitle(f"distance from the converged limit at equal guidance ({presets['definition']}, the reference's "
                 f"DynamicCFG scales by noise level); {pick}", fontsize=10)  # fmt: skip
    return _save(fig, path)


def plot_truth(presets: dict[str, Any], path: Path) -> Path:
    """The trained model: the share of samples whose nearest true clip has the caption's colour,
    shape, motion and background, against forwards (the ``--fast`` solver at each step count, 95%
    bands), the reference default as stars with its interval."""
    from .truth import ATTRIBUTES

    plt = _pyplot()
    truth = presets["truth"]
    curve, ref = truth.get("curve", []), truth["reference"]
    fig, axes = plt.subplots(1, len(ATTRIBUTES), figsize=(18, 4.6), sharey=True)
    for ax, attr in zip(axes, ATTRIBUTES, strict=True):
        xs = [c["forwards"] for c in curve]
        ax.plot(xs, [c[attr][0] for c in curve], "o-", ms=3, lw=1, label="--fast's solver")
        ax.fill_between(xs, [c[attr][1] for c in curve], [c[attr][2] for c in curve], alpha=0.15)
        _star(ax, ref["forwards"], ref[attr], "reference default, 50 steps")
        ax.axhspan(ref[attr][1], ref[attr][2], color="k", alpha=0.06)
        ax.set_xscale("log")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("network forwards per sample")
        ax.set_title(f"nearest true clip has the caption's {attr}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"share of samples ({ref['samples']} per point)")
    axes[0].legend(fontsize=7, loc="lower right")
    choice = presets["fast"].get("choice") or {}
    fig.suptitle(f"builtin-trained: prompt adherence against forwards ({choice.get('solver', '?')}, the reference's "
                 f"guidance by noise level) and the reference default", fontsize=10)  # fmt: skip
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
    """The training loss (mean over each logged window) and the EMA weights' held-out loss at each
    checkpoint against steps, log scale, with the wall time."""
    plt = _pyplot()
    curve = record["curve"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot([c["step"] for c in curve], [c["loss"] for c in curve], lw=1.2, label="training batches")
    evals = record.get("evals", [])
    if evals:
        ax.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], lw=1.2, label="EMA weights, held out")
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


def plot_caches(runs: dict[str, dict[str, Any]], path: Path) -> Path:
    """Per sampler (one panel each: ``runs`` maps a title to a ``bench.caches`` json): each cache
    setting's block work (share of the uncached run's block rows) against its realism (distance
    to the nearest true clip, with its 95% interval), one colour per kind; the uncached run a star."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(6.2 * len(runs), 4.4), squeeze=False)
    colours: dict[str, Any] = {}
    for ax, (title, data) in zip(axes[0], runs.items(), strict=True):
        rows = data["rows"]
        none = rows["none"]
        for name, r in rows.items():
            if name == "none":
                continue
            kind = r["kind"]
            colours.setdefault(kind, f"C{len(colours)}")
            x, (m, lo, hi) = r["block_rows"] / none["block_rows"], r["realism"]
            ax.errorbar([x], [m], yerr=[[m - lo], [hi - m]], fmt="o", color=colours[kind], ms=5, capsize=2)
        _star(ax, 1.0, none["realism"], "no cache")
        for kind, c in colours.items():
            ax.plot([], [], "o", color=c, label=kind)
        ax.set(title=title, xlabel="block work (share of the uncached run)", ylabel="realism (lower is better)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def plot_guiders(data: dict[str, Any], path: Path, model: str = "builtin-trained") -> Path:
    """Per guidance rule (one line each) over the scales: colour and motion adherence and realism
    on ``model`` (``bench.guiders`` json), with 95% intervals."""
    plt = _pyplot()
    panels = (("color", "colour adherence"), ("motion", "motion adherence"), ("realism", "realism (lower is better)"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    rules = data["settings"]["rules"]
    for n, rule in enumerate(rules):
        rows = [r for key, r in sorted(data["rows"].items()) if key.startswith(f"{model}/{rule}/") and r.get("truth")]
        rows.sort(key=lambda r: r["scale"])
        scales = [r["scale"] + (n - len(rules) / 2) * 0.06 for r in rows]  # side by side, readable
        for ax, (key, label) in zip(axes, panels, strict=True):
            vals = [r["truth"][key] for r in rows]
            m = [v[0] for v in vals]
            err = [[v[0] - v[1] for v in vals], [v[2] - v[0] for v in vals]]
            ax.errorbar(scales, m, yerr=err, fmt="-o", ms=4, capsize=2, label=rule, color=f"C{n}")
            ax.set(xlabel="guidance scale", ylabel=label)
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"guidance rules on {model}, --fast's solver (20 steps), the reference's guidance definition")
    return _save(fig, path)
