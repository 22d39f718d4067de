"""The CogVideoX folder loader and transformer adapter against diffusers' own pipelines.

Every comparison is bit-exact: the adapter must hand the transformer, the text encoder and the
VAE exactly what ``CogVideoXPipeline`` / ``CogVideoXImageToVideoPipeline`` hand them.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("PIL")

from cogsample import CFG, Conditioning, SamplingConfig, SeededNoise, latent_shape, sample
from cogsample.models.base import VideoModel
from cogsample.models.cogvideox import (
    CogVideoXModel,
    CogVideoXTransformerNetwork,
    check_size_for,
    inspect_folder,
    load_cogvideox,
    validate_cogvideox_folder,
)
from cogsample.sampling.guidance import NoGuidance

from .tiny_cogvideox import KINDS, TEXT_LEN

# Every tiny model's native size: 9 frames (3 latent frames, odd: the 1.5 models pad) at 32 x 48 px.
FRAMES, HEIGHT, WIDTH = 9, 32, 48
T, H, W = 3, 4, 6


def pipeline_of(model: CogVideoXModel, folder: Path):
    """The diffusers pipeline over the very same modules (the reference for every comparison)."""
    from diffusers import CogVideoXImageToVideoPipeline, CogVideoXPipeline
    from diffusers.schedulers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

    sched_cls = CogVideoXDDIMScheduler if model.info.scheduler["_class_name"].endswith("DDIMScheduler") else None
    sched = (sched_cls or CogVideoXDPMScheduler).from_pretrained(str(folder), subfolder="scheduler")
    cls = CogVideoXImageToVideoPipeline if model.info.i2v else CogVideoXPipeline
    return cls(
        tokenizer=model.tokenizer,
        text_encoder=model.text_encoder,
        vae=model.vae,
        transformer=model.transformer,
        scheduler=sched,
    )


def diffusers_transformer_call(model, pipe, x, timestep, context, pad: int):
    """The transformer call of the pipelines' denoising loop, on latents already padded by ``pad``
    leading frames (the 1.5 pipelines sample ``pad`` extra frames and drop them at the end)."""
    config = model.transformer.config
    rotary = None
    if config.use_rotary_positional_embeddings:
        h, w = x.shape[3] * 8, x.shape[4] * 8
        rotary = pipe._prepare_rotary_positional_embeddings(h, w, x.size(1), x.device)
    ofs = None if config.ofs_embed_dim is None else x.new_full((1,), fill_value=2.0)
    with torch.no_grad():
        out = model.transformer(
            hidden_states=x,
            encoder_hidden_states=context,
            timestep=timestep.expand(x.shape[0]),
            ofs=ofs,
            image_rotary_emb=rotary,
            return_dict=False,
        )[0]
    return out[:, pad:]


# --------------------------------------------------------------------------- loading and info


def test_info_of_every_kind(tiny_models, tiny_folders) -> None:
    expect = {
        "t2v": dict(i2v=False, uses_ofs=False, patch_size_t=None),
        "t2v-2b": dict(i2v=False, uses_ofs=False, patch_size_t=None),
        "i2v": dict(i2v=True, uses_ofs=False, patch_size_t=None),
        "t2v-1.5": dict(i2v=False, uses_ofs=False, patch_size_t=2),
        "i2v-1.5": dict(i2v=True, uses_ofs=True, patch_size_t=2),
    }
    for kind, model in tiny_models.items():
        info = model.info
        assert isinstance(model, VideoModel)
        assert info.name == tiny_folders[kind].name
        assert {k: getattr(info, k) for k in expect[kind]} == expect[kind], kind
        assert info.max_text_len == TEXT_LEN
        assert info.latent_channels == 16
        assert info.scheduler is not None and info.scheduler["prediction_type"] == "v_prediction"
        assert info.scheduler["snr_shift_scale"] == (3.0 if kind == "t2v-2b" else 1.0)
        assert model.network.in_channels == (32 if info.i2v else 16)
        assert model.dtype == torch.float32 and model.transformer.dtype == torch.float32
        # inspect_folder reads the same facts from the JSON files alone
        assert inspect_folder(tiny_folders[kind]) == info
    assert (tiny_models["t2v"].info.frames, tiny_models["t2v"].info.height, tiny_models["t2v"].info.width) == (
        FRAMES,
        HEIGHT,
        WIDTH,
    )
    # 1.5: sample_height/width are the rotary table (16 patches here), the native size is capped to it
    info15 = tiny_models["t2v-1.5"].info
    assert (info15.height, info15.width, info15.extra["max_height"]) == (128, 128, 128)
    assert info15.extra["invert_scale_latents"] and info15.extra["fps"] == 16


def test_load_in_bfloat16_casts_inputs(tiny_folders) -> None:
    model = load_cogvideox(tiny_folders["t2v"], dtype=torch.bfloat16)
    pipe = pipeline_of(model, tiny_folders["t2v"])
    assert model.transformer.dtype == model.vae.dtype == model.text_encoder.dtype == torch.bfloat16
    ctx = model.encode_prompts(["a cat"])
    assert ctx.dtype == torch.bfloat16
    x = torch.randn(1, T, 16, H, W)  # float32, as the core's alpha-space samplers keep it
    out = model.network(x, torch.tensor([979.0]), ctx)
    ref = diffusers_transformer_call(model, pipe, x.bfloat16(), torch.tensor(979), ctx, 0)
    assert out.dtype == torch.bfloat16 and torch.equal(out, ref)


# --------------------------------------------------------------------------- the adapter


@pytest.mark.parametrize("kind", KINDS)
def test_adapter_equals_diffusers_call(kind, tiny_models, tiny_folders) -> None:
    """Rotary (1.0 crop / 1.5 slice), sin-cos and learned positions, I2V channels, ofs, and the
    1.5 temporal padding of an odd latent frame count: all as the pipelines call the transformer."""
    model = tiny_models[kind]
    pipe = pipeline_of(model, tiny_folders[kind])
    net = model.network
    g = torch.Generator().manual_seed(1)
    ctx = model.encode_prompts(["a cat runs on the grass", ""])
    for frames in (T, T + 1):  # 3 latent frames (padded to 4 by the 1.5 models) and 4
        x = torch.randn(2, frames, net.in_channels, H, W, generator=g)
        pad = net.padding(frames)
        assert pad == (1 if kind.endswith("1.5") and frames % 2 else 0)
        padded = torch.cat([x[:, :1].expand(-1, pad, -1, -1, -1), x], dim=1) if pad else x
        for t in (999, 500, 0):
            out = net(x, torch.full((2,), float(t)), ctx)
            ref = diffusers_transformer_call(model, pipe, padded, torch.tensor(t), ctx, pad)
            assert out.shape == (2, frames, 16, H, W)
            assert torch.equal(out, ref), (kind, frames, t)


def test_adapter_rotary_cache_and_timestep(tiny_models) -> None:
    net = tiny_models["t2v"].network
    a = net.rotary(T, H, W, "cpu")
    assert net.rotary(T, H, W, torch.device("cpu")) is a  # cached per (T, H, W, device)
    assert net.rotary(T, 8, 12, "cpu")[0].shape[0] == T * 4 * 6
    assert tiny_models["t2v-2b"].network.rotary(T, H, W, "cpu") is None
    # float32 holds the integer timesteps exactly (the embedding equals the int64 one: see above)
    assert net.timestep(torch.tensor([999.0, 999.0], dtype=torch.float16), 2).tolist() == [999.0, 999.0]
    assert net.timestep(torch.tensor(5), 3).tolist() == [5.0, 5.0, 5.0]
    frac = net.timestep(torch.tensor([1.5]), 1)
    assert frac.dtype == torch.float32 and frac.item() == 1.5
    ctx = torch.randn(1, TEXT_LEN, 32, generator=torch.Generator().manual_seed(0))
    x = torch.randn(1, T, 16, H, W)
    assert not torch.equal(net(x, torch.tensor([1.5]), ctx), net(x, torch.tensor([1.0]), ctx))


def test_adapter_ofs_passthrough(tiny_models, tiny_folders) -> None:
    model = tiny_models["i2v-1.5"]
    net, ctx = model.network, model.encode_prompts(["a cat"])
    x = torch.randn(1, 2, 32, H, W, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([700.0])
    default = net(x, t, ctx)
    assert torch.equal(default, net(x, t, ctx, ofs=torch.tensor([2.0])))
    assert not torch.equal(default, net(x, t, ctx, ofs=torch.tensor([3.0])))


def test_adapter_shape_errors(tiny_models) -> None:
    net = tiny_models["i2v"].network
    ctx = torch.zeros(1, TEXT_LEN, 32)
    t = torch.tensor([1.0])
    with pytest.raises(ValueError, match=r"Cin = 32.*in_channels.*got \(1, 3, 16, 4, 6\)"):
        net(torch.zeros(1, 3, 16, H, W), t, ctx)
    with pytest.raises(ValueError, match=r"\(N, T, Cin, H, W\)"):
        net(torch.zeros(1, 32, H, W), t, ctx)
    with pytest.raises(ValueError, match="learned positional embeddings"):
        net(torch.zeros(1, 3, 32, 6, 6), t, ctx)
    with pytest.raises(ValueError, match="patch size"):
        net(torch.zeros(1, 3, 32, 5, 6), t, ctx)
    with pytest.raises(ValueError, match="context"):
        net(torch.zeros(2, 3, 32, H, W), torch.ones(2), ctx)
    with pytest.raises(ValueError, match="text_embed_dim"):
        net(torch.zeros(1, 3, 32, H, W), t, torch.zeros(1, TEXT_LEN, 8))
    with pytest.raises(ValueError, match="exactly 16 text tokens"):
        tiny_models["t2v-2b"].network(torch.zeros(1, 3, 16, H, W), t, torch.zeros(1, 5, 32))
    with pytest.raises(TypeError, match="CogVideoXTransformer3DModel"):
        CogVideoXTransformerNetwork(torch.nn.Linear(2, 2))


# --------------------------------------------------------------------------- text


def test_encode_prompts_equals_pipeline(tiny_models, tiny_folders, caplog) -> None:
    model = tiny_models["t2v"]
    pipe = pipeline_of(model, tiny_folders["t2v"])
    prompts = ["a cat runs", "", "red car drives through city at night"]
    ref, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, max_sequence_length=TEXT_LEN)
    out = model.encode_prompts(prompts)
    assert out.shape == (3, TEXT_LEN, 32) and torch.equal(out, ref)
    assert torch.equal(model.encode_prompts("a cat runs"), out[:1])
    long = " ".join(["a cat dog runs on the grass"] * 4)
    with caplog.at_level(logging.WARNING, logger="cogsample.models.cogvideox"):
        out = model.encode_prompts([long])
    assert "truncated to 16 tokens" in caplog.text
    ref, _ = pipe.encode_prompt([long], do_classifier_free_guidance=False, max_sequence_length=TEXT_LEN)
    assert torch.equal(out, ref)
    with pytest.raises(ValueError, match="non-empty"):
        model.encode_prompts([])


def test_release_text_encoder(tiny_folders) -> None:
    model = load_cogvideox(tiny_folders["t2v"])
    model.encode_prompts(["a cat"])
    model.release_text_encoder()
    assert model.text_encoder is None
    model.release_text_encoder()  # idempotent
    with pytest.raises(RuntimeError, match="text encoder was released"):
        model.encode_prompts(["a cat"])


# --------------------------------------------------------------------------- VAE


def _pipeline_decode(pipe, latents: torch.Tensor, tiling: bool) -> torch.Tensor:
    if tiling:
        pipe.vae.enable_tiling()
    else:
        pipe.vae.disable_tiling()
    with torch.no_grad():
        return pipe.video_processor.postprocess_video(pipe.decode_latents(latents), output_type="pt")


@pytest.mark.parametrize("kind", ["t2v", "i2v-1.5"])
def test_decode_equals_pipeline(kind, tiny_folders) -> None:
    model = load_cogvideox(tiny_folders[kind])
    pipe = pipeline_of(model, tiny_folders[kind])
    g = torch.Generator().manual_seed(3)
    latents = torch.randn(2, T, 16, H, W, generator=g)
    z = model.latents_for_vae(latents)
    assert torch.equal(z, 1 / model.vae.config.scaling_factor * latents.permute(0, 2, 1, 3, 4))
    video = model.decode(latents)
    assert video.shape == (2, FRAMES, 3, HEIGHT, WIDTH) and video.dtype == torch.float32
    assert torch.equal(video, _pipeline_decode(pipe, latents, tiling=True).float())
    assert 0 <= float(video.min()) and float(video.max()) <= 1
    if kind != "t2v":
        return
    # 64 x 96 px exceeds the tiny VAE's tile: both settings match diffusers', and they differ,
    # so the flag did reach the VAE
    latents = torch.randn(1, 1, 16, 8, 12, generator=g)
    tiled, whole = model.decode(latents, tiling=True), model.decode(latents, tiling=False, slicing=False)
    assert tiled.shape == whole.shape == (1, 1, 3, 64, 96)
    assert torch.equal(tiled, _pipeline_decode(pipe, latents, tiling=True).float())
    assert torch.equal(whole, _pipeline_decode(pipe, latents, tiling=False).float())
    assert not torch.equal(tiled, whole)


@pytest.mark.parametrize("kind", ["i2v", "i2v-1.5"])
def test_encode_image_equals_pipeline(kind, tiny_models, tiny_folders) -> None:
    model = tiny_models[kind]
    pipe = pipeline_of(model, tiny_folders[kind])
    images = torch.rand(2, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(4)) * 2 - 1
    # 13 frames -> 4 latent frames, even, so the 1.5 pipeline adds no leading copy of the image
    _, ref = pipe.prepare_latents(
        images, 2, 16, 13, HEIGHT, WIDTH, torch.float32, "cpu", torch.Generator().manual_seed(7)
    )
    out = model.encode_image(images, torch.Generator().manual_seed(7))
    assert out.shape == (2, 1, 16, H, W)
    assert torch.equal(out, ref[:, :1]) and not ref[:, 1:].any()
    # one generator per image, as the pipeline's list of generators
    gens = [torch.Generator().manual_seed(s) for s in (7, 8)]
    _, ref = pipe.prepare_latents(
        images, 2, 16, 13, HEIGHT, WIDTH, torch.float32, "cpu", [torch.Generator().manual_seed(s) for s in (7, 8)]
    )
    assert torch.equal(model.encode_image(images, gens), ref[:, :1])
    # the 1.5 quirk: diffusers divides by the scaling factor, SAT leaves the latent unscaled
    mean = model.encode_image(images, sample=False)
    with torch.no_grad():
        raw = model.vae.encode(images[:1].unsqueeze(2)).latent_dist.mode().permute(0, 2, 1, 3, 4)
    sf = model.vae.config.scaling_factor
    assert torch.equal(mean[:1], (1 / sf if kind == "i2v-1.5" else sf) * raw)


def test_encode_image_errors(tiny_models) -> None:
    with pytest.raises(ValueError, match="text-to-video"):
        tiny_models["t2v"].encode_image(torch.zeros(1, 3, HEIGHT, WIDTH))
    model = tiny_models["i2v"]
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.encode_image(torch.zeros(1, 1, 3, HEIGHT, WIDTH))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        model.encode_image(torch.full((1, 3, HEIGHT, WIDTH), 255.0))
    with pytest.raises(ValueError, match="multiples of 16"):
        model.encode_image(torch.zeros(1, 3, 40, WIDTH))
    with pytest.raises(ValueError, match="2 generators for 1 images"):
        model.encode_image(torch.zeros(1, 3, HEIGHT, WIDTH), [torch.Generator(), torch.Generator()])


def test_i2v_image_method(tiny_models) -> None:
    from PIL import Image

    img = Image.new("RGB", (300, 200), (0, 128, 255))
    assert tiny_models["i2v"].i2v_image(img).shape == (1, 3, HEIGHT, WIDTH)  # 1.0: native size
    assert tiny_models["i2v-1.5"].i2v_image(img).shape == (1, 3, 768, 1152)  # 1.5: short side 768


# --------------------------------------------------------------------------- sizes


def test_check_size(tiny_models) -> None:
    for model in tiny_models.values():
        model.check_size(FRAMES, HEIGHT, WIDTH)
    t2v = tiny_models["t2v"]
    t2v.check_size(13, 64, 96)
    with pytest.raises(ValueError, match=r"frames must be of the form 4k\+1.*nearest: 9 or 13"):
        t2v.check_size(10, HEIGHT, WIDTH)
    with pytest.raises(ValueError, match=r"height must be a multiple of 16.*nearest: 32 or 48"):
        t2v.check_size(FRAMES, 40, WIDTH)
    with pytest.raises(ValueError, match="width must be a multiple of 16"):
        t2v.check_size(FRAMES, HEIGHT, 50)
    with pytest.raises(ValueError, match="frames must be a positive integer"):
        t2v.check_size(0, HEIGHT, WIDTH)
    i2v = tiny_models["i2v"]
    with pytest.raises(ValueError, match="width must be 48 for tiny-i2v: its learned positional"):
        i2v.check_size(FRAMES, HEIGHT, 64)
    with pytest.raises(ValueError, match="frames must be 9"):
        i2v.check_size(13, HEIGHT, WIDTH)
    m15 = tiny_models["t2v-1.5"]
    m15.check_size(5, 128, 128)  # 2 latent frames, or 3 (padded): both fine
    with pytest.raises(ValueError, match="height must be at most 128"):
        m15.check_size(FRAMES, 144, WIDTH)
    check_size_for(m15.info, 13, 128, 64)  # the module function takes a ModelInfo


# --------------------------------------------------------------------------- folder validation


def _copy(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / folder.name
    shutil.copytree(folder, dst)
    return dst


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_folder_validation(tiny_folders, tmp_path) -> None:
    src = tiny_folders["t2v"]
    assert set(validate_cogvideox_folder(src)) == {"model_index", "transformer", "vae", "scheduler"}
    with pytest.raises(FileNotFoundError, match=r"CogVideoX folder not found: .*nowhere"):
        load_cogvideox(tmp_path / "nowhere")

    folder = _copy(src, tmp_path / "a")
    shutil.rmtree(folder / "vae")
    shutil.rmtree(folder / "tokenizer")
    with pytest.raises(FileNotFoundError, match=rf"{folder} is missing tokenizer/, vae/"):
        load_cogvideox(folder)

    folder = _copy(src, tmp_path / "b")
    _edit_json(folder / "model_index.json", _class_name="StableDiffusionPipeline")
    # validation comes before any weight is read: a broken weight file does not matter
    (folder / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ValueError, match=r"not a CogVideoX folder: model_index.json names 'StableDiffusionPipeline'"):
        load_cogvideox(folder)

    folder = _copy(src, tmp_path / "c")
    _edit_json(folder / "transformer" / "config.json", _class_name="UNet2DConditionModel")
    with pytest.raises(ValueError, match=r"transformer/config.json: the transformer is a 'UNet2DConditionModel'"):
        inspect_folder(folder)

    folder = _copy(src, tmp_path / "d")
    (folder / "model_index.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no model_index.json"):
        load_cogvideox(folder)

    folder = _copy(src, tmp_path / "e")
    (folder / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"scheduler_config.json"):
        load_cogvideox(folder)

    with pytest.raises(ValueError, match="dtype must be"):
        load_cogvideox(src, dtype=torch.int8)


# --------------------------------------------------------------------------- sampling with the core


def _conditioning(model: CogVideoXModel, batch: int, guided: bool) -> Conditioning:
    prompts = ["a cat runs on the grass", "red car"][:batch]
    context = model.encode_prompts(prompts)
    uncond = model.encode_prompts([""] * batch) if guided else None
    image_latents = None
    if model.info.i2v:
        images = torch.rand(batch, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(5)) * 2 - 1
        first = model.encode_image(images, torch.Generator().manual_seed(6))
        image_latents = torch.cat([first, first.new_zeros(batch, T - 1, *first.shape[2:])], dim=1)
    return Conditioning(context=context, uncond_context=uncond, image_latents=image_latents)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("sampler", "guidance"), [("vpsde_dpmpp_2m", CFG(6.0)), ("video_ddim", NoGuidance())])
def test_sampling_runs_every_kind(kind, sampler, guidance, tiny_models) -> None:
    model = tiny_models[kind]
    batch = 2
    cond = _conditioning(model, batch, guided=isinstance(guidance, CFG))
    noise = SeededNoise.from_seed(0, batch)
    x = noise.initial(latent_shape(batch, FRAMES, HEIGHT, WIDTH))
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return model.network(*args, **kwargs)

    config = SamplingConfig(sampler=sampler, steps=3, guidance=guidance)
    latents = sample(counted, x, cond, config, noise=noise)
    assert latents.shape == x.shape and bool(torch.isfinite(latents).all())
    rows = 2 * batch if isinstance(guidance, CFG) else batch
    assert len(calls) == 3 and all(s == (rows, T, model.network.in_channels, H, W) for s in calls)
    # same seed, same latents: the adapter is deterministic
    noise2 = SeededNoise.from_seed(0, batch)
    again = sample(model.network, noise2.initial(x.shape), cond, config, noise=noise2)
    assert torch.equal(latents, again)
    if sampler == "vpsde_dpmpp_2m" and kind in ("t2v", "i2v-1.5"):
        video = model.decode(latents)
        assert video.shape == (batch, FRAMES, 3, HEIGHT, WIDTH)
