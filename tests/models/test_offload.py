"""CPU offload (:mod:`cogsample.models.offload`) on a tiny CogVideoX.

Without a GPU the execution and offload devices are both the CPU, where a move changes nothing
that could be seen. So the mechanics are checked in two honest ways: the trace of moves (which
part or submodule, which direction, in which order), and *poisoned* offloading, where weights
that are "on the offload device" read as NaN: an output equal to the plain model's then proves
that every weight was brought in before it was used. The CUDA test checks the real thing.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from cogsample.models.cogvideox import CogVideoXModel, CogVideoXTransformerNetwork, load_cogvideox
from cogsample.models.offload import ModelOffload, SequentialOffload, check_offload, offload_parts

T, H, W = 3, 4, 6
PROMPTS = ["a cat runs on the grass", ""]


def _poison(t: torch.Tensor) -> torch.Tensor:
    return torch.full_like(t, math.nan) if t.is_floating_point() else t


class _Poisoned:
    """Mixin: a weight that is out reads NaN; moving in restores the kept copy."""

    def _poison_all(self) -> None:
        for name in self.parts:
            for slot in self._slots(name):
                self._set(slot, _poison(self._home[self._key(slot)]))

    def move(self, label, slots, direction) -> None:
        super().move(label, slots, direction)  # the trace (moves are no-ops: one device)
        for slot in slots:
            home = self._home[self._key(slot)]
            self._set(slot, home if direction == "in" else _poison(home))


class PoisonedModel(_Poisoned, ModelOffload):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._poison_all()


class PoisonedSequential(_Poisoned, SequentialOffload):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._poison_all()


def _parts(model: CogVideoXModel) -> dict:
    return {"text_encoder": model.text_encoder, "transformer": model.transformer, "vae": model.vae}


def _run(model: CogVideoXModel) -> dict[str, torch.Tensor]:
    """Every path that touches a weight: prompts, two transformer calls (a CFG pair), decoding."""
    g = torch.Generator().manual_seed(0)
    ctx = model.encode_prompts(PROMPTS)
    x = torch.randn(2, T, 16, H, W, generator=g)
    v1 = model.network(x, torch.full((2,), 999.0), ctx)
    v2 = model.network(x, torch.full((2,), 500.0), ctx)
    video = model.decode(torch.randn(1, T, 16, H, W, generator=g))
    return {"ctx": ctx, "v1": v1, "v2": v2, "video": video}


@pytest.fixture
def model(tiny_folders) -> CogVideoXModel:
    return load_cogvideox(tiny_folders["t2v"])  # its own copy: the tests hook it


@pytest.fixture
def reference(tiny_models) -> dict[str, torch.Tensor]:
    return _run(tiny_models["t2v"])


def _assert_same(got: dict, want: dict) -> None:
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_offload_needs_an_accelerator(tiny_folders) -> None:
    with pytest.raises(ValueError, match="device is the CPU"):
        load_cogvideox(tiny_folders["t2v"], offload="model")
    with pytest.raises(ValueError, match="offload must be one of none, model, sequential"):
        load_cogvideox(tiny_folders["t2v"], offload="cpu")  # type: ignore[arg-type]
    check_offload("none", "cpu")
    check_offload("sequential", "cuda")  # a device name is enough: nothing is touched
    assert offload_parts({"m": torch.nn.Linear(2, 2)}, "none", "cuda") is None


def test_model_offload_brings_one_part_at_a_time(model, reference) -> None:
    trace: list = []
    model.offloader = PoisonedModel(_parts(model), "cpu", entry_points={"vae": ("encode", "decode")}, trace=trace)
    _assert_same(_run(model), reference)
    # each part in once, the previous one out before the next comes in; the transformer stays
    # for both of its calls; decode() sends the VAE back at the end
    assert [(d, part) for d, part, _ in trace] == [
        ("in", "text_encoder"),
        ("out", "text_encoder"),
        ("in", "transformer"),
        ("out", "transformer"),
        ("in", "vae"),
        ("out", "vae"),
    ]
    assert model.offloader.resident is None
    # a second generation starts from an empty device again
    trace.clear()
    _assert_same(_run(model), reference)
    assert len(trace) == 6


def test_sequential_offload_brings_each_submodule_for_its_forward(model, reference) -> None:
    trace: list = []
    offloader = PoisonedSequential(_parts(model), "cpu", trace=trace)
    model.offloader = offloader
    _assert_same(_run(model), reference)
    # every "in" is closed by its "out", nested like the calls (a stack), nothing left in
    stack: list[str] = []
    for direction, label, _ in trace:
        if direction == "in":
            stack.append(label)
        else:
            assert stack.pop() == label
    assert not stack
    # every transformer submodule that owns weights came in for each of the two transformer calls
    # (the same number of times in each: LayerNormZero's norm runs twice per call)
    owners = [name for name, m in model.transformer.named_modules() if any(True for _ in m.parameters(recurse=False))]
    ins = [label for d, label, _ in trace if d == "in" and label.startswith("transformer")]
    counts = [ins.count(f"transformer.{name}" if name else "transformer") for name in owners]
    assert owners and all(c >= 2 and c % 2 == 0 for c in counts)
    assert len(ins) == sum(counts)  # and nothing else in the transformer moved
    assert all(device == "cpu" for _, _, device in trace)


def test_remove_takes_every_hook_off(model, reference) -> None:
    parts = _parts(model)
    for cls in (ModelOffload, SequentialOffload):
        kw = {"entry_points": {"vae": ("encode", "decode")}} if cls is ModelOffload else {}
        offloader = cls(parts, "cpu", **kw)
        assert offloader.hooked > 0
        assert ("decode" in model.vae.__dict__) == (cls is ModelOffload)  # the wrapped entry method
        offloader.remove()
        assert offloader.hooked == 0 and not offloader.parts
        for part in parts.values():
            for m in part.modules():
                assert not m._forward_pre_hooks and not m._forward_hooks
            assert "decode" not in part.__dict__ and "encode" not in part.__dict__
            assert all(isinstance(p, torch.nn.Parameter) and not p.requires_grad for p in part.parameters())
    model.offloader = None
    _assert_same(_run(model), reference)


def test_releasing_the_text_encoder_forgets_it(model) -> None:
    model.offloader = ModelOffload(_parts(model), "cpu")
    model.encode_prompts(["a cat"])
    assert model.offloader.resident == "text_encoder"
    te = model.text_encoder
    model.release_text_encoder()
    assert "text_encoder" not in model.offloader.parts and model.offloader.resident is None
    assert not te._forward_pre_hooks


def test_the_adapter_feeds_the_execution_device(tiny_models) -> None:
    transformer = tiny_models["t2v"].transformer
    net = CogVideoXTransformerNetwork(transformer, device="cuda:0")  # parameters on the CPU
    assert net.device == torch.device("cuda:0")
    assert CogVideoXTransformerNetwork(transformer).device == torch.device("cpu")
    assert tiny_models["t2v"].network.device == tiny_models["t2v"].device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_offload_on_cuda(tiny_folders, mode) -> None:
    plain = load_cogvideox(tiny_folders["t2v"], device="cuda", dtype=torch.float32)
    model = load_cogvideox(tiny_folders["t2v"], device="cuda", dtype=torch.float32, offload=mode)

    def on_cpu() -> bool:
        return all(p.device.type == "cpu" for m in _parts(model).values() for p in m.parameters())

    assert on_cpu() and model.network.device.type == "cuda"
    seen: list[str] = []
    hook = model.transformer.proj_out.register_forward_pre_hook(lambda m, _a: seen.append(m.weight.device.type))
    got, want = _run(model), _run(plain)
    hook.remove()
    assert seen == ["cuda", "cuda"]  # on the device while it ran
    assert on_cpu()  # and back between uses
    for key in want:
        assert got[key].device == want[key].device
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)
    model.disable_offload()
    assert all(p.device.type == "cuda" for p in model.transformer.parameters())
