"""The real loading and generation path on tiny random-weight CogVideoX folders, and the
``diffusers`` profile against diffusers' own pipelines, bit for bit."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cogsample.jobs import batch
from cogsample.pipeline import pipeline
from cogsample.pipeline.planning import plan

pytest.importorskip("diffusers")

from .tiny_cogvideox import SIZE, tiny_request


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("img") / "first.png"
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.mark.parametrize(
    ("kind", "sampler", "guidance"),
    [
        ("t2v", "vpsde_dpmpp_2m", "dynamic"),
        ("t2v", "video_ddim", "cfg"),
        ("t2v-2b", "vpode_dpmpp_2m", "none"),
        ("i2v", "vpsde_dpmpp_2m", "dynamic"),
        ("i2v", "video_ddpm", "cfg"),
        ("t2v-1.5", "vpsde_dpmpp_2m", "dynamic"),
        ("i2v-1.5", "video_ddim", "dynamic"),
        ("i2v-1.5", "vpode_dpmpp_2m", "none"),
    ],
)
def test_generate_on_a_tiny_folder(tiny_folders, tmp_path, image_file, kind, sampler, guidance):
    i2v = kind.startswith("i2v")
    opts = tiny_request(
        tiny_folders[kind], tmp_path, sampler=sampler, guidance=guidance, image=image_file if i2v else None
    )
    p = plan(opts)
    (res,) = batch.run_plan(p)
    lat = load_file(str(res.files["latents"]))
    t = 3 + p.pad_frames
    assert lat["latents"].shape == (1, t, 16, 4, 6)
    # what the VAE decodes: un-padded, channels first, divided by the VAE's scaling factor
    assert lat["latents_for_vae"].shape == (1, 16, 3, 4, 6)
    assert p.pad_frames == (1 if "1.5" in kind else 0)
    assert res.video.shape == (9, 3, 32, 48) and torch.isfinite(res.video).all()
    meta = json.loads(res.files["meta"].read_text())
    assert meta["model"]["i2v"] == i2v and meta["model"]["uses_ofs"] == (kind == "i2v-1.5")
    assert meta["sampling"]["sampler"] == sampler
    # the folder's scheduler config gives the sat profile its shift: 3.0 for 2B, 1.0 for 5B and 1.5
    shift = meta["sampling"]["schedule"]["shift_scale"]
    assert shift == (3.0 if kind == "t2v-2b" else 1.0)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_runs_end_to_end(tiny_folders, tmp_path, dtype):
    p = plan(tiny_request(tiny_folders["t2v-1.5"], tmp_path, dtype=dtype))
    assert p.dtype == getattr(torch, dtype)
    (res,) = batch.run_plan(p)
    assert res.latents.dtype == torch.float32  # the SAT samplers keep their state in float32
    assert torch.isfinite(res.video).all() and res.video.shape == (9, 3, 32, 48)
    assert json.loads(res.files["meta"].read_text())["dtype"] == dtype


def test_t2v_with_an_image_and_i2v_without_fail_before_loading(tiny_folders, tmp_path, image_file, monkeypatch):
    monkeypatch.setattr(pipeline, "load_model", lambda *_a, **_k: pytest.fail("loaded"))
    with pytest.raises(ValueError, match=r"--image given, but model .* is text-to-video"):
        plan(tiny_request(tiny_folders["t2v"], tmp_path, image=image_file))
    with pytest.raises(ValueError, match="is image-to-video: give --image"):
        plan(tiny_request(tiny_folders["i2v"], tmp_path))
    with pytest.raises(ValueError, match="frames must be 9"):  # learned positions: native size only
        plan(tiny_request(tiny_folders["i2v"], tmp_path, image=image_file, frames=13, context="off"))
    with pytest.raises(ValueError, match=r"frames must be 9 .*got 5$"):  # shorter: no windows to fix it
        plan(tiny_request(tiny_folders["i2v"], tmp_path, image=image_file, frames=5))


@pytest.mark.parametrize("kind", ["t2v", "t2v-2b", "i2v", "t2v-1.5", "i2v-1.5"])
def test_a_folder_takes_frames_beyond_its_native_count_in_windows(tiny_folders, tmp_path, image_file, kind):
    """3x the native latent length: the transformer only ever sees windows of its native length
    (rotary positions, learned positions and temporal patches as at home), the video is whole."""
    from cogsample.models.cogvideox import load_cogvideox

    i2v = kind.startswith("i2v")
    # 1.5 (13 native frames, 4 latent): 41 frames, 11 latent padded to 12, as its pipeline pads
    frames = 41 if "1.5" in kind else "3x"
    p = plan(tiny_request(tiny_folders[kind], tmp_path, frames=frames, image=image_file if i2v else None))
    native = p.info.native_latent_frames
    assert p.windows is not None and p.windows.frames == native and p.shape[1] == 3 * native
    model = load_cogvideox(tiny_folders[kind])
    seen = []
    hook = model.transformer.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append((kw["hidden_states"].shape[1], kw.get("ofs") is not None)), with_kwargs=True
    )
    try:
        (res,) = batch.run_plan(p, model=model)
    finally:
        hook.remove()
    assert {frames for frames, _ in seen} == {native}
    assert len(seen) == 4 * p.forwards_per_call  # 4 steps, one CFG batch per window
    if p.info.uses_ofs:  # ofs goes to the window holding frame 0 (the adapter's default elsewhere)
        assert all(has for has in (o for _, o in seen))
    assert res.video.shape[0] == p.frames and torch.isfinite(res.video).all()
    meta = json.loads(res.files["meta"].read_text())
    assert meta["context_windows"]["frames"] == native and meta["forwards"] == 4 * 2 * p.forwards_per_call


@pytest.mark.parametrize("part", ["transformer", "vae", "tokenizer"])
def test_a_folder_missing_a_part_is_named(tiny_folders, tmp_path, part, monkeypatch):
    monkeypatch.setattr(pipeline, "load_model", lambda *_a, **_k: pytest.fail("loaded"))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_folders["t2v"], broken)
    shutil.rmtree(broken / part)
    with pytest.raises(ValueError, match=part):
        plan(tiny_request(broken, tmp_path))


def test_a_folder_of_another_model_is_refused(tiny_folders, tmp_path):
    other = tmp_path / "sd"
    shutil.copytree(tiny_folders["t2v"], other)
    index = json.loads((other / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionPipeline"
    (other / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"not a CogVideoX folder.*StableDiffusionPipeline"):
        plan(tiny_request(other, tmp_path))


# ----------------------------------------------------------------------------------------------
# the diffusers profile equals diffusers' own pipeline


def _diffusers_pipe(folder, i2v: bool):
    from diffusers import CogVideoXImageToVideoPipeline, CogVideoXPipeline

    cls = CogVideoXImageToVideoPipeline if i2v else CogVideoXPipeline
    pipe = cls.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize(
    ("kind", "steps", "scale", "dynamic", "negative"),
    [
        ("t2v", 5, 6.0, True, ""),
        ("t2v", 4, 3.0, False, "blurry, low quality"),
        ("t2v-2b", 5, 6.0, True, ""),
        ("t2v-1.5", 4, 6.0, True, ""),
        ("i2v", 4, 6.0, True, ""),
        ("i2v-1.5", 5, 6.0, True, "ugly"),
    ],
)
def test_diffusers_profile_equals_diffusers_pipeline(
    tiny_folders, tmp_path, image_file, kind, steps, scale, dynamic, negative
):
    i2v = kind.startswith("i2v")
    folder = tiny_folders[kind]
    prompt = "a cat playing a piano"
    pipe = _diffusers_pipe(folder, i2v)
    kw = {}
    if i2v:
        kw["image"] = Image.open(image_file).convert("RGB")
    want = pipe(
        prompt=prompt,
        negative_prompt=negative,
        num_frames=SIZE["frames"],
        height=SIZE["height"],
        width=SIZE["width"],
        num_inference_steps=steps,
        guidance_scale=scale,
        use_dynamic_cfg=dynamic,
        generator=torch.Generator().manual_seed(7),
        output_type="latent",
        max_sequence_length=16,
        **kw,
    ).frames
    opts = tiny_request(
        folder,
        tmp_path,
        prompts=(prompt,),
        profile="diffusers",
        negative_prompt=negative,
        steps=steps,
        scale=scale,
        guidance="dynamic" if dynamic else "cfg",
        seed=7,
        image=image_file if i2v else None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (res,) = batch.generate(opts)
    assert res.latents.shape == want.shape
    assert torch.equal(res.latents, want), (res.latents - want).abs().max()
