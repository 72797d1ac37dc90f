"""Inversion, adaptation, compositing, uploads and the encoder, on toy generators (fast)."""
import io
import struct
import zlib
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from ganpaint.core import checkpoint
from ganpaint.apps.encoder import Encoder, export, load_encoder, train_encoder
from ganpaint.adapters.generator import Generator
from ganpaint.core.intervene import Stroke
from ganpaint.apps.invert import (ImageError, Inversion, InversionError, composite, composite_region,
                             evaluate, features_of, fill_from_around, invert, load_image,
                             outside_change, psnr, receptive_growth, stroke_cells)
from ganpaint.world.scenes import render, to_tensor_images
from tests.toy import tiny_generator


class _Unflatten(nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0], 48, 4, 4)


def exact_generator(conv3=False):
    """z → linear → 48×4×4 features (the painting layer) → an orthogonal 1×1 conv → pixel
    shuffle to 3×16×16. Every image is some features' output, so inverting the features is
    exact. With `conv3`, a 3×3 conv at the end makes an edit spread one pixel (for compositing)."""
    torch.manual_seed(0)
    mix = nn.Conv2d(48, 48, 1)
    nn.init.orthogonal_(mix.weight)
    layers = OrderedDict(layer1=nn.Sequential(nn.Linear(8, 48 * 16), _Unflatten()), layer2=mix,
                         layer3=nn.PixelShuffle(4))
    if conv3:
        layers["layer4"] = nn.Conv2d(3, 3, 3, padding=1)
    return Generator(nn.Sequential(layers), 8, "exact", paint_layer="layer1")


def scene(size=16, seed=1_000_000_003):
    img, _ = render(seed, 64)
    return F.interpolate(to_tensor_images(img[None]), size=(size, size), mode="area")


def tiny():
    g = tiny_generator()
    return Generator(g, 16, "tiny", paint_layer="layer4")


FAST = dict(starts=4, z_steps=20, feature_steps=60)


# ---------------------------------------------------------------- inversion


def test_inversion_is_exact_when_the_later_layers_are_invertible():
    g, target = exact_generator(), scene()
    inv = invert(g, target, z_steps=10, feature_steps=300, feature_lr=0.05, feature_penalty=0,
                 adapt_steps=0)
    assert inv.psnr > 40
    assert inv.stats["psnr_optimised"] > 40 and inv.stats["psnr_start"] < 25
    assert inv.adapted == {}
    assert torch.equal(inv.render(g), inv.reconstruction)


def test_adaptation_improves_the_reconstruction_and_the_penalty_keeps_weights_close():
    g, target = tiny(), scene()
    before = {k: v.clone() for k, v in g.model.state_dict().items()}
    free = invert(g, target, adapt_steps=80, adapt_lr=5e-3, weight_penalty=0, **FAST)
    held = invert(g, target, adapt_steps=80, adapt_lr=5e-3, weight_penalty=100, **FAST)
    assert free.psnr > free.stats["psnr_optimised"] + 1.0
    assert held.stats["weight_drift"] < 0.5 * free.stats["weight_drift"]
    # only layers after the painting layer are adapted, and the model itself is untouched
    assert set(free.adapted) == {k for k in before if k.split(".")[0] in
                                 ("layer5", "layer6", "output_16x16")}
    assert all(torch.equal(v, g.model.state_dict()[k]) for k, v in before.items())


def test_perceptual_loss_from_a_unet_segmenter_encoder():
    from ganpaint.apps.invert import perceptual_network
    from ganpaint.world.segmenter import UNet, UNetSegmenter
    torch.manual_seed(0)
    seg = UNetSegmenter(UNet(3, width=4), ["a", "b", "c"], 16)
    feats = perceptual_network(seg)(scene())
    assert [f.shape[1] for f in feats] == [4, 8, 16]
    assert perceptual_network(object()) is None and perceptual_network(None) is None
    g, target = tiny(), scene()
    inv = invert(g, target, perceptual=seg, adapt_steps=20, **FAST)
    assert inv.stats["psnr_optimised"] > inv.stats["psnr_start"]


def test_progress_is_reported_up_to_done():
    seen = []
    invert(tiny(), scene(), starts=2, z_steps=10, feature_steps=10, adapt_steps=10,
           progress=lambda frac, desc: seen.append((frac, desc)))
    assert seen[-1][0] == 1.0 and [d for _, d in seen][-1] == "adapt"
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)


def test_a_generator_that_cannot_split_gets_a_clear_error():
    class Whole(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer1 = nn.Linear(4, 3 * 16)

        def forward(self, z):
            return self.layer1(z).reshape(-1, 3, 4, 4)
    g = Generator(Whole(), 4, "whole", paint_layer="layer1")
    with pytest.raises(InversionError, match="nn.Sequential"):
        invert(g, torch.zeros(1, 3, 4, 4))
    with pytest.raises(InversionError, match="no painting layer"):
        invert(Generator(tiny_generator(), 16, "t"), scene())


def test_saved_inversion_reloads_and_checks_its_model(tmp_path):
    g = tiny()
    inv = invert(g, scene(), adapt_steps=5, **FAST)
    inv.save(tmp_path / "inv.pt")
    back = Inversion.load(tmp_path / "inv.pt", g)
    assert torch.equal(back.render(g), inv.reconstruction)
    other = Generator(tiny_generator(), 16, "other", paint_layer="layer4")
    with pytest.raises(InversionError, match="inverted with model 'tiny'"):
        Inversion.load(tmp_path / "inv.pt", other)


# ---------------------------------------------------------------- compositing


def _region(cells, size, grow):
    r = F.interpolate(torch.as_tensor(cells, dtype=torch.float32)[None, None], size=size)
    return F.max_pool2d(r, 2 * grow + 1, 1, grow)[0, 0] > 0 if grow else r[0, 0] > 0


def test_composite_keeps_the_input_outside_the_grown_cells_and_takes_the_edit_inside():
    torch.manual_seed(0)
    original, unedited = torch.rand(1, 3, 16, 16) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1
    edited = unedited + 0.5  # the edit changes every pixel
    cells = torch.zeros(4, 4)
    cells[1, 1] = 1  # pixels 4..7
    out = composite(original, edited, unedited, cells, grow=2, feather=2)
    inside = _region(cells, 16, 2)
    assert torch.equal(out[..., ~inside], original[..., ~inside])
    assert torch.allclose(out[..., 4:8, 4:8], edited[..., 4:8, 4:8])  # deep inside: the edit
    assert not torch.equal(out[..., inside], original[..., inside])


def test_composite_only_where_the_edit_changed_pixels_and_no_op_is_exact():
    torch.manual_seed(1)
    original, unedited = torch.rand(1, 3, 16, 16) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1
    cells = torch.ones(4, 4)
    assert torch.equal(composite(original, unedited.clone(), unedited, cells, grow=3), original)
    edited = unedited.clone()
    edited[..., 0:2, 0:2] += 1.0  # a change in one corner only
    out = composite(original, edited, unedited, cells, grow=3)
    assert torch.equal(out[..., 5:, :], original[..., 5:, :])
    assert torch.equal(out[..., :, 5:], original[..., :, 5:])
    assert not torch.equal(out[..., :2, :2], original[..., :2, :2])


def test_composite_at_a_larger_resolution_keeps_every_outside_pixel():
    torch.manual_seed(2)
    big = (torch.randint(0, 256, (1, 3, 100, 100)).float() / 127.5) - 1
    unedited = torch.rand(1, 3, 16, 16) * 2 - 1
    edited = unedited - 0.7
    cells = torch.zeros(4, 4)
    cells[3, 0] = 1
    out = composite(big, edited, unedited, cells, grow=1)
    # model pixels 11..15 (rows) × 0..4 (columns) at most, plus one model pixel of upsampling
    keep = torch.ones(100, 100, dtype=torch.bool)
    keep[int(10 * 100 / 16):, :int(6 * 100 / 16) + 1] = False
    assert torch.equal(out[..., keep], big[..., keep])
    centre = F.interpolate(edited, size=(100, 100), mode="bilinear", align_corners=False)
    assert torch.allclose(out[..., 85:95, 5:15], centre[..., 85:95, 5:15], atol=1e-5)


def test_receptive_growth_is_measured():
    # tiny: layer4 is 8×8 at 16 px; layer5 upsamples and convolves, layer6 convolves: 2 pixels
    assert receptive_growth(tiny(), "layer4") == 2
    assert receptive_growth(exact_generator(), "layer1") == 0
    assert receptive_growth(exact_generator(conv3=True), "layer1") == 1


def test_an_edit_on_an_inversion_changes_only_its_region():
    g = exact_generator(conv3=True)
    target = scene()
    inv = invert(g, target, z_steps=5, feature_steps=100, adapt_steps=20, feature_lr=0.05)
    mask = torch.zeros(16, 16)
    mask[0:4, 12:16] = 1  # cell (0, 3)
    stroke = Stroke(list(range(48)), mask)
    assert torch.equal(stroke_cells([stroke], (4, 4)), F.adaptive_max_pool2d(mask[None], 4)[0])
    out = inv.edit(g, [stroke])
    region = _region(stroke_cells([stroke], (4, 4)), 16, inv.grow)
    assert inv.grow == 1
    assert torch.equal(out[..., ~region], target[..., ~region])
    assert (out[..., :4, 12:] - target[..., :4, 12:]).abs().max() > 0.1
    assert torch.equal(inv.edit(g, []), target)
    assert torch.equal(inv.edit(g, [Stroke([], mask)]), target)


def test_stroked_cells_restart_from_the_latents_features():
    """A "draw" stroke switches units on the latent's own features in its cells (the optimised
    offset there would redraw what it covers); a "remove" stroke's full cells are filled from
    the optimised features around them; elsewhere the optimised features stay."""
    g = exact_generator(conv3=True)
    inv = invert(g, scene(), z_steps=5, feature_steps=50, adapt_steps=0, feature_lr=0.05)
    f, fz = inv.base_features(g), features_of(g, inv.layer, inv.z)
    assert (f - fz).abs().max() > 1e-3  # the optimisation moved the features
    cells = torch.zeros(4, 4)
    cells[1:3, 2] = 1
    inside = cells.bool()
    drawn = inv.stroked_features(g, [Stroke([0, 5], cells, torch.tensor([2.0, 3.0]))])
    assert torch.equal(drawn[:, 0][..., inside], torch.full_like(drawn[:, 0][..., inside], 2.0))
    assert torch.allclose(drawn[:, 1:5][..., inside], fz[:, 1:5][..., inside])
    assert torch.equal(drawn[..., ~inside], f[..., ~inside])
    removed = inv.stroked_features(g, [Stroke([0, 5], cells)])
    assert torch.equal(removed[:, [0, 5]][..., inside], torch.zeros_like(removed[:, [0, 5]][..., inside]))
    assert torch.allclose(removed[:, 1:5][..., inside], fill_from_around(f, inside)[:, 1:5][..., inside])
    assert not torch.allclose(removed[:, 1:5][..., inside], fz[:, 1:5][..., inside])
    assert torch.equal(removed[..., ~inside], f[..., ~inside])
    # a soft edge: the ring restarts half-way to the latent's features, only the cells the
    # brush touched are filled, and the ring's switched units are halved
    soft = inv.stroked_features(g, [Stroke([0, 5], cells, feather=0.5)])
    ring = (F.max_pool2d(cells[None, None], 3, 1, 1)[0, 0] > 0) & ~inside
    assert torch.allclose(soft[:, 1:5][..., inside], removed[:, 1:5][..., inside])
    half = torch.lerp(f, fz, 0.5)
    assert torch.allclose(soft[:, 1:5][..., ring], half[:, 1:5][..., ring])
    assert torch.allclose(soft[:, [0, 5]][..., ring], 0.5 * half[:, [0, 5]][..., ring])
    # a removal over every cell has nothing around it: it restarts from the latent's features
    whole = inv.stroked_features(g, [Stroke([0, 5], torch.ones(4, 4))])
    assert torch.allclose(whole[:, 1:5], fz[:, 1:5])
    assert torch.equal(inv.stroked_features(g, []), f)
    assert torch.equal(inv.stroked_features(g, [Stroke([], cells)]), f)


def test_fill_from_around_continues_what_surrounds_the_hole():
    """A hole in a smooth field is filled with what its surroundings continue (a ramp stays a
    ramp), within the range around it, and the cells outside it are kept exactly."""
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    f = torch.stack([2 * xx + yy, -xx])[None]  # (1, 2, 8, 8)
    hole = torch.zeros(8, 8, dtype=torch.bool)
    hole[2:6, 3:6] = True
    spoiled = torch.where(hole, torch.tensor(100.0), f)  # what the hole held does not matter
    out = fill_from_around(spoiled, hole)
    assert torch.equal(out[..., ~hole], f[..., ~hole])
    assert torch.allclose(out, f, atol=1e-2)
    everything = fill_from_around(f, torch.ones(8, 8, dtype=torch.bool))
    assert everything.shape == f.shape and torch.isfinite(everything).all()


def test_edit_full_resolution_download(tmp_path):
    g = exact_generator(conv3=True)
    img = (np.random.default_rng(0).random((30, 50, 3)) * 255).astype(np.uint8)
    inv = invert(g, img, z_steps=5, feature_steps=30, adapt_steps=5)
    assert inv.image.box == (10, 0, 30)
    mask = torch.zeros(16, 16)
    mask[12:, 0:4] = 1
    full = inv.edit_full(g, [Stroke(list(range(48)), mask)])
    assert full.shape == (30, 50, 3) and full.dtype == np.uint8
    assert np.array_equal(full[:, :10], img[:, :10]) and np.array_equal(full[:, 40:], img[:, 40:])
    assert np.array_equal(full[:15], img[:15])  # the top half of the crop is far from the edit
    assert not np.array_equal(full[25:, 10:15], img[25:, 10:15])
    assert np.array_equal(inv.edit_full(g, []), img)


# ---------------------------------------------------------------- uploads


def _png(**kw):
    buf = io.BytesIO()
    Image.new(**kw).save(buf, "PNG")
    return buf.getvalue()


def _png_header(width, height):
    """A PNG that claims a size but holds no pixel data: PIL reads the size without decoding."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_bad_uploads_get_clear_errors(tmp_path):
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"hello, I am text", 16)
    (tmp_path / "notes.png").write_text("not really a png")
    with pytest.raises(ImageError, match="notes.png is not an image"):
        load_image(tmp_path / "notes.png", 16)
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "missing.png", 16)
    with pytest.raises(ImageError, match=r"empty \(0×0"):
        load_image(np.zeros((0, 0, 3), np.uint8), 16)
    with pytest.raises(ImageError, match="empty"):
        load_image(Image.new("RGB", (0, 0)), 16)
    with pytest.raises(ImageError, match="50.0 megapixels; the limit is 40 megapixels"):
        load_image(_png_header(10000, 5000), 16)
    with pytest.raises(ImageError, match="limit is 0 megapixels"):
        load_image(_png(mode="RGB", size=(100, 100)), 16, max_pixels=5000)
    truncated = _png(mode="RGB", size=(40, 40), color=(1, 2, 3))[:60]
    with pytest.raises(ImageError, match="cannot"):
        load_image(truncated, 16)


def test_any_mode_converts_to_rgb():
    red = load_image(_png(mode="RGBA", size=(20, 20), color=(255, 0, 0, 255)), 16).tensor
    assert torch.allclose(red[0, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
    clear = load_image(_png(mode="RGBA", size=(20, 20), color=(0, 0, 0, 0)), 16).tensor
    assert torch.equal(clear, torch.ones(1, 3, 16, 16))  # transparent → white
    grey = load_image(_png(mode="L", size=(16, 16), color=51), 16)
    assert torch.allclose(grey.tensor, torch.full((1, 3, 16, 16), 51 / 127.5 - 1))
    assert grey.message == "image is 16×16: used as is"
    p = Image.new("P", (24, 24), 1)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    assert torch.allclose(load_image(p, 16).tensor[0, :, 5, 5], torch.tensor([-1.0, 1.0, -1.0]))
    for mode in ("LA", "1", "CMYK", "I;16", "I", "F"):
        t = load_image(Image.new(mode, (20, 20)), 16).tensor
        assert t.shape == (1, 3, 16, 16) and t.min() >= -1 and t.max() <= 1, mode


def test_upload_is_centre_cropped_and_resized_with_a_message():
    a = np.zeros((40, 80, 3), np.uint8)
    a[:, 20:60] = 200  # the centre square is uniform
    prep = load_image(a, 16)
    assert prep.message == "image centre-cropped from 80×40 to 40×40 and resized to the model's 16×16"
    assert prep.box == (20, 0, 40)
    assert torch.allclose(prep.tensor, torch.full((1, 3, 16, 16), 200 / 127.5 - 1), atol=1e-6)
    assert "enlarged" in load_image(np.zeros((8, 8, 3), np.uint8), 16).message
    assert np.array_equal(prep.paste(prep.crop.copy()), a)


# ---------------------------------------------------------------- encoder


class _Interrupt(Generator):
    """A generator whose `run` is interrupted (as by ctrl-C) on a given call."""
    calls, stop_at = 0, None

    def run(self, *a, **k):
        type(self).calls += 1
        if type(self).calls == self.stop_at:
            raise KeyboardInterrupt
        return super().run(*a, **k)


def _train(tmp_path, steps, gen=None, **kw):
    gen = gen or tiny()
    return train_encoder(gen, tmp_path / "run", tmp_path / "enc.pt", steps=steps, batch_size=8,
                         lr=2e-3, save_every=5, export_every=10, log=lambda *a: None,
                         progress=False, **kw)


def test_encoder_training_loss_falls_and_export_loads(tmp_path):
    enc, hist = _train(tmp_path, 40)
    assert len(hist) == 40
    assert np.mean(hist[-5:]) < 0.8 * np.mean(hist[:5])
    back = load_encoder(tmp_path / "enc.pt", generator=tiny())
    x = scene()
    z, f = back(x)
    assert z.shape == (1, 16) and f.shape == (1, 8, 8, 8)
    assert torch.equal(z, enc(x)[0])
    assert isinstance(checkpoint.load(tmp_path / "enc.pt"), dict)  # weights only
    retrained = tiny()  # same name and shapes, other weights: the encoder no longer fits
    with torch.no_grad():
        next(retrained.model.parameters()).add_(0.1)
    with pytest.raises(ValueError, match="other weights"):
        load_encoder(tmp_path / "enc.pt", generator=retrained)
    inv = invert(tiny(), x, encoder=back, adapt_steps=5, **FAST)
    assert "psnr_encoder" in inv.stats and "psnr_start" in inv.stats


def test_adapt_from_tunes_only_that_layer_and_after():
    g = exact_generator(conv3=True)
    target = scene()
    inv = invert(g, target, adapt_steps=30, adapt_from="layer4", **FAST)
    assert inv.adapted and all(k.startswith("layer4.") for k in inv.adapted)
    assert inv.psnr > inv.stats["psnr_optimised"]  # the tuned tail still fits the image better
    with pytest.raises(InversionError, match="layer2.*layer3.*layer4"):
        invert(g, target, adapt_steps=1, adapt_from="layer1", **FAST)


def test_encoder_features_choose_the_start():
    """An encoder's predicted painting-layer features pick the latent whose features match,
    over the one whose image alone fits best, as strongly as `match_weight` says."""
    g = exact_generator()
    zs = g.latents(range(4), seed=0)
    with torch.no_grad():
        target = g(zs[1:2])
        _, out = g.run(zs[2:3], ["layer1"])
    oracle = lambda x: (torch.zeros(1, 8), out["layer1"])  # features of latent 2, no latent
    picked = {w: invert(g, target, encoder=oracle, starts=4, z_steps=0, feature_steps=0,
                        adapt_steps=0, match_weight=w).z for w in (0.0, 1e6)}
    assert torch.equal(picked[0.0], zs[1:2]) and torch.equal(picked[1e6], zs[2:3])


def test_encoder_training_resumes_as_if_never_interrupted(tmp_path):
    enc_a, hist_a = _train(tmp_path / "a", 12)
    gen = _Interrupt(tiny_generator(), 16, "tiny", paint_layer="layer4")
    _Interrupt.calls, _Interrupt.stop_at = 0, 9 + 1  # build_encoder runs once, then 8 steps
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "b", 12, gen)
    assert checkpoint.load(tmp_path / "b" / "run" / "state.pt")["step"] == 5
    enc_b, hist_b = _train(tmp_path / "b", 12)
    assert hist_b == hist_a
    assert all(torch.equal(a, b) for a, b in zip(enc_a.state_dict().values(),
                                                 enc_b.state_dict().values()))
    with pytest.raises(ValueError, match="different encoder"):
        _train(tmp_path / "b", 12, width=16)


def test_scene_encoder_export_is_under_10_mb(tmp_path):
    enc = Encoder(128, 64, (256, 8, 8))
    export(enc, tmp_path / "e.pt")
    assert (tmp_path / "e.pt").stat().st_size < 10e6
    with pytest.raises(checkpoint.CheckpointError, match="not a ganpaint encoder"):
        checkpoint.save({"config": {}}, tmp_path / "bad.pt")
        load_encoder(tmp_path / "bad.pt")


def test_composite_region_is_the_grown_cells():
    cells = torch.zeros(4, 4)
    cells[2, 1] = 1
    for grow in (0, 1, 3):
        assert torch.equal(composite_region(cells, 16, grow), _region(cells, 16, grow))


def test_evaluate_reports_the_bars_on_held_out_renders():
    g = Generator(tiny_generator(), 16, "tiny", paint_layer="layer4")
    out = evaluate(g, samples=2, log=lambda *a: None, adapt_steps=5, **FAST)
    assert out["samples"] == 2 and out["psnr_encoder"] is None
    assert out["psnr_adapted"] > out["psnr_start"] and out["seconds_per_image"] > 0
    assert out["edit_tree_left_median"] is None and out["outside_max_diff"] == 0.0


def test_the_change_outside_an_edit_is_measured_where_the_edit_did_not_reach():
    target = torch.zeros(1, 3, 4, 4)
    edited = target.clone()
    edited[..., 0, 0], edited[..., 3, 3] = 2.0, 0.5  # [-1, 1] units: a change of 1.0 and 0.25
    region = torch.zeros(4, 4, dtype=torch.bool)
    region[0, 0] = True
    assert outside_change(edited, target, region) == 0.25
    assert outside_change(edited, target, torch.ones(4, 4, dtype=torch.bool)) == 0.0  # no outside
