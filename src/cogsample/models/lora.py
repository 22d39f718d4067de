"""LoRA adapters on a diffusers CogVideoX transformer, through diffusers' and peft's own loaders.

A file is the diffusers/peft CogVideoX format: safetensors with ``transformer.<module>.lora_A.weight``
``(r, in)`` and ``...lora_B.weight`` ``(out, r)`` (the ``transformer.`` prefix may be absent), and
optionally ``<module>.alpha`` scalars or diffusers' ``lora_adapter_metadata`` (peft's LoraConfig).

**Scale rule.** A module's weight becomes ``W + WEIGHT * (alpha / r) * B @ A``: peft's scaling with
the file's alpha (per module where the file gives several; ``alpha = r`` where it gives none, so
WEIGHT 1 adds ``B @ A`` exactly as written). WEIGHT 0 leaves the module out: the base model, bit
for bit. Several adapters add up. Unfused (default) the adapters run beside the frozen weights and
a batch may switch them per video; fused (``--lora-fuse``) they are merged into the weights once.

Every file is checked from its header alone (:func:`read_lora`) against the model's module shapes
(:func:`module_shapes`, the transformer built on the meta device from its config), before any
weight is read.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["Adapters", "LoraFile", "describe", "lora_pairs", "module_shapes", "parse_lora", "read_lora", "save_lora"]

_PREFIX = "transformer."
_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A|lora_B)\.weight$")


@dataclass(frozen=True)
class LoraFile:
    """A checked LoRA file: its resolved ``path``, content ``sha256``, the ``weight`` it is used at,
    its rank(s) and alpha(s) as found, and how many modules it adapts."""

    path: str
    sha256: str
    weight: float
    rank: int
    alpha: float | None
    modules: int

    def record(self) -> dict[str, Any]:
        """What a video's JSON says of it (and, without the path, what its name hashes)."""
        return {"path": self.path, "sha256": self.sha256, "weight": self.weight, "rank": self.rank, "alpha": self.alpha}


def parse_lora(text: str) -> tuple[str, float]:
    """``"PATH[:WEIGHT]"`` -> ``(PATH, WEIGHT)`` (WEIGHT 1 when absent). The text after the last
    ``:`` is a weight only when it reads as a number, so paths with colons still work."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"--lora takes PATH[:WEIGHT], got {text!r}")
    path, sep, tail = text.rpartition(":")
    if sep and path:
        try:
            weight = float(tail)
        except ValueError:
            return text, 1.0
        check_weight(weight, text)
        return path, weight
    return text, 1.0


def lora_pairs(value: Any) -> tuple[tuple[str, float], ...]:
    """``--lora`` / JSONL ``lora`` / ``Pipeline(lora=...)`` as ``((path, weight), ...)``: a
    ``"PATH[:WEIGHT]"`` text, a ``(path, weight)`` pair, a ``{"path": ..., "weight": ...}`` object,
    or a list of these; None or empty: no LoRA."""
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return ()
    if isinstance(value, (str, Path, dict)) or (
        isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], (int, float))
    ):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"lora must be 'PATH[:WEIGHT]' or a list of them, got {type(value).__name__}")
    pairs = []
    for item in value:
        if isinstance(item, Path):
            item = (str(item), 1.0)
        if isinstance(item, str):
            item = parse_lora(item)
        elif isinstance(item, dict):
            unknown = set(item) - {"path", "weight"}
            if "path" not in item or unknown:
                raise ValueError(f"lora object takes 'path' and optionally 'weight', got keys {sorted(item)}")
            item = (item["path"], item.get("weight", 1.0))
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], (str, Path))):
            raise ValueError(f"lora entry must be 'PATH[:WEIGHT]', (path, weight) or an object, got {item!r}")
        pairs.append((str(item[0]), check_weight(item[1], str(item[0]))))
    return tuple(pairs)


def check_weight(weight: Any, what: str) -> float:
    ok = not isinstance(weight, bool) and isinstance(weight, (int, float)) and math.isfinite(weight)
    if not ok:
        raise ValueError(f"--lora {what}: WEIGHT must be a finite number (1: as trained, 0: off), got {weight!r}")
    return float(weight)


def module_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """``{module name: (in_features, out_features)}`` of every Linear of the CogVideoX transformer
    ``config`` describes, built on the meta device (no memory, no weights)."""
    from diffusers import CogVideoXTransformer3DModel

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        model = CogVideoXTransformer3DModel.from_config(cfg)
    return {n: (m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _header(path: Path, label: str) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for a file that is not one
        raise ValueError(f"--lora {label}: not a safetensors file ({type(e).__name__}: {e})") from e


def _pairs(shapes: Mapping[str, tuple[int, ...]], label: str) -> dict[str, dict[str, tuple[int, ...]]]:
    """``{module: {"lora_A": shape, "lora_B": shape}}``, names without the ``transformer.`` prefix."""
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        m = _KEY.match(key.removeprefix(_PREFIX))
        if m:
            pairs.setdefault(m["module"], {})[m["part"]] = shape
    if not pairs:
        first = ", ".join(list(shapes)[:3]) or "none"
        raise ValueError(
            f"--lora {label}: not a LoRA (no '<module>.lora_A.weight' / '.lora_B.weight' keys, the "
            f"diffusers/peft format); its first keys: {first}"
        )
    for module, parts in pairs.items():
        if set(parts) != {"lora_A", "lora_B"}:
            raise ValueError(f"--lora {label}: module {module} has {sorted(parts)} but a LoRA needs lora_A and lora_B")
    return pairs


def _check_against(
    pairs: Mapping[str, Mapping[str, tuple[int, ...]]], model: Mapping[str, tuple[int, int]], label: str
):
    """The first key whose module the model lacks, or whose shape is not the module's, is named."""
    for module, parts in pairs.items():
        a, b = parts["lora_A"], parts["lora_B"]
        if module not in model:
            raise ValueError(
                f"--lora {label}: key {_PREFIX}{module}.lora_A.weight adapts {module}, which this model does not "
                f"have: the LoRA is for another architecture"
            )
        fin, fout = model[module]
        if len(a) != 2 or len(b) != 2 or a[1] != fin or b[0] != fout or a[0] != b[1]:
            raise ValueError(
                f"--lora {label}: key {_PREFIX}{module}.lora_A.weight has shape {a} and .lora_B.weight {b}, but "
                f"this model's {module} maps {fin} -> {fout} features (needs (r, {fin}) and ({fout}, r)): the "
                f"LoRA is for another model size"
            )


def read_lora(text_or_path: str | Path, weight: float, shapes: Mapping[str, tuple[int, int]]) -> LoraFile:
    """Check a LoRA file from its header against the model's ``shapes`` (:func:`module_shapes`);
    ``ValueError`` naming the file and, for a mismatch, the first key and both shapes."""
    label = str(text_or_path)
    path = Path(text_or_path).expanduser()
    if not path.is_file():
        raise ValueError(f"--lora {label}: no such file")
    check_weight(weight, label)
    keys, _meta = _header(path, label)
    pairs = _pairs(keys, label)
    _check_against(pairs, shapes, label)
    ranks = sorted({p["lora_A"][0] for p in pairs.values()})
    alphas = sorted({a for a in _alphas_from_header(path, keys).values()})
    return LoraFile(
        path=str(path.resolve()),
        sha256=_sha256(path),
        weight=float(weight),
        rank=ranks[0] if len(ranks) == 1 else max(ranks),
        alpha=alphas[0] if len(alphas) == 1 else (None if not alphas else max(alphas)),
        modules=len(pairs),
    )


def _alphas_from_header(path: Path, keys: Mapping[str, tuple[int, ...]]) -> dict[str, float]:
    names = [k for k in keys if k.endswith(".alpha")]
    if not names:
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: float(f.get_tensor(k).float().item()) for k in names}


def _load_state(lora: LoraFile) -> tuple[dict[str, torch.Tensor], dict[str, float] | None, dict[str, Any] | None]:
    """The file through diffusers' CogVideoX loader: ``(state dict with the transformer. prefix,
    network alphas or None, peft metadata or None)``."""
    from diffusers.loaders import CogVideoXLoraLoaderMixin

    state, metadata = CogVideoXLoraLoaderMixin.lora_state_dict(lora.path, return_lora_metadata=True)
    state = {k if k.startswith(_PREFIX) else _PREFIX + k: v for k, v in state.items()}
    alphas = {k: float(state.pop(k).float().item()) for k in [k for k in state if k.endswith(".alpha")]}
    if alphas:
        metadata = None  # the file's alphas rule (diffusers takes one or the other)
    elif metadata is not None and not any(k.startswith(_PREFIX) for k in metadata):
        metadata = {_PREFIX + k: v for k, v in metadata.items()}
    return state, alphas or None, metadata


class Adapters:
    """The LoRAs loaded into one diffusers transformer: each file once (by content hash), then a
    set of them activated per video (:meth:`use`) or merged for good (:meth:`fuse`)."""

    def __init__(self, transformer: Any):
        self.transformer = transformer
        self.names: dict[str, str] = {}  # sha256 -> adapter name
        self.fused: tuple[tuple[str, float], ...] | None = None

    def _load(self, lora: LoraFile) -> str:
        name = self.names.get(lora.sha256)
        if name is None:
            name = f"lora_{lora.sha256[:12]}"
            state, alphas, metadata = _load_state(lora)
            # peft initialises the new layers (then overwrites them) from torch's global generator,
            # which the sat profile's draws come from: leave it as it was
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")  # a second adapter
                # on torchao weights peft cannot merge; cogsample never merges there (--lora-fuse is refused)
                warnings.filterwarnings("ignore", message="TorchaoLoraLinear was instantiated")
                self.transformer.load_lora_adapter(
                    state, prefix="transformer", adapter_name=name, network_alphas=alphas, metadata=metadata
                )
            self.names[lora.sha256] = name
        return name

    def use(self, loras: Sequence[LoraFile]) -> None:
        """Run the next calls with ``loras`` at their weights (none, or all at weight 0: the base
        model's exact arithmetic). Fused, only the fused set is allowed."""
        wanted = tuple((x.sha256, x.weight) for x in loras)
        if self.fused is not None:
            if wanted != self.fused:
                raise ValueError(
                    "--lora-fuse merged the process's LoRAs into the weights: every video must use that same "
                    f"--lora set ({len(self.fused)} file(s)); this one asks for {len(wanted)} (use no --lora-fuse "
                    "to vary them per video)"
                )
            return
        active = [x for x in loras if x.weight != 0]
        if not active:
            if self.names:
                self.transformer.disable_lora()
            return
        names = [self._load(x) for x in active]
        self.transformer.enable_lora()
        self.transformer.set_adapters(names, [x.weight for x in active])

    def fuse(self, loras: Sequence[LoraFile]) -> None:
        """Merge ``loras`` at their weights into the transformer's weights and drop the adapters."""
        self.use(loras)
        active = [self.names[x.sha256] for x in loras if x.weight != 0]
        if active:
            self.transformer.fuse_lora(lora_scale=1.0, adapter_names=active)
            self.transformer.unload_lora()
        self.names = {}
        self.fused = tuple((x.sha256, x.weight) for x in loras)


def describe(loras: Sequence[LoraFile]) -> str:
    """One line for the run's header: each file's name, weight and hash."""
    return ", ".join(f"{Path(x.path).name}:{x.weight:g} ({x.sha256[:8]})" for x in loras)


def save_lora(path: str | Path, state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> None:
    """Write a LoRA in the diffusers CogVideoX format (``transformer.``-prefixed keys, the peft
    config as ``lora_adapter_metadata``), atomically."""
    from safetensors.torch import save_file

    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp")
    tensors = {(k if k.startswith(_PREFIX) else _PREFIX + k): v.detach().contiguous() for k, v in state.items()}
    # diffusers keeps a pipeline's adapter configs by component: the transformer's under its prefix
    config_json = json.dumps({_PREFIX + k: v for k, v in config.items()})
    save_file(tensors, str(tmp), metadata={"format": "pt", "lora_adapter_metadata": config_json})
    tmp.replace(out)
