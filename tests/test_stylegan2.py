"""StyleGAN2 (rosinality stylegan2-pytorch checkpoint format): key names and shapes, loading
errors, the modulated conv and upfirdn2d maths, determinism, truncation, hooks and edits.
Most checks use a tiny 32-px model; the 256-px one is only built and checked, never run."""
import argparse

import pytest
import torch
import torch.nn.functional as F

from ganpaint.adapters import stylegan2 as sg
from ganpaint.core.intervene import Stroke, apply_strokes

# Key names and shapes of a real 256-px, channel-multiplier-2 checkpoint's `g_ema` (style_dim
# 512, n_mlp 8), as rosinality's model.py defines them (and its convert_weight.py fills them).
KNOWN_256 = {
    "style.1.weight": (512, 512),
    "style.1.bias": (512,),
    "style.8.weight": (512, 512),
    "input.input": (1, 512, 4, 4),
    "conv1.conv.weight": (1, 512, 512, 3, 3),
    "conv1.conv.modulation.weight": (512, 512),
    "conv1.conv.modulation.bias": (512,),
    "conv1.noise.weight": (1,),
    "conv1.activate.bias": (512,),
    "to_rgb1.conv.weight": (1, 3, 512, 1, 1),
    "to_rgb1.conv.modulation.weight": (512, 512),
    "to_rgb1.bias": (1, 3, 1, 1),
    "convs.0.conv.weight": (1, 512, 512, 3, 3),
    "convs.0.conv.blur.kernel": (4, 4),
    "convs.6.conv.weight": (1, 512, 512, 3, 3),     # 64 px: 256 × 2
    "convs.8.conv.weight": (1, 256, 512, 3, 3),     # 128 px: 128 × 2
    "convs.10.conv.weight": (1, 128, 256, 3, 3),    # 256 px: 64 × 2
    "convs.11.conv.weight": (1, 128, 128, 3, 3),
    "convs.11.conv.modulation.weight": (128, 512),
    "convs.11.activate.bias": (128,),
    "to_rgbs.0.conv.weight": (1, 3, 512, 1, 1),
    "to_rgbs.0.upsample.kernel": (4, 4),
    "to_rgbs.5.conv.weight": (1, 3, 128, 1, 1),
    "to_rgbs.5.bias": (1, 3, 1, 1),
    "noises.noise_0": (1, 1, 4, 4),
    "noises.noise_1": (1, 1, 8, 8),
    "noises.noise_12": (1, 1, 256, 256),
}
N_KEYS_256 = 135  # 16 mapping + 1 input + 5 conv1 + 4 to_rgb1 + 12×5+6 convs + 6×5 to_rgbs + 13 noises

TINY = {4: 16, 8: 16, 16: 12, 32: 8}


def tiny_checkpoint(seed=0, latent_avg=True):
    """A random 32-px checkpoint in the format, every weight non-trivial (noise strengths and
    biases too, which start at zero in training)."""
    torch.manual_seed(seed)
    model = sg.StyleGAN2(32, style_dim=16, n_mlp=2, channels=TINY)
    sd = model.format_state_dict()
    for k, v in sd.items():
        if k.endswith("noise.weight") or k.endswith("activate.bias") or k.endswith("to_rgb1.bias") \
                or (k.startswith("to_rgbs.") and k.endswith(".bias")) or k.startswith("style."):
            sd[k] = v + 0.2 * torch.randn_like(v)
    out = {"g_ema": sd}
    if latent_avg:
        out["latent_avg"] = torch.randn(16)
    return out


@pytest.fixture(scope="module")
def ckpt():
    return tiny_checkpoint()


@pytest.fixture(scope="module")
def gen(ckpt, tmp_path_factory):
    path = tmp_path_factory.mktemp("sg2") / "tiny.pt"
    # as rosinality's train.py saves: with an argparse.Namespace and other entries
    torch.save({**ckpt, "args": argparse.Namespace(size=32, n_mlp=2, latent=16), "ada_aug_p": 0.0},
               path)
    return sg.load_generator(path)


def test_256_px_format_keys_and_shapes():
    torch.manual_seed(0)
    model = sg.StyleGAN2(256, 512, 8, channel_multiplier=2)
    shapes = model.format_shapes()
    for key, shape in KNOWN_256.items():
        assert shapes.get(key) == shape, key
    assert len(shapes) == N_KEYS_256
    assert not any(k.startswith("noises.noise_13") or k.startswith("convs.12") for k in shapes)
    cfg = sg.infer_config(model.format_state_dict())
    assert (cfg["size"], cfg["style_dim"], cfg["n_mlp"], cfg["channel_multiplier"]) == (256, 512, 8, 2)
    assert model.n_latent == 14
    names = {d["name"]: d for d in sg.layers(model)}
    assert model.paint_layer == "b8.conv1"
    assert (names["b8.conv1"]["resolution"], names["b8.conv1"]["channels"]) == (8, 512)
    assert (names["b256.conv1"]["resolution"], names["b256.conv1"]["channels"]) == (256, 128)
    assert sg.layer_table(256, 2) == sg.layers(model)
    assert "b16.conv0" in sg.describe_layers(model)


def test_256_px_checkpoint_loads():
    """Built (never run): the g_ema of a 256-px config-f checkpoint with latent_avg loads."""
    torch.manual_seed(1)
    sd = sg.StyleGAN2(256, 512, 8, channel_multiplier=2).format_state_dict()
    model = sg.from_checkpoint({"g_ema": sd, "latent_avg": torch.randn(512)}, "ffhq.pt",
                               truncation=0.7)
    assert model.resolution == 256 and model.z_dim == 512 and model.channel_multiplier == 2
    assert torch.equal(model.b256.conv1.conv.weight, sd["convs.11.conv.weight"])
    assert torch.equal(model.b4.const, sd["input.input"])
    assert torch.equal(model.b16.conv1.noise_const, sd["noises.noise_4"])
    assert model.truncation == 0.7 and model.has_w_avg


def test_wrong_shapes_and_keys_are_named(ckpt):
    sd = dict(ckpt["g_ema"])
    bad = dict(sd, **{"convs.3.conv.weight": torch.randn(1, 12, 12, 3, 4)})
    with pytest.raises(ValueError, match=r"bad\.pt: key 'convs\.3\.conv\.weight' has shape "
                                         r"\(1, 12, 12, 3, 4\), expected \(1, 12, 12, 3, 3\)"):
        sg.from_checkpoint({"g_ema": bad}, "bad.pt")
    bad = dict(sd, **{"style.2.weight": torch.randn(16, 17)})
    with pytest.raises(ValueError, match=r"'style\.2\.weight' .*expected \(16, 16\)"):
        sg.from_checkpoint({"g_ema": bad}, "bad.pt")
    bad = {k: v for k, v in sd.items() if k != "to_rgbs.1.conv.modulation.bias"}
    with pytest.raises(ValueError, match=r"missing key 'to_rgbs\.1\.conv\.modulation\.bias' "
                                         r"\(expected shape \(12,\)\)"):
        sg.from_checkpoint({"g_ema": bad}, "bad.pt")
    with pytest.raises(ValueError, match=r"missing key 'input\.input'"):
        sg.from_checkpoint({"g_ema": {k: v for k, v in sd.items() if k != "input.input"}})
    with pytest.raises(ValueError, match=r"unexpected key 'convs\.9\.noise\.weight'"):
        sg.from_checkpoint({"g_ema": dict(sd, **{"convs.9.noise.weight": torch.zeros(1)})})
    with pytest.raises(ValueError, match=r"'latent_avg' has shape \(15,\), expected \(16,\)"):
        sg.from_checkpoint({"g_ema": sd, "latent_avg": torch.zeros(15)})
    with pytest.raises(ValueError, match="g_ema"):
        sg.from_checkpoint({"generator": sd}, "x.pt")
    with pytest.raises(ValueError, match="not a StyleGAN2 checkpoint"):
        sg.from_checkpoint([1, 2], "x.pt")
    with pytest.raises(ValueError, match="truncation"):
        sg.from_checkpoint(ckpt, truncation=-0.5)


def test_optional_buffers_and_wrappers(ckpt):
    """Blur kernels and noise images may be absent (fixed defaults); a bare state dict or a
    'module.'-prefixed one loads."""
    sd = ckpt["g_ema"]
    z = torch.randn(2, 16)
    ref = sg.from_checkpoint(ckpt)
    no_kernels = {k: v for k, v in sd.items() if not k.endswith("kernel")}
    with torch.no_grad():
        assert torch.equal(sg.from_checkpoint({"g_ema": no_kernels})(z), ref(z))
        assert torch.equal(sg.from_checkpoint({"module." + k: v for k, v in sd.items()})(z), ref(z))
    no_noise = sg.from_checkpoint({"g_ema": {k: v for k, v in sd.items()
                                            if not k.startswith("noises.")}})
    assert "seed 0" in no_noise.notes[0]
    with torch.no_grad():
        assert torch.equal(no_noise(z), sg.from_checkpoint(
            {"g_ema": {k: v for k, v in sd.items() if not k.startswith("noises.")}})(z))


def test_upfirdn2d():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1
    k = torch.arange(1.0, 7.0).reshape(2, 3)  # asymmetric: a true convolution flips nothing back
    out = sg.upfirdn2d(x, k, pad=(1, 1))
    assert out.shape == (1, 1, 6, 5)
    assert torch.equal(out[0, 0, 2:4, 1:4], k)
    # 2× upsampling with the ×4 blur keeps a constant image constant away from the border
    up = sg.upfirdn2d(torch.ones(1, 2, 6, 6), sg.blur_kernel(gain=4.0), up=2, pad=(2, 1))
    assert up.shape == (1, 2, 12, 12)
    assert torch.allclose(up[:, :, 2:-2, 2:-2], torch.ones(1, 2, 8, 8))
    down = sg.upfirdn2d(torch.ones(1, 1, 8, 8), sg.blur_kernel(), down=2, pad=(1, 1))
    assert down.shape == (1, 1, 4, 4) and torch.allclose(down[:, :, 1:-1, 1:-1], torch.ones(1, 1, 2, 2))


@pytest.mark.parametrize("upsample", [False, True])
def test_modulated_conv_equals_per_sample_weights(upsample):
    """The factored computation equals the paper's: w' = w·s, w'' = w'/√(Σ w'² + ε), one conv
    per sample (transposed, stride 2, then the blur when upsampling)."""
    torch.manual_seed(0)
    conv = sg.ModulatedConv(6, 5, 3, 8, upsample=upsample)
    x, w = torch.randn(3, 6, 7, 7), torch.randn(3, 8)
    with torch.no_grad():
        got = conv(x, w)
        s = conv.modulation(w)
        outs = []
        for n in range(3):
            wt = conv.weight[0] * conv.scale * s[n][None, :, None, None]
            wt = wt / torch.sqrt(wt.pow(2).sum((1, 2, 3), keepdim=True) + 1e-8)
            if upsample:
                y = F.conv_transpose2d(x[n:n + 1], wt.transpose(0, 1), stride=2)
                outs.append(sg.upfirdn2d(y, sg.blur_kernel(gain=4.0), pad=(1, 1)))
            else:
                outs.append(F.conv2d(x[n:n + 1], wt, padding=1))
    assert got.shape == (3, 5, 14 if upsample else 7, 14 if upsample else 7)
    assert torch.allclose(got, torch.cat(outs), atol=1e-5)


def test_mapping_equalised_lr():
    lin = sg.EqualLinear(16, 4, lr_mul=0.01, activate=True)
    assert lin.gain == pytest.approx(0.01 / 4)
    x = torch.randn(2, 16)
    want = F.leaky_relu(x @ (lin.weight * 0.0025).t() + lin.bias * 0.01, 0.2) * 2 ** 0.5
    assert torch.allclose(lin(x), want)


def test_deterministic_per_seed(gen):
    assert gen.z_dim == 16 and gen.paint_layer == "b8.conv1"
    a = gen(gen.latents([0, 1, 2], seed=3))
    b = gen(gen.latents([0, 1, 2], seed=3))
    assert a.shape == (3, 3, 32, 32) and torch.equal(a, b)
    alone = gen(gen.latents([1], seed=3))
    assert torch.allclose(alone[0], a[1], atol=1e-5)  # the batch does not change a sample
    assert not torch.allclose(a[0], a[1])
    assert not torch.allclose(gen(gen.latents([0], seed=4))[0], a[0])


def test_noise_modes(ckpt):
    z = torch.randn(2, 16)
    with torch.no_grad():
        per_latent = sg.from_checkpoint(ckpt, noise="latent")
        one, two = per_latent(z), per_latent(z)
        assert torch.equal(one, two)
        assert torch.allclose(per_latent(z[1:]), one[1:], atol=1e-5)
        const, zero = sg.from_checkpoint(ckpt)(z), sg.from_checkpoint(ckpt, noise="zero")(z)
        assert not torch.allclose(one, const) and not torch.allclose(zero, const)
    with pytest.raises(ValueError, match="noise"):
        sg.from_checkpoint(ckpt, noise="random")


def test_truncation_pulls_toward_the_average_image(ckpt):
    z = torch.randn(4, 16)
    with torch.no_grad():
        full = sg.from_checkpoint(ckpt)
        avg_image = full.synthesis(ckpt["latent_avg"][None].expand(4, -1))
        assert torch.allclose(sg.from_checkpoint(ckpt, truncation=0.0)(z), avg_image, atol=1e-6)
        d = {t: (sg.from_checkpoint(ckpt, truncation=t)(z) - avg_image).pow(2).mean().item()
             for t in (1.0, 0.7, 0.3)}
    assert d[1.0] > d[0.7] > d[0.3]
    # without latent_avg: the documented fallback, a seeded mean of w
    est = sg.from_checkpoint(tiny_checkpoint(latent_avg=False), truncation=0.5, mean_samples=2048)
    assert "mean w of 2048 latents" in est.notes[0]
    assert torch.allclose(est.w_avg, est.mean_w(2048))


def test_hooked_layers_have_expected_resolution(gen):
    shapes = gen.layer_shapes(["b4.conv", "b8.conv0", "b8.conv1", "b16.conv1", "b32.conv1",
                               "b32.torgb"])
    assert shapes == {"b4.conv": (16, 4, 4), "b8.conv0": (16, 8, 8), "b8.conv1": (16, 8, 8),
                      "b16.conv1": (12, 16, 16), "b32.conv1": (8, 32, 32),
                      "b32.torgb": (3, 32, 32)}
    assert [d["name"] for d in sg.layers(gen.model)][:5] == \
        ["b4.conv", "b4.torgb", "b8.conv0", "b8.conv1", "b8.torgb"]
    assert gen.layer_shapes(["b16"]) == {"b16": (12, 16, 16)}  # a block: its conv1's features
    assert not gen.can_split("b8.conv1")  # w flows beside the features: full hooked passes
    z = gen.latents([0, 1])
    images, out = gen.run(z, ["b8.conv1"])
    assert torch.equal(images, gen(z))
    assert out["b8.conv1"].min() < 0 < out["b8.conv1"].max()  # after the leaky ReLU


def test_ablating_the_painting_layer_changes_the_image(gen):
    z = gen.latents([0, 1])
    layer = gen.paint_layer
    channels = gen.layer_shapes([layer])[layer][0]
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1
    strokes = [Stroke(list(range(channels)), mask)]
    base, _ = gen.run(z)
    edited, out = gen.run(z, [layer], edit={layer: lambda x: apply_strokes(x, strokes)})
    assert torch.equal(out[layer][:, :, 2:6, 2:6], torch.zeros(2, channels, 4, 4))
    assert out[layer][:, :, 0].abs().sum() > 0
    change = (edited - base).abs().mean(1)  # (N, 32, 32)
    assert change.max() > 0.05
    assert change[:, 8:24, 8:24].mean() > change[:, :4, :4].mean()  # mostly inside the stroke
