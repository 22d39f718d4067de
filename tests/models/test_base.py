import pytest
import torch

from cogsample import CallableNetwork, Conditioning, SamplingConfig, SeededNoise, latent_shape, sample


def test_callable_network_runs_in_every_path_and_checks_shapes():
    net = CallableNetwork(lambda x, t, context, ofs=None: torch.tanh(x[:, :, :16]) * 0.5)
    noise = SeededNoise.from_seed(0, batch=1)
    x = noise.initial(latent_shape(1, 5, 32, 32))
    out = sample(net, x, Conditioning(torch.randn(1, 4, 8)), SamplingConfig(steps=3), noise=noise)
    assert out.shape == x.shape and torch.isfinite(out).all()

    bad = CallableNetwork(lambda x, t, context, ofs=None: x[:, :, :8])
    with pytest.raises(ValueError, match=r"network returned \(2, 2, 8, 4, 4\); the protocol needs"):
        bad(torch.zeros(2, 2, 16, 4, 4), torch.zeros(2), torch.zeros(2, 1, 4))
    with pytest.raises(TypeError, match="must be callable"):
        CallableNetwork(3)


# --------------------------------------------------------------------------- ModelInfo's size rules


def test_model_info_check_size_rules():
    from cogsample.models import ModelInfo

    free = ModelInfo("free", frames=9, height=64, width=96)
    free.check_size(13, 32, 160)  # any 4k+1 frames, multiples of 16
    for args, match in (
        ((0, 64, 96), "frames must be a positive integer, got 0"),
        ((9.0, 64, 96), "frames must be a positive integer"),
        ((9, True, 96), "height must be a positive integer"),
        ((10, 64, 96), r"frames must be of the form 4k\+1 .* got 10; nearest: 9 or 13"),
        ((9, 8, 96), r"height must be a multiple of 16 \(VAE x patch size\), got 8; nearest: 16 or 16"),
        ((9, 64, 100), "width must be a multiple of 16 .* nearest: 96 or 112"),
    ):
        with pytest.raises(ValueError, match=match):
            free.check_size(*args)
    ModelInfo("coarse", size_multiple=32).check_size(9, 64, 96)
    with pytest.raises(ValueError, match="height must be a multiple of 32"):
        ModelInfo("coarse", size_multiple=32).check_size(9, 48, 96)

    fixed = ModelInfo("fixed", frames=9, height=64, width=96, fixed_size="a model of one size")
    fixed.check_size(9, 64, 96)
    with pytest.raises(ValueError, match=r"^frames must be 9 for a model of one size, got 13; longer videos in"):
        fixed.check_size(13, 64, 96)
    # in context windows of its native 3 latent frames it takes any longer video, never a shorter one
    fixed.check_size(45, 64, 96, window=3)
    with pytest.raises(ValueError, match=r"^context_frames must be 3 \(latent frames of its native 9\) for a model"):
        fixed.check_size(45, 64, 96, window=4)
    with pytest.raises(ValueError, match=r"^frames must be at least 9 for a model of one size, got 5$"):
        fixed.check_size(5, 64, 96, window=3)
    with pytest.raises(ValueError, match="width must be 96 for a model of one size, got 112"):
        fixed.check_size(45, 64, 112, window=3)
    with pytest.raises(ValueError, match="width must be 96 for a model of one size, got 112"):
        fixed.check_size(9, 64, 112)
    with pytest.raises(ValueError, match="4k"):  # the general rules come first
        fixed.check_size(10, 64, 96)

    capped = ModelInfo("capped", max_height=128, max_width=256)
    capped.check_size(9, 128, 256)
    with pytest.raises(ValueError, match=r"height must be at most 128 for capped \(its rotary table\), got 144"):
        capped.check_size(9, 144, 96)
    with pytest.raises(ValueError, match="width must be at most 256"):
        capped.check_size(9, 64, 272)


def test_model_info_size_for_image():
    from cogsample.models import ModelInfo

    assert ModelInfo("native").size_for_image(480, 832) is None
    short = ModelInfo("from the image", i2v=True, image_short_side=768)
    assert short.size_for_image(480, 832) == (768, 1328)  # the long side: 1331.2 -> 1328
    assert short.size_for_image(1000, 500) == (1536, 768)
    assert ModelInfo("small", image_short_side=64).size_for_image(100, 200) == (64, 128)


def test_the_built_in_models_rules():
    from cogsample.models.builtin import builtin_info
    from cogsample.models.trained import trained_info

    exact = builtin_info()
    exact.check_size(25, 160, 240)  # the clips render at any size
    assert (exact.fixed_size, exact.max_height, exact.image_short_side) == (None, None, None)
    trained = trained_info(i2v=True)
    trained.check_size(9, 64, 96)
    with pytest.raises(ValueError, match=r"height must be 64 for the trained built-in model \(trained at 9 frames"):
        trained.check_size(9, 128, 96)
    assert trained.size_for_image(480, 720) is None
