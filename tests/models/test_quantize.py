"""``--quantize``: the transformer's Linear weights quantized by torchao, checked before any weight loads."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torchao")
pytest.importorskip("diffusers")

from cogsample import Pipeline
from cogsample.jobs.metadata import command
from cogsample.jobs.naming import video_identity, video_stem
from cogsample.models import quantize as q
from cogsample.pipeline import pipeline as pipeline_module
from cogsample.pipeline.options import PROCESS_OPTIONS, GenerateOptions
from cogsample.pipeline.planning import plan

PROMPT = "a red ball bouncing on a black background"
STEPS = 4


def _latents(pipe: Pipeline) -> torch.Tensor:
    return pipe(PROMPT, progress=False, steps=STEPS, seed=3).latents.float()


@pytest.fixture(scope="module")
def runs():
    """The trained model unquantized and int8, float32 on the CPU, the same request."""
    plain = Pipeline.load("builtin-trained", device="cpu", dtype="float32")
    int8 = Pipeline.load("builtin-trained", device="cpu", dtype="float32", quantize="int8")
    return plain, int8, _latents(plain), _latents(int8)


def test_int8_quantizes_every_linear_and_stays_close(runs):
    plain, int8, a, b = runs
    done, linears = q.quantized_linears(int8.model.transformer)
    assert linears > 0 and done == linears  # every Linear weight is a torchao tensor subclass
    assert q.quantized_linears(plain.model.transformer) == (0, linears)
    assert not q.is_quantized(int8.model.transformer.patch_embed.proj.weight)  # a convolution: untouched
    assert q.weight_bytes(int8.model.transformer) < q.weight_bytes(plain.model.transformer) / 3
    # measured here: relative RMS 0.0038, max abs 0.022 (4 steps, float32; 20 steps: docs/bench.md#quantized-weights)
    rel = ((b - a).pow(2).mean().sqrt() / a.pow(2).mean().sqrt()).item()
    assert 0 < rel < 0.02, rel
    assert (b - a).abs().max().item() < 0.15
    assert int8.options(PROMPT).quantize == "int8"


def test_quantize_is_a_process_option_and_changes_the_name(runs):
    _, int8, _, _ = runs
    assert "quantize" in PROCESS_OPTIONS
    with pytest.raises(ValueError, match="quantize is fixed when the pipeline is loaded"):
        int8.options(PROMPT, quantize="none")
    base = dict(prompts=(PROMPT,), model="builtin-trained", device="cpu", steps=STEPS)
    p0, p8 = plan(GenerateOptions(**base)), plan(GenerateOptions(**base, quantize="int8"))
    assert "quantize" not in video_identity(p0, 0)  # names made before --quantize keep theirs
    assert video_identity(p8, 0)["quantize"] == "int8"
    assert video_stem(p0, 0) != video_stem(p8, 0)
    assert command(p8, PROMPT, 42)[-2:] == ["--quantize", "int8"]
    assert "--quantize" not in command(p0, PROMPT, 42)


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("weights loaded before the check")

    monkeypatch.setattr(pipeline_module, "load_model", refuse)


@pytest.mark.parametrize(
    ("model", "mode", "message"),
    [
        ("builtin-trained", "int4", r"--quantize must be one of none, int8, int8-dynamic, fp8; got 'int4'"),
        ("builtin-trained", 8, r"--quantize must be one of .*; got 8"),
        ("builtin", "int8", r"--quantize int8: model 'builtin' computes its denoiser exactly and has no transformer"),
        ("builtin", "int8-dynamic", r"model 'builtin' .* use --quantize none"),
        (
            "builtin-trained",
            "fp8",
            r"--quantize fp8 needs a CUDA GPU with compute capability >= 8.9 .* this device is cpu",
        ),
    ],
)
def test_refused_before_any_weight_loads(no_loading, model, mode, message):
    with pytest.raises(ValueError, match=message):
        plan(GenerateOptions(prompts=("a red ball",), model=model, device="cpu", quantize=mode))
    with pytest.raises(ValueError, match=message):
        Pipeline.load(model, device="cpu", quantize=mode)


def test_the_exact_image_to_video_model_is_refused_too(no_loading):
    with pytest.raises(ValueError, match=r"--quantize int8: model 'builtin-i2v' .* no transformer to quantize"):
        Pipeline.load("builtin-i2v", device="cpu", quantize="int8")


def test_fp8_refused_on_an_older_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _d=None: "NVIDIA A100")
    with pytest.raises(ValueError, match=r"cuda \(NVIDIA A100\) has 8.0: use --quantize int8"):
        q.check_quantize("fp8", "cuda")
    with pytest.raises(ValueError, match="this device is cpu"):
        q.quantize_transformer(torch.nn.Linear(4, 4), "fp8")


def test_without_torchao_it_names_the_extra(no_loading, monkeypatch):
    monkeypatch.setattr(q, "_installed", lambda _m: False)
    with pytest.raises(ValueError, match=r"needs torchao, which is not installed: pip install 'cogsample\[quantize\]'"):
        Pipeline.load("builtin-trained", device="cpu", quantize="int8")
    q.check_quantize("none")  # nothing to quantize: no torchao needed


def test_int8_dynamic_quantizes_a_linear_on_the_cpu():
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(64, 64))
    x = torch.randn(8, 64)
    ref = layer(x)
    q.quantize_transformer(layer, "int8-dynamic")
    assert q.quantized_linears(layer) == (1, 1)
    assert torch.allclose(layer(x), ref, atol=0.05)
