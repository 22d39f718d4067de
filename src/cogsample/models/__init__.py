"""Models the pipeline can drive: the built-in exact model, the trained built-in model,
diffusers-format CogVideoX folders, and any callable with the network protocol
(:class:`CallableNetwork`).

One registry: :func:`inspect` gives a model's :class:`ModelInfo` (its facts and size rules) from
its name or folder, reading configs only; :func:`load` loads it. ``cogsample.models.cogvideox``
imports diffusers and transformers where it loads; nothing here imports a model module until
that model is asked for, so the built-in model runs with torch alone.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .base import CallableNetwork, ModelInfo, VideoModel
from .hook_caches import check_cache, parse_cache  # torch alone: diffusers loads with the hooks

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from .lora import LoraFile

__all__ = [
    "BUILTIN",
    "EXACT",
    "EXTRAS",
    "CallableNetwork",
    "ModelInfo",
    "VideoModel",
    "check_cache",
    "check_installed",
    "check_loras",
    "extra_for",
    "inspect",
    "installed",
    "is_builtin",
    "load",
    "parse_cache",
    "requirements",
    "untiled_decode_estimate",
]

#: The built-in models, by name (everything else names a CogVideoX folder).
BUILTIN = ("builtin", "builtin-i2v", "builtin-trained", "builtin-trained-i2v")
#: The built-in models whose network is exact (no transformer).
EXACT = ("builtin", "builtin-i2v")


def is_builtin(name: str) -> bool:
    """Whether ``name`` is one of :data:`BUILTIN` (else a CogVideoX folder)."""
    return name in BUILTIN


#: The optional modules (top-level names) and the ``cogsample[...]`` extra that installs each.
EXTRAS = {
    "diffusers": "cogvideox",
    "transformers": "cogvideox",
    "sentencepiece": "cogvideox",
    "google": "cogvideox",  # protobuf
    "accelerate": "cogvideox",
    "matplotlib": "bench",
    "ray": "ray",
    "peft": "lora",
    "torchao": "quantize",
    "cache_dit": "cachedit",
}


def extra_for(module: str) -> str | None:
    """The extra that installs ``module`` (a dotted name is taken by its top-level package)."""
    return EXTRAS.get(module.split(".")[0])


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (found, and not blocked by ``sys.modules[name] = None``),
    without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: loaded without a spec (it is there)
        return sys.modules.get(module) is not None


def requirements(name: str, profile: str = "sat") -> list[str]:
    """The optional modules model ``name`` needs in ``profile``: none for the built-in exact model
    (diffusers' image preprocessing for ``builtin-i2v`` in the ``diffusers`` profile), diffusers for
    the trained one (a diffusers transformer), diffusers, transformers and, for a tokenizer without
    ``tokenizer.json``, sentencepiece for a CogVideoX folder."""
    if name in EXACT:
        return ["diffusers"] if profile == "diffusers" and name.endswith("-i2v") else []
    if is_builtin(name):
        return ["diffusers"]
    need = ["diffusers", "transformers"]
    if not (Path(name).expanduser() / "tokenizer" / "tokenizer.json").is_file():
        need.append("sentencepiece")  # T5's slow tokenizer (spiece.model)
    return need


def check_installed(name: str, profile: str = "sat") -> None:
    """``ValueError``, one line naming the missing modules and the extra that installs them, where
    model ``name`` needs a module that is not installed (:func:`requirements`)."""
    missing = [m for m in requirements(name, profile) if not installed(m)]
    if missing:
        what = f"model {name!r}" + (f" in profile {profile}" if name in EXACT else "")
        names = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
        extras = sorted({extra_for(m) or "cogvideox" for m in missing})
        raise ValueError(
            f"{what} needs {names}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            + " ".join(f"pip install 'cogsample[{e}]'" for e in extras)
        )


def inspect(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of model ``name`` (one of :data:`BUILTIN` or a CogVideoX folder) from
    its configs alone (no weights); ``ValueError`` for a folder that is missing or not CogVideoX."""
    if name in EXACT:
        from .builtin import builtin_info

        return builtin_info(i2v=name == "builtin-i2v")
    if is_builtin(name):
        from .trained import trained_info

        return trained_info(i2v=name.endswith("-i2v"))
    if not isinstance(name, (str, Path)) or not str(name) or not Path(name).expanduser().exists():
        raise ValueError(
            f"model {name!r} is neither a built-in model ({', '.join(BUILTIN)}) nor an existing path; "
            "a path must be a diffusers-format CogVideoX folder (with model_index.json)"
        )
    try:
        from .cogvideox import inspect_folder
    except ImportError as e:
        raise ValueError(
            f"model {name!r} is a CogVideoX folder, which needs diffusers and transformers: "
            f"pip install 'cogsample[cogvideox]' ({e})"
        ) from e
    try:
        return inspect_folder(name)
    except FileNotFoundError as e:
        raise ValueError(f"model {name!r}: {e}") from e


def check_loras(name: str, pairs: Sequence[tuple[str, float]]) -> tuple[LoraFile, ...]:
    """Each ``(path, weight)`` checked from its file's header against model ``name``'s transformer
    (its config alone; :func:`cogsample.models.lora.read_lora`): ``ValueError`` before any weight
    loads, naming the file, and for another architecture or size the first key and both shapes."""
    if not pairs:
        return ()
    if name in EXACT:
        raise ValueError(
            f"--lora adapts a transformer; model {name!r} is the exact closed-form model, which has none: use "
            "builtin-trained, builtin-trained-i2v or a CogVideoX folder"
        )
    if not installed("peft"):
        raise ValueError("--lora loads adapters through peft, which is not installed: pip install 'cogsample[lora]'")
    from .lora import module_shapes, read_lora
    from .quantize import quiet_torchao

    quiet_torchao()  # module_shapes imports diffusers, which imports an installed torchao

    if is_builtin(name):
        from .trained import WEIGHTS

        config_path = WEIGHTS / "config.json"
    else:
        config_path = Path(name).expanduser() / "transformer" / "config.json"
    shapes = module_shapes(json.loads(config_path.read_text()))
    return tuple(read_lora(path, weight, shapes) for path, weight in pairs)


def load(
    name: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    profile: str = "sat",
    offload: str = "none",
    quantize: str = "none",
) -> VideoModel:
    """Load model ``name`` (one of :data:`BUILTIN` or a CogVideoX folder) onto ``device``, with the
    ``profile``'s (``sat`` or ``diffusers``) image-latent scaling, the ``offload`` mode and the
    transformer's ``quantize`` mode (:mod:`cogsample.models.quantize`; checked before any weight loads)."""
    from .quantize import check_quantize, quiet_torchao

    check_quantize(quantize, device, model=name, has_transformer=name not in EXACT)
    if name in EXACT:
        from .builtin import BuiltinModel

        return BuiltinModel(i2v=name == "builtin-i2v", device=device, dtype=dtype)
    quiet_torchao()  # diffusers imports an installed torchao as it loads: without its notes
    if is_builtin(name):
        from .trained import TrainedModel

        return TrainedModel(i2v=name.endswith("-i2v"), device=device, dtype=dtype, quantize=quantize)
    from .cogvideox import load_cogvideox

    # SAT leaves 1.5's image latent unscaled where diffusers divides it by the scaling factor
    scaling = "diffusers" if profile == "diffusers" else "sat"
    return load_cogvideox(name, dtype=dtype, device=device, image_scaling=scaling, offload=offload, quantize=quantize)


def untiled_decode_estimate(info: ModelInfo, shape: Sequence[int], reference: str, esize: int) -> int | None:
    """Peak memory (bytes) of an untiled VAE decode of latents ``shape`` ``(B, T, C, h, w)`` with
    ``esize``-byte elements, as ``reference`` (``sat`` or ``diffusers``) decodes them, for the model
    of ``info`` (from :func:`inspect`), from its configs alone; None where nothing was measured: the
    built-in models (their block VAE), a CogVideoX folder whose VAE is not the released one."""
    if "vae_block_out_channels" not in info.extra:  # a CogVideoX folder's VAE config: the built-in models have none
        return None
    from .cogvideox import planned_decode_estimate

    return planned_decode_estimate(info, shape, reference, esize)
