"""CPU offload for models larger than the accelerator's memory: hooks that bring weights to the
execution device just before they are used and send them back after.

Two policies, as diffusers' ``enable_model_cpu_offload`` / ``enable_sequential_cpu_offload``
(written here with plain PyTorch hooks, no accelerate):

* :class:`ModelOffload` (``"model"``): whole parts (text encoder, transformer, VAE) take turns on
  the execution device. Using a part (its ``forward``, or an entry method such as the VAE's
  ``decode``) first sends the part that was there back, then brings this one in; it stays until
  another part is used or :meth:`Offload.release` is called. A part is never moved per call:
  the transformer stays for the whole denoising loop (moving 11 GB for every step would cost
  more than the step). Peak memory: the largest part plus activations.
* :class:`SequentialOffload` (``"sequential"``): every submodule that owns parameters or buffers
  brings *its own* tensors in just before its forward and drops them after, so at most one leaf's
  weights (plus activations) sit on the device. The leanest and by far the slowest.

Weights are treated as read-only: each tensor's copy on the offload device is kept, moving in
makes a device copy, and moving out just points the parameter back at the kept copy (no
device-to-host copy, no drift). Changing weights while they are on the execution device is lost
when they move out. :meth:`Offload.remove` takes the hooks off and leaves every part on the
offload device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "OFFLOAD_MODES",
    "ModelOffload",
    "Offload",
    "OffloadMode",
    "SequentialOffload",
    "check_offload",
    "offload_parts",
]

OffloadMode = Literal["none", "model", "sequential"]
OFFLOAD_MODES: tuple[str, ...] = ("none", "model", "sequential")

#: One trace record: ("in" or "out", the part or ``part.submodule`` name, the target device).
TraceEvent = tuple[str, str, str]
# A tensor slot: (owner module, attribute name, is a parameter (else a buffer)).
_Slot = tuple[nn.Module, str, bool]


def check_offload(mode: str, device: torch.device | str) -> None:
    """``ValueError`` unless ``mode`` is one of :data:`OFFLOAD_MODES` and, for an offloading mode,
    ``device`` is an accelerator: on the CPU every part already lives in main memory, so asking
    for offload there is a mistake worth naming rather than a silent no-op."""
    if mode not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {', '.join(OFFLOAD_MODES)}; got {mode!r}")
    if mode != "none" and torch.device(device).type == "cpu":
        raise ValueError(
            f"offload={mode!r} moves weights between the CPU and an accelerator, but the device is the CPU, "
            "where every part already lives in main memory: use offload='none' (or a cuda device)"
        )


def _on(tensor: torch.Tensor, device: torch.device) -> bool:
    """Whether ``tensor`` is on ``device``; an index-less ``cuda`` matches any CUDA tensor."""
    return tensor.device.type == device.type and (device.index is None or tensor.device.index == device.index)


def _own_slots(module: nn.Module) -> list[_Slot]:
    """The parameters and buffers ``module`` itself holds (not its children's)."""
    slots: list[_Slot] = [(module, n, True) for n, p in module._parameters.items() if p is not None]
    slots += [(module, n, False) for n, b in module._buffers.items() if b is not None]
    return slots


class Offload:
    """Offload hooks over named parts (``{"transformer": module, ...}``); the base of both policies.

    ``execution_device``: where the parts run; ``offload_device``: where they wait (the CPU).
    ``trace``: a list to append a :data:`TraceEvent` to for every move (None: no record; a
    sequential run makes two per submodule per call). The two devices may be equal (then moves
    are no-ops but every hook still runs: what the CPU-only tests check).
    """

    def __init__(
        self,
        parts: Mapping[str, nn.Module],
        execution_device: torch.device | str,
        offload_device: torch.device | str = "cpu",
        *,
        trace: list[TraceEvent] | None = None,
    ):
        if not parts:
            raise ValueError("no parts to offload")
        for name, module in parts.items():
            if not isinstance(module, nn.Module):
                raise TypeError(f"part {name!r} must be a torch.nn.Module, got {type(module).__name__}")
        self.execution_device = torch.device(execution_device)
        self.offload_device = torch.device(offload_device)
        self.trace = trace
        self.parts: dict[str, nn.Module] = dict(parts)
        self._hooks: dict[str, list[Any]] = {name: [] for name in self.parts}
        self._methods: dict[str, list[str]] = {name: [] for name in self.parts}
        # The kept offload-device copy of every tensor, by slot: what moving out restores.
        self._home: dict[tuple[int, str, bool], torch.Tensor] = {}
        for name in self.parts:
            for slot in self._slots(name):
                self._set(slot, self._home_of(slot))

    # -- moving tensors: the only place weights change device

    @staticmethod
    def _key(slot: _Slot) -> tuple[int, str, bool]:
        return id(slot[0]), slot[1], slot[2]

    def _home_of(self, slot: _Slot) -> torch.Tensor:
        """The kept offload-device copy of a slot, taken on first sight (also for a tensor that
        appeared after the hooks were installed, e.g. a module swapped in by a wrapper)."""
        key = self._key(slot)
        if key not in self._home:
            with torch.inference_mode(False), torch.no_grad():
                self._home[key] = self._get(slot).detach().to(self.offload_device)
        return self._home[key]

    @staticmethod
    def _get(slot: _Slot) -> torch.Tensor:
        owner, name, is_param = slot
        return owner._parameters[name] if is_param else owner._buffers[name]  # type: ignore[return-value]

    @staticmethod
    def _set(slot: _Slot, tensor: torch.Tensor) -> None:
        owner, name, is_param = slot
        # Plain tensors, even inside the pipeline's inference_mode: inference tensors could not be
        # used by later code that runs outside it.
        with torch.inference_mode(False), torch.no_grad():
            if is_param:
                owner._parameters[name].data = tensor  # type: ignore[union-attr]
            else:
                owner._buffers[name] = tensor

    def move(self, label: str, slots: Sequence[_Slot], direction: Literal["in", "out"]) -> None:
        """Bring ``slots`` to the execution device (``"in"``) or back to their kept copies (``"out"``)."""
        device = self.execution_device if direction == "in" else self.offload_device
        if self.trace is not None:
            self.trace.append((direction, label, str(device)))
        for slot in slots:
            home = self._home_of(slot)
            if direction == "out":
                self._set(slot, home)
            elif not _on(self._get(slot), device):
                with torch.inference_mode(False), torch.no_grad():
                    self._set(slot, home.to(device))

    def _slots(self, name: str) -> list[_Slot]:
        return [slot for m in self.parts[name].modules() for slot in _own_slots(m)]

    # -- lifecycle

    def release(self) -> None:
        """Send whatever is on the execution device back (the end of a generation)."""

    def forget(self, name: str) -> None:
        """Stop managing part ``name`` (e.g. a released text encoder): hooks off, the part left on
        the offload device, no reference to it kept."""
        if name not in self.parts:
            return
        self._unhook(name)
        for slot in self._slots(name):
            self._set(slot, self._home_of(slot))
            del self._home[self._key(slot)]
        del self.parts[name]

    def remove(self) -> None:
        """Take every hook off; all parts end up on the offload device as plain modules."""
        for name in list(self.parts):
            self.forget(name)

    def _unhook(self, name: str) -> None:
        for handle in self._hooks.pop(name, []):
            handle.remove()
        module = self.parts[name]
        for method in self._methods.pop(name, []):
            module.__dict__.pop(method, None)  # the instance wrapper; the class method shows again

    @property
    def hooked(self) -> int:
        """Hooks and wrapped methods currently installed (0 after :meth:`remove`)."""
        return sum(len(h) for h in self._hooks.values()) + sum(len(m) for m in self._methods.values())


class ModelOffload(Offload):
    """Whole parts take turns on the execution device (see the module docstring).

    A part becomes resident when its ``forward`` runs or, for the methods named in
    ``entry_points`` (e.g. ``{"vae": ("encode", "decode")}``: diffusers' VAE does not go through
    ``forward`` to decode), when one of those is called.
    """

    def __init__(
        self,
        parts: Mapping[str, nn.Module],
        execution_device: torch.device | str,
        offload_device: torch.device | str = "cpu",
        *,
        entry_points: Mapping[str, Sequence[str]] | None = None,
        trace: list[TraceEvent] | None = None,
    ):
        super().__init__(parts, execution_device, offload_device, trace=trace)
        self.resident: str | None = None
        entry_points = dict(entry_points or {})
        unknown = set(entry_points) - set(self.parts)
        if unknown:
            raise ValueError(f"entry_points name parts that are not offloaded: {sorted(unknown)}")
        for name, module in self.parts.items():
            self._hooks[name].append(module.register_forward_pre_hook(self._pre_hook(name)))
            for method in entry_points.get(name, ()):
                original = getattr(module, method)
                module.__dict__[method] = self._wrap(name, original)
                self._methods[name].append(method)

    def _pre_hook(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any) -> None:
            self.activate(name)

        return hook

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.activate(name)
            return method(*args, **kwargs)

        return wrapper

    def activate(self, name: str) -> None:
        """Make part ``name`` the one on the execution device (the previous one goes back first,
        so the two never share the device)."""
        if self.resident == name:
            return
        self.release()
        self.move(name, self._slots(name), "in")
        self.resident = name

    def release(self) -> None:
        if self.resident is not None and self.resident in self.parts:
            self.move(self.resident, self._slots(self.resident), "out")
        self.resident = None

    def forget(self, name: str) -> None:
        if self.resident == name:
            self.resident = None
        super().forget(name)


class SequentialOffload(Offload):
    """Each submodule's own parameters and buffers are on the execution device only during its
    forward (a pre-hook brings them, a post-hook drops them), see the module docstring."""

    def __init__(
        self,
        parts: Mapping[str, nn.Module],
        execution_device: torch.device | str,
        offload_device: torch.device | str = "cpu",
        *,
        trace: list[TraceEvent] | None = None,
    ):
        super().__init__(parts, execution_device, offload_device, trace=trace)
        for name, module in self.parts.items():
            for sub_name, sub in module.named_modules():
                slots = _own_slots(sub)
                if not slots:
                    continue
                label = f"{name}.{sub_name}" if sub_name else name
                self._hooks[name].append(sub.register_forward_pre_hook(self._hook(label, slots, "in")))
                # always_call: a forward that raises still drops its weights
                out_hook = self._hook(label, slots, "out")
                self._hooks[name].append(sub.register_forward_hook(out_hook, always_call=True))

    def _hook(self, label: str, slots: list[_Slot], direction: Literal["in", "out"]) -> Callable[..., None]:
        def hook(_module: nn.Module, *_args: Any) -> None:
            self.move(label, slots, direction)

        return hook


def offload_parts(
    parts: Mapping[str, nn.Module],
    mode: OffloadMode,
    execution_device: torch.device | str,
    offload_device: torch.device | str = "cpu",
    *,
    entry_points: Mapping[str, Sequence[str]] | None = None,
    trace: list[TraceEvent] | None = None,
) -> Offload | None:
    """Install ``mode``'s hooks on ``parts`` (None for ``"none"``). ``entry_points``: methods
    that use a part without its ``forward`` (model mode only; sequential hooks fire inside them)."""
    if mode not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {', '.join(OFFLOAD_MODES)}; got {mode!r}")
    if mode == "none":
        return None
    if mode == "model":
        return ModelOffload(parts, execution_device, offload_device, entry_points=entry_points, trace=trace)
    return SequentialOffload(parts, execution_device, offload_device, trace=trace)
