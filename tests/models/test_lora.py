"""LoRA adapters (cogsample.models.lora): the file checks, the scale rule, weight 0, fusing, and
the shipped LoRAs of the trained built-in model through the pipeline, the CLI and JSONL."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("peft")

import cogsample
from cogsample.cli.main import main
from cogsample.models import check_loras
from cogsample.models.lora import (
    Adapters,
    lora_pairs,
    module_shapes,
    parse_lora,
    read_lora,
)
from cogsample.models.trained import LORAS, WEIGHTS, _forward, _rotary, load_transformer

SMALL = {"frames": 9, "height": 64, "width": 96, "steps": 8, "progress": False}
BLACK, RED = str(LORAS / "black-background.safetensors"), str(LORAS / "red-object.safetensors")
PROMPT = "a green square sliding right on a white background"


@pytest.fixture(scope="module")
def shapes():
    return module_shapes(json.loads((WEIGHTS / "config.json").read_text()))


def _random_lora(path, shapes, modules, rank=4, alpha=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for m in modules:
        fin, fout = shapes[m]
        state[f"transformer.{m}.lora_A.weight"] = torch.randn(rank, fin, generator=g) * 0.1
        state[f"transformer.{m}.lora_B.weight"] = torch.randn(fout, rank, generator=g) * 0.1
        if alpha is not None:
            state[f"transformer.{m}.alpha"] = torch.tensor(float(alpha))
    save_file(state, str(path))
    return path


def test_path_and_weight_are_parsed():
    assert parse_lora("a.safetensors") == ("a.safetensors", 1.0)
    assert parse_lora("a.safetensors:0.5") == ("a.safetensors", 0.5)
    assert parse_lora("C:/loras/a.safetensors") == ("C:/loras/a.safetensors", 1.0)  # a colon in the path
    assert lora_pairs(["a:0", {"path": "b", "weight": 2}, ("c", 1)]) == (("a", 0.0), ("b", 2.0), ("c", 1.0))
    assert lora_pairs(None) == () and lora_pairs([]) == ()
    with pytest.raises(ValueError, match=r"--lora a:inf: WEIGHT must be a finite number"):
        parse_lora("a:inf")
    with pytest.raises(ValueError, match=r"lora object takes 'path'"):
        lora_pairs({"file": "x"})


def test_a_file_is_checked_from_its_header_before_loading(tmp_path, shapes):
    with pytest.raises(ValueError, match=r"--lora .*nope.safetensors: no such file"):
        read_lora(tmp_path / "nope.safetensors", 1.0, shapes)
    (tmp_path / "text.safetensors").write_text("not tensors")
    with pytest.raises(ValueError, match=r"not a safetensors file"):
        read_lora(tmp_path / "text.safetensors", 1.0, shapes)
    save_file({"weight": torch.zeros(2, 2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match=r"not a LoRA .*first keys: weight"):
        read_lora(tmp_path / "plain.safetensors", 1.0, shapes)
    # another size: CogVideoX-2B's 1920-wide to_q on this 192-wide model
    save_file(
        {
            "transformer.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 1920),
            "transformer.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(1920, 4),
        },
        str(tmp_path / "big.safetensors"),
    )
    msg = (
        r"key transformer.transformer_blocks.0.attn1.to_q.lora_A.weight has shape \(4, 1920\) and .lora_B.weight "
        r"\(1920, 4\), but this model's transformer_blocks.0.attn1.to_q maps 192 -> 192 features"
    )
    with pytest.raises(ValueError, match=msg):
        read_lora(tmp_path / "big.safetensors", 1.0, shapes)
    # another architecture: a block this model does not have
    save_file(
        {
            "transformer.transformer_blocks.29.attn1.to_q.lora_A.weight": torch.zeros(4, 192),
            "transformer.transformer_blocks.29.attn1.to_q.lora_B.weight": torch.zeros(192, 4),
        },
        str(tmp_path / "deep.safetensors"),
    )
    with pytest.raises(ValueError, match=r"adapts transformer_blocks.29.attn1.to_q, which this model does not have"):
        read_lora(tmp_path / "deep.safetensors", 1.0, shapes)


def test_the_plan_refuses_a_bad_lora_and_the_exact_model(tmp_path):
    with pytest.raises(ValueError, match=r"--lora .*missing.safetensors: no such file"):
        cogsample.Pipeline.load("builtin-trained", device="cpu").plan("x", lora=str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match=r"model 'builtin' is the exact closed-form model"):
        check_loras("builtin", [(BLACK, 1.0)])
    with pytest.raises(ValueError, match=r"--lora-fuse merges the --lora files into the weights"):
        cogsample.Pipeline.load("builtin-trained", device="cpu", lora_fuse=True)


def test_scale_rule_weight_times_alpha_over_rank(tmp_path, shapes):
    """W + WEIGHT * (alpha / r) * B @ A, with the file's alpha; alpha = r where it has none."""
    m = "transformer_blocks.1.attn1.to_v"
    x = torch.randn(5, 192)
    for alpha, weight in ((None, 1.0), (16.0, 0.5), (2.0, 3.0)):
        path = _random_lora(tmp_path / f"a{alpha}.safetensors", shapes, [m], rank=4, alpha=alpha)
        lora = read_lora(path, weight, shapes)
        tr = load_transformer()
        base = tr.get_submodule(m)
        expected = torch.nn.functional.linear(x, base.weight, base.bias)
        from safetensors.torch import load_file

        sd = load_file(str(path))
        a, b = sd[f"transformer.{m}.lora_A.weight"], sd[f"transformer.{m}.lora_B.weight"]
        expected = expected + weight * ((alpha or 4) / 4) * (x @ a.T @ b.T)
        Adapters(tr).use([lora])
        with torch.no_grad():
            assert torch.allclose(tr.get_submodule(m)(x), expected, atol=1e-5), (alpha, weight)


def test_weight_zero_and_no_lora_are_the_base_model_bit_for_bit(tmp_path, shapes):
    tr = load_transformer()
    rot = _rotary(tr)
    x, ctx, t = torch.randn(1, 3, 32, 8, 12), torch.randn(1, 4, 32), torch.tensor([400.0])
    with torch.no_grad():
        base = _forward(tr, x, t, ctx, rot)
        ad = Adapters(tr)
        lora = read_lora(BLACK, 1.0, shapes)
        ad.use([lora])
        on = _forward(tr, x, t, ctx, rot)
        ad.use([dataclasses.replace(lora, weight=0.0)])
        assert torch.equal(_forward(tr, x, t, ctx, rot), base)
        ad.use([])
        assert torch.equal(_forward(tr, x, t, ctx, rot), base)
    assert not torch.equal(on, base)


@pytest.fixture(scope="module")
def pipe():
    return cogsample.Pipeline.load("builtin-trained", device="cpu")


def test_pipeline_weight_zero_is_bit_identical_and_shares_the_name(pipe):
    base = pipe(PROMPT, **SMALL)
    off = pipe(PROMPT, lora=f"{BLACK}:0", **SMALL)
    on = pipe(PROMPT, lora=BLACK, **SMALL)
    again = pipe(PROMPT, **SMALL)  # adapters loaded, none active: the base model again
    assert torch.equal(off.latents, base.latents) and off.stem == base.stem
    assert torch.equal(again.latents, base.latents)
    assert not torch.equal(on.latents, base.latents) and on.stem != base.stem


def test_two_loras_combine_and_fused_equals_unfused(pipe):
    both = pipe(PROMPT, lora=[BLACK, RED], **SMALL)
    black = pipe(PROMPT, lora=[BLACK], **SMALL)
    assert (both.latents - black.latents).abs().max() > 0.1
    fused = cogsample.Pipeline.load("builtin-trained", device="cpu", lora=[BLACK, RED], lora_fuse=True)
    merged = fused(PROMPT, **SMALL)
    assert (merged.latents - both.latents).abs().max() < 1e-3  # rounding of W + dW against W x + dW x
    assert merged.stem != both.stem  # fusing is recorded (not bit-identical)
    with pytest.raises(ValueError, match=r"--lora-fuse merged the process's LoRAs"):
        fused(PROMPT, lora=[BLACK], **SMALL)


def test_cli_records_the_lora_and_jsonl_sets_it_per_video(tmp_path):
    out = tmp_path / "out"
    args = ["generate", "--quiet", "--model", "builtin-trained", "--steps", "4", "--out", str(out)]
    assert main([*args, "--prompt", PROMPT, "--lora", f"{BLACK}:0.5"]) == 0
    (meta,) = [json.loads(p.read_text()) for p in out.glob("*.json")]
    (lora,) = meta["lora"]
    assert lora["weight"] == 0.5 and len(lora["sha256"]) == 64 and meta["lora_fuse"] is False
    assert meta["command"][meta["command"].index("--lora") + 1] == f"{lora['path']}:0.5"
    lines = tmp_path / "p.jsonl"
    (tmp_path / "l.safetensors").write_bytes(open(RED, "rb").read())
    lines.write_text(json.dumps({"prompt": PROMPT, "lora": "l.safetensors:1"}) + "\n" + json.dumps({"prompt": PROMPT}))
    assert main([*args, "--prompts-file", str(lines)]) == 0
    metas = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert sorted(len(m["lora"]) for m in metas) == [0, 1, 1]
    # one fused set a run: a line asking for another is refused before anything loads
    assert main([*args, "--prompts-file", str(lines), "--lora", BLACK, "--lora-fuse"]) == 2


def test_train_lora_writes_a_file_the_loader_takes(tmp_path, shapes):
    from cogsample.models.family import FAMILY
    from cogsample.models.lora_training import LoraTrainConfig, retarget, train_lora

    mapping = retarget({"background": "black"})
    assert all(FAMILY[j].background == "black" for j in mapping)
    kept = [FAMILY[j].color == c.color and FAMILY[j].motion == c.motion for j, c in zip(mapping, FAMILY, strict=True)]
    assert all(kept)
    with pytest.raises(ValueError, match=r"background=pink is not an attribute value"):
        retarget({"background": "pink"})
    out = tmp_path / "bg.safetensors"
    record = train_lora(out, {"background": "black"}, LoraTrainConfig(steps=2, batch=4, rank=2))
    assert len(record["loss"]) == 2 and (tmp_path / "bg.json").is_file()
    lora = read_lora(out, 1.0, shapes)
    assert lora.rank == 2 and lora.modules == 24  # 6 layers a block, 4 blocks
