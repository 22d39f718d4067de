"""Quantized transformer weights (``--quantize``), through torchao's ``quantize_``: nothing here
quantizes by hand.

A process option, like ``--dtype``: fixed when a model loads. It replaces the weights of the
transformer's ``nn.Linear`` layers (and nothing else: not the text encoder, not the VAE, not the
patch embedding's convolution) by torchao tensor subclasses:

* ``int8``: int8 weights, one scale per output channel, activations kept in the model's dtype
  (``Int8WeightOnlyConfig``); runs anywhere torch runs;
* ``int8-dynamic``: int8 weights and int8 activations quantized per token at each call
  (``Int8DynamicActivationInt8WeightConfig``); runs on the CPU and CUDA;
* ``fp8``: float8 (e4m3) weights, one scale per output channel (``Float8WeightOnlyConfig``); needs
  a CUDA GPU with compute capability >= 8.9 (Ada, Hopper and later), refused elsewhere.

Only models with a transformer take it: the trained built-in models and CogVideoX folders; the
exact built-in models (``builtin``, ``builtin-i2v``) compute their denoiser in closed form.
:func:`check_quantize` says all of this before any weight loads; :func:`quantize_transformer`
applies it. torchao is optional (``pip install 'cogsample[quantize]'``) and imported only here, with
its import-time noise (missing optional kernels, deprecation notes) silenced.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = [
    "FP8_CAPABILITY",
    "QUANTIZE",
    "check_quantize",
    "import_torchao",
    "is_quantized",
    "quantize_transformer",
    "quantized_linears",
    "quiet_torchao",
    "weight_bytes",
]

#: The ``--quantize`` modes; ``none`` leaves the weights as loaded.
QUANTIZE = ("none", "int8", "int8-dynamic", "fp8")
#: The CUDA compute capability fp8 needs (Ada Lovelace: 8.9; Hopper: 9.0).
FP8_CAPABILITY = (8, 9)
#: The loggers torchao's import writes through (its missing optional kernels, torch's pytree notes).
#: diffusers imports torchao itself when it loads a model, and warns where torchao lacks its old classes.
_NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer")


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    """Silence warnings and the :data:`_NOISY_LOGGERS` below ERROR while torchao imports."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _missing(mode: str) -> ValueError:
    return ValueError(f"--quantize {mode} needs torchao, which is not installed: pip install 'cogsample[quantize]'")


def import_torchao(mode: str = "int8") -> Any:
    """``torchao.quantization``, imported quietly; ``ValueError`` naming the extra where torchao is missing."""
    if not _installed("torchao"):
        raise _missing(mode)
    try:
        with _quiet_import():
            import torchao.quantization as tq
    except ImportError as e:
        raise ValueError(
            f"--quantize {mode}: torchao cannot be imported ({e}): pip install 'cogsample[quantize]'"
        ) from e
    return tq


def quiet_torchao() -> None:
    """Where torchao is installed, import it (and diffusers' torchao integration, which imports it
    when diffusers loads any model, ``--quantize none`` too) with their import-time notes silenced,
    so that a later import says nothing; a no-op without torchao, and after the first call."""
    global _QUIETED
    if _QUIETED or not _installed("torchao"):
        return
    _QUIETED = True
    with _quiet_import(), contextlib.suppress(Exception):
        importlib.import_module("torchao.quantization")
        if _installed("diffusers"):
            importlib.import_module("diffusers.quantizers.torchao.torchao_quantizer")


_QUIETED = False


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_quantize(
    mode: Any, device: torch.device | str = "cpu", *, model: str | None = None, has_transformer: bool = True
) -> None:
    """``ValueError`` naming ``--quantize``, the value and what is allowed, before any weight loads:
    a mode not in :data:`QUANTIZE`; a model without a transformer (``has_transformer`` False: the
    exact built-in models); ``fp8`` on anything but a CUDA GPU of compute capability >= 8.9;
    torchao not installed."""
    if not isinstance(mode, str) or mode not in QUANTIZE:
        raise ValueError(f"--quantize must be one of {', '.join(QUANTIZE)}; got {mode!r}")
    if mode == "none":
        return
    if not has_transformer:
        raise ValueError(
            f"--quantize {mode}: model {model!r} computes its denoiser exactly and has no transformer to quantize; "
            "use --quantize none, or a model with a transformer (builtin-trained, builtin-trained-i2v, "
            "a CogVideoX folder)"
        )
    if mode == "fp8":
        _check_fp8(torch.device(device))
    if not _installed("torchao"):
        raise _missing(mode)


def _check_fp8(device: torch.device) -> None:
    need = ".".join(map(str, FP8_CAPABILITY))
    if device.type != "cuda":
        raise ValueError(
            f"--quantize fp8 needs a CUDA GPU with compute capability >= {need} (Ada/Hopper); "
            f"this device is {device.type}: use --quantize int8"
        )
    cap = torch.cuda.get_device_capability(device)
    if tuple(cap) < FP8_CAPABILITY:
        raise ValueError(
            f"--quantize fp8 needs a CUDA GPU with compute capability >= {need} (Ada/Hopper); "
            f"{device} ({torch.cuda.get_device_name(device)}) has {cap[0]}.{cap[1]}: use --quantize int8"
        )


def _config(mode: str, tq: Any) -> Any:
    if mode == "int8":
        return tq.Int8WeightOnlyConfig()
    if mode == "int8-dynamic":
        return tq.Int8DynamicActivationInt8WeightConfig()
    if mode == "fp8":
        return tq.Float8WeightOnlyConfig()
    raise ValueError(f"--quantize must be one of {', '.join(QUANTIZE)}; got {mode!r}")


def quantize_transformer(module: nn.Module, mode: str, *, device: torch.device | str | None = None) -> nn.Module:
    """Quantize ``module``'s ``nn.Linear`` weights in place with torchao's ``quantize_`` for ``mode``
    (``none``: untouched) and return it. ``device``: where each layer moves before it is quantized
    (torchao moves them one at a time, so the unquantized weights never all sit there; None: where
    they are). Checks ``mode`` and fp8's device first (:func:`check_quantize`)."""
    where = torch.device(device) if device is not None else _device_of(module)
    check_quantize(mode, where)
    if mode == "none":
        return module
    tq = import_torchao(mode)
    with _quiet_import():
        tq.quantize_(module, _config(mode, tq), filter_fn=lambda m, _fqn: isinstance(m, nn.Linear), device=device)
    if where.type == "cpu":
        _trim_heap()
    return module


def _trim_heap() -> None:
    """Give the unquantized weights' freed memory back to the system (glibc's ``malloc_trim``):
    bfloat16 layers under 32 MiB are allocated on the heap, which keeps what is freed resident (a
    2B-sized transformer quantized from bfloat16 otherwise stays at its bfloat16 size plus its int8
    one). A no-op off glibc."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def is_quantized(weight: Any) -> bool:
    """Whether ``weight`` is a torchao tensor subclass (a quantized weight)."""
    t = getattr(weight, "data", weight)
    return (
        isinstance(t, torch.Tensor) and type(t) not in (torch.Tensor, nn.Parameter) and "torchao" in type(t).__module__
    )


def quantized_linears(module: nn.Module) -> tuple[int, int]:
    """``(quantized, all)``: how many of ``module``'s ``nn.Linear`` layers hold a torchao weight."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return sum(is_quantized(m.weight) for m in linears), len(linears)


def _tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds: a torchao subclass's inner tensors (data, scales, ...), else its storage."""
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is not None and type(t) is not torch.Tensor and type(t) is not nn.Parameter:
        names, _ = flatten()
        return sum(_tensor_bytes(getattr(t, n)) for n in names if isinstance(getattr(t, n, None), torch.Tensor))
    return t.numel() * t.element_size()


def weight_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s parameters and buffers, quantized ones by what they hold (int8 data
    and scales), each tensor counted once."""
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}  # alive while counted
    return sum(_tensor_bytes(t.data if isinstance(t, nn.Parameter) else t) for t in tensors.values())
