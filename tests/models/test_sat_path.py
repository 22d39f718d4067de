"""What SAT's ``sample_video.py`` does around the sampler, in the ``sat`` profile (and the
``diffusers`` profile's own rules): prompt length, no state between videos, decoding and uint8
conversion, VAE tiling as a choice, the GPU dtype, and a given initial noise."""

from __future__ import annotations

import json
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from cogsample.jobs import batch
from cogsample.models.cogvideox import VAE_FRAME_BATCH, CogVideoXModel, load_cogvideox
from cogsample.pipeline import options, pipeline
from cogsample.pipeline.options import GenerateOptions
from cogsample.pipeline.planning import plan

pytest.importorskip("diffusers")

from .tiny_cogvideox import SIZE, tiny_request

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> str:
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("img") / "first.png"
    Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(path)
    return str(path)


# ----------------------------------------------------------------------------------------------
# prompt length


def test_sat_encodes_224_tokens_for_1_5_models(tiny_folders, tmp_path):
    for kind in ("t2v-1.5", "i2v-1.5"):
        folder = tiny_folders[kind]
        assert plan(tiny_request(folder, tmp_path, image=None if kind == "t2v-1.5" else _png(tmp_path))).text_len == 224
        # diffusers' pipelines take the folder's max_text_seq_length (16 for the tiny models)
        p = plan(
            tiny_request(folder, tmp_path, profile="diffusers", image=None if kind == "t2v-1.5" else _png(tmp_path))
        )
        assert p.text_len == 16
    assert plan(tiny_request(tiny_folders["t2v"], tmp_path)).text_len == 16  # 1.0: SAT's configs say 226, as diffusers
    p = plan(tiny_request(tiny_folders["t2v-1.5"], tmp_path))
    (res,) = batch.run_plan(p)
    assert json.loads(res.files["meta"].read_text())["text_len"] == 224


def _png(tmp_path) -> str:
    path = tmp_path / "img.png"
    if not path.exists():
        Image.fromarray(np.full((32, 48, 3), 100, dtype=np.uint8)).save(path)
    return str(path)


def test_the_224_token_rule_is_the_shipped_configs(tiny_models):
    from cogsample.models.cogvideox import SAT_TEXT_LEN_15
    from cogsample.reference.satconfig import sat_text_max_length

    assert SAT_TEXT_LEN_15 == sat_text_max_length("cogvideox1.5-5b") == sat_text_max_length("cogvideox1.5-5b-i2v")
    assert tiny_models["t2v-1.5"].info.text_len("sat") == SAT_TEXT_LEN_15
    assert sat_text_max_length("cogvideox-5b") == 226 and tiny_models["t2v"].info.sat_text_len is None


def test_encode_prompts_takes_a_length(tiny_models):
    model = tiny_models["t2v-1.5"]
    assert model.encode_prompts(["a cat"], max_length=224).shape[1] == 224
    assert model.encode_prompts(["a cat"]).shape[1] == model.info.max_text_len
    # sin-cos positions over [text, video] need exactly the trained text length
    with pytest.raises(ValueError, match="max_length must be 16"):
        tiny_models["t2v-2b"].encode_prompts(["a cat"], max_length=224)


# ----------------------------------------------------------------------------------------------
# no state from one video to the next


@pytest.mark.parametrize("profile", ["sat", "diffusers"])
@pytest.mark.parametrize("kind", ["t2v", "i2v-1.5"])
def test_a_video_of_a_batch_equals_the_same_prompt_and_seed_alone(tiny_folders, tmp_path, image_file, kind, profile):
    # 64 x 96 px is larger than the tiny VAE's tile: decoding tiles, the I2V image is encoded whole
    image = image_file if kind.startswith("i2v") else None
    size = {"height": 64, "width": 96, "vae_tiling": "on", "profile": profile, "image": image, "seed": 5}
    folder = tiny_folders[kind]
    prompts = ("a dog runs on the grass", "a red car drives through the city at night")
    many = batch.generate(tiny_request(folder, tmp_path / "batch", prompts=prompts, **size))
    alone = batch.generate(tiny_request(folder, tmp_path / "alone", prompts=prompts[1:], **{**size, "seed": 6}))
    assert many[1].seed == alone[0].seed == 6
    assert torch.equal(many[1].latents, alone[0].latents)
    assert torch.equal(many[1].video, alone[0].video)
    meta = json.loads(many[1].files["meta"].read_text())
    assert meta["vae_tiling"]["mode"] == "on" and meta["vae_tiling"]["tiled"] is True


def test_decode_and_encode_leave_the_vae_as_they_found_it(tiny_folders):
    model = load_cogvideox(tiny_folders["i2v-1.5"])
    vae = model.vae
    before = (vae.use_tiling, vae.use_slicing, vae.num_latent_frames_batch_size)
    model.decode(torch.randn(1, 2, 16, 8, 12), tiling=True, slicing=True)
    model.encode_image(torch.zeros(1, 3, 64, 96))
    assert (vae.use_tiling, vae.use_slicing, vae.num_latent_frames_batch_size) == before
    # the image is encoded whole even after a tiled decode: as a fresh model encodes it
    fresh = load_cogvideox(tiny_folders["i2v-1.5"])
    img = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    g = torch.Generator().manual_seed(1)
    vae.enable_tiling()  # even a caller's setting does not reach the image encode
    got = model.encode_image(img, torch.Generator().manual_seed(1))
    assert vae.use_tiling
    assert torch.equal(got, fresh.encode_image(img, g))


# ----------------------------------------------------------------------------------------------
# decoding and uint8 conversion


def test_uint8_conversion_truncates_for_sat_and_rounds_for_diffusers():
    v = torch.tensor([0.0, 0.4 / 255, 0.6 / 255, 254.5 / 255, 1.0, 1.2, -0.1]).view(1, 1, 1, 7).expand(1, 3, 1, 7)
    assert pipeline.to_uint8(v, "truncate")[0, 0, :, 0].tolist() == [0, 0, 0, 254, 255, 255, 0]
    assert pipeline.to_uint8(v, "round")[0, 0, :, 0].tolist() == [0, 0, 1, 254, 255, 255, 0]
    assert options.UINT8 == {"sat": "truncate", "diffusers": "round"}
    with pytest.raises(ValueError, match="rounding must be"):
        pipeline.to_uint8(v, "floor")


@pytest.mark.parametrize("profile", ["sat", "diffusers"])
def test_written_frames_use_the_profiles_conversion(tiny_folders, tmp_path, profile):
    (res,) = batch.generate(tiny_request(tiny_folders["t2v"], tmp_path, profile=profile))
    sheet = np.asarray(Image.open(res.files["sheet"]))
    first = pipeline.to_uint8(res.video, options.UINT8[profile])[0]
    assert np.array_equal(sheet[:32, :48], first)
    other = pipeline.to_uint8(res.video, options.UINT8["diffusers" if profile == "sat" else "sat"])[0]
    assert not np.array_equal(first, other)
    assert json.loads(res.files["meta"].read_text())["uint8"] == options.UINT8[profile]


def test_half_precision_decodes_in_its_dtype_and_post_processes_in_float32(tiny_folders):
    model = load_cogvideox(tiny_folders["t2v"], dtype=torch.bfloat16)
    latents = torch.randn(1, 3, 16, 4, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        raw = model.vae.decode(model.latents_for_vae(latents)).sample
    assert raw.dtype == torch.bfloat16
    video = model.decode(latents)
    assert video.dtype == torch.float32
    assert torch.equal(video, (raw.float() * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4))
    # not on the bf16 grid: the conversion did not happen in bf16
    assert not torch.equal(video, video.bfloat16().float())


def test_sat_decodes_1_5_in_its_own_chunks(tiny_models):
    model = tiny_models["t2v-1.5"]
    # 81 and 161 video frames: 21 and 41 latent frames in min(10, T // 2) chunks
    assert model.frame_batch(21, "sat") == 2 and model.frame_batch(41, "sat") == 4
    assert model.frame_batch(41, "diffusers") == VAE_FRAME_BATCH == 2
    assert tiny_models["t2v"].frame_batch(41, "sat") == 2  # SAT's 1.0 code: 3, 2, 2, ... as diffusers
    with pytest.warns(UserWarning, match="cannot reproduce"):
        assert model.frame_batch(23, "sat") == 2
    # 41 frames as SAT cuts them (7a1af71's decode_first_stage): 10 chunks, the first one longer
    latents = torch.randn(1, 41, 16, 2, 2, generator=torch.Generator().manual_seed(3))
    z = model.latents_for_vae(latents)
    n, t = 10, 41
    chunks, start, cache = [], 0, None
    with torch.no_grad():
        for i in range(n):
            end = start + t // n + (1 if i < t % n else 0)
            out, cache = model.vae.decoder(z[:, :, start:end], conv_cache=cache)
            chunks.append(out)
            start = end
    want = (torch.cat(chunks, dim=2).float() * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)
    got = model.decode(latents, reference="sat")
    assert torch.equal(got, want)
    assert not torch.equal(got, model.decode(latents, reference="diffusers"))


# ----------------------------------------------------------------------------------------------
# VAE tiling as a choice


def test_auto_tiling_decodes_whole_when_it_fits_and_tiles_when_not(tiny_models, monkeypatch):
    model = tiny_models["t2v"]
    shape = (1, 13, 16, 60, 90)
    need = model.untiled_decode_bytes(shape)
    cpu = torch.device("cpu")
    monkeypatch.setattr(pipeline, "free_memory", lambda _d: int(need / pipeline.AUTO_TILING_MARGIN) + 1)
    assert pipeline.vae_tiling("auto", model, shape, cpu)["tiled"] is False
    monkeypatch.setattr(pipeline, "free_memory", lambda _d: need)
    decision = pipeline.vae_tiling("auto", model, shape, cpu)
    assert decision == {"mode": "auto", "tiled": True, "untiled_bytes_estimate": need, "free_bytes": need}
    assert pipeline.vae_tiling("on", model, shape, cpu)["tiled"] is True
    assert pipeline.vae_tiling("off", model, shape, cpu)["tiled"] is False
    monkeypatch.setattr(pipeline, "free_memory", lambda _d: None)  # unknown: decode as the sources do
    assert pipeline.vae_tiling("auto", model, shape, cpu)["tiled"] is False
    # SAT's 161-frame 1.5 chunks of 4 (5 first) need more than diffusers' batches of 2 (3 first)
    m15 = tiny_models["t2v-1.5"]
    long = (1, 41, 16, 96, 170)
    assert m15.untiled_decode_bytes(long, "sat") > 1.6 * m15.untiled_decode_bytes(long, "diffusers")
    assert m15.untiled_decode_bytes(long, "diffusers") == model.untiled_decode_bytes(long)


def test_offloaded_parts_leave_the_device_before_the_tiling_decision(tiny_folders, tmp_path, monkeypatch):
    events = []
    model = load_cogvideox(tiny_folders["t2v"])
    model.offloader = types.SimpleNamespace(release=lambda: events.append("release"), forget=lambda _name: None)
    monkeypatch.setattr(pipeline, "free_memory", lambda _d: events.append("free") or 10**12)
    batch.run_plan(plan(tiny_request(tiny_folders["t2v"], tmp_path)), model=model)
    assert events[:2] == ["release", "free"]


def test_the_untiled_estimate_covers_the_measured_peaks():
    # benchmarks/vae_memory.py on the released VAE (H100, bf16): the estimate must cover each
    # measured peak, with a margin of at most 15%
    rows = [json.loads(line) for line in (ROOT / "docs" / "bench" / "vae_memory.jsonl").read_text().splitlines()]
    stub = types.SimpleNamespace(
        vae=torch.nn.Linear(1, 1).to(torch.bfloat16),
        slicing=False,
        frame_batch=lambda *_a, **_k: VAE_FRAME_BATCH,
    )
    checked = 0
    for row in rows:
        if "untiled_bytes" not in row:
            continue
        t, h, w = row["latent"]
        est = CogVideoXModel.untiled_decode_bytes(stub, (1, t, 16, h, w))
        assert row["untiled_bytes"] <= est <= 1.15 * row["untiled_bytes"], row
        checked += 1
        if "sat_batch" in row:  # SAT's chunks of 4 ran out of the H100's 80 GB: the estimate says so
            stub.frame_batch = lambda *_a, batch=row["sat_batch"], **_k: batch
            assert CogVideoXModel.untiled_decode_bytes(stub, (1, t, 16, h, w), "sat") > 80e9
            stub.frame_batch = lambda *_a, **_k: VAE_FRAME_BATCH
    assert checked >= 5


def test_vae_tiling_is_checked_recorded_and_reproduced(tiny_folders, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "load_model", lambda *_a, **_k: pytest.fail("loaded"))
    with pytest.raises(ValueError, match="vae_tiling must be one of auto, on, off; got 'sometimes'"):
        plan(tiny_request(tiny_folders["t2v"], tmp_path, vae_tiling="sometimes"))
    monkeypatch.undo()
    (res,) = batch.generate(tiny_request(tiny_folders["t2v"], tmp_path, vae_tiling="off"))
    meta = json.loads(res.files["meta"].read_text())
    assert meta["vae_tiling"]["mode"] == "off" and meta["vae_tiling"]["tiled"] is False
    assert meta["command"][-2:] == ["--vae-tiling", "off"]
    (auto,) = batch.generate(tiny_request(tiny_folders["t2v"], tmp_path / "auto"))
    m = json.loads(auto.files["meta"].read_text())["vae_tiling"]
    assert m["mode"] == "auto" and m["tiled"] is False and 0 < m["untiled_bytes_estimate"] < m["free_bytes"]


# ----------------------------------------------------------------------------------------------
# the GPU dtype


def test_2b_folders_default_to_fp16_on_a_gpu_and_others_to_bf16(tiny_folders):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for kind, want in (("t2v-2b", torch.float16), ("t2v", torch.bfloat16), ("i2v-1.5", torch.bfloat16)):
        info = options.inspect_model(str(tiny_folders[kind]))
        assert options.resolve_dtype(None, cuda, info, builtin=False) == want
        assert options.resolve_dtype(None, cpu, info, builtin=False) == torch.float32
        assert options.resolve_dtype("float32", cuda, info, builtin=False) == torch.float32
    assert options.resolve_dtype(None, cuda, options.inspect_model("builtin"), builtin=True) == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("kind", "want"), [("t2v-2b", "float16"), ("t2v", "bfloat16")])
def test_generate_on_a_gpu_runs_in_the_release_dtype(tiny_folders, tmp_path, kind, want):
    (res,) = batch.generate(tiny_request(tiny_folders[kind], tmp_path, device="cuda"))
    meta = json.loads(res.files["meta"].read_text())
    assert meta["dtype"] == want and meta["device"].startswith("cuda")
    assert meta["vae_tiling"]["tiled"] is False and meta["vae_tiling"]["free_bytes"] > 0
    assert torch.isfinite(res.video).all()


# ----------------------------------------------------------------------------------------------
# a given initial noise


def test_initial_noise_replaces_the_draw_and_keeps_the_sat_stream(tiny_folders, tmp_path):
    # the noise the seeded run draws, given as a file, gives the same video: the reference's draw
    # is still made, so the in-loop noise is the seed's. (A real network: the exact built-in model's
    # first step at zero SNR does not look at the initial latent at all.)
    folder = tiny_folders["t2v"]
    (base,) = batch.generate(tiny_request(folder, tmp_path / "a", seed=3))
    torch.manual_seed(3)
    drawn = torch.randn(1, 3, 16, 4, 6)
    save_file({"noise": drawn}, str(tmp_path / "n.safetensors"))
    (same,) = batch.generate(
        tiny_request(folder, tmp_path / "b", seed=3, initial_noise=str(tmp_path / "n.safetensors"))
    )
    assert torch.equal(same.latents, base.latents)
    torch.save(-drawn[0], tmp_path / "neg.pt")  # (T, C, H, W) in a .pt file
    (other,) = batch.generate(tiny_request(folder, tmp_path / "c", seed=3, initial_noise=str(tmp_path / "neg.pt")))
    assert not torch.equal(other.latents, base.latents)
    meta = json.loads(other.files["meta"].read_text())
    assert meta["initial_noise"] == str(tmp_path / "neg.pt")
    assert meta["command"][-2:] == ["--initial-noise", str(tmp_path / "neg.pt")]


def test_initial_noise_rows_go_to_their_videos(tiny_folders, tmp_path):
    folder = tiny_folders["t2v"]
    noise = torch.randn(2, 3, 16, 4, 6, generator=torch.Generator().manual_seed(0))
    save_file({"x": noise}, str(tmp_path / "two.safetensors"))
    save_file({"x": noise[1:]}, str(tmp_path / "one.safetensors"))
    prompts = ("a dog runs", "a red car")
    both = batch.generate(
        tiny_request(folder, tmp_path / "a", prompts=prompts, initial_noise=str(tmp_path / "two.safetensors"))
    )
    (alone,) = batch.generate(
        tiny_request(
            folder, tmp_path / "b", prompts=prompts[1:], seed=43, initial_noise=str(tmp_path / "one.safetensors")
        )
    )
    assert torch.equal(both[1].latents, alone.latents)
    assert not torch.equal(both[0].latents, alone.latents)


@pytest.mark.parametrize(
    ("tensors", "match"),
    [
        (
            {"noise": torch.zeros(1, 3, 16, 4, 8)},
            r"has shape \(1, 3, 16, 4, 8\); this request samples latents \(1 or 2, 3, 16, 4, 6\)",
        ),
        ({"noise": torch.zeros(3, 3, 16, 4, 6)}, r"\(1 or 2, 3, 16, 4, 6\)"),
        ({"a": torch.zeros(1, 3, 16, 4, 6), "b": torch.zeros(1)}, "give one tensor, or name it 'noise'"),
        ({"noise": torch.full((1, 3, 16, 4, 6), float("nan"))}, "NaN"),
        ({"noise": torch.zeros(1, 3, 16, 4, 6, dtype=torch.int64)}, "floating-point"),
    ],
)
def test_bad_initial_noise_is_named_before_any_work(tmp_path, monkeypatch, tensors, match):
    monkeypatch.setattr(pipeline, "load_model", lambda *_a, **_k: pytest.fail("loaded"))
    path = tmp_path / "n.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match="initial_noise .*" + match):
        plan(GenerateOptions(prompts=("a", "b"), initial_noise=str(path), out=str(tmp_path), **SIZE))
    with pytest.raises(ValueError, match="does not exist"):
        plan(GenerateOptions(prompts=("a",), initial_noise=str(tmp_path / "none.pt"), out=str(tmp_path)))
    (tmp_path / "n.npy").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"must be a \.safetensors or \.pt file"):
        plan(GenerateOptions(prompts=("a",), initial_noise=str(tmp_path / "n.npy"), out=str(tmp_path)))


def test_diffusers_profile_with_initial_noise_equals_the_pipeline_given_latents(tiny_folders, tmp_path):
    from diffusers import CogVideoXPipeline

    folder = tiny_folders["t2v"]
    noise = torch.randn(1, 3, 16, 4, 6, generator=torch.Generator().manual_seed(11))
    save_file({"noise": noise}, str(tmp_path / "n.safetensors"))
    pipe = CogVideoXPipeline.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    want = pipe(
        prompt="a cat playing a piano",
        num_frames=9,
        height=32,
        width=48,
        num_inference_steps=4,
        latents=noise.clone(),
        guidance_scale=6.0,
        use_dynamic_cfg=True,
        generator=torch.Generator().manual_seed(7),
        output_type="latent",
        max_sequence_length=16,
    ).frames
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (res,) = batch.generate(
            tiny_request(
                folder, tmp_path, profile="diffusers", steps=4, seed=7, initial_noise=str(tmp_path / "n.safetensors")
            )
        )
    assert torch.equal(res.latents, want)
