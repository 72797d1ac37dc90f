"""Paint on your own image: GAN inversion, image-specific adaptation and compositing.

The recipe of GANPaint Studio (Bau et al., SIGGRAPH 2019), for any generator the `Generator`
wrapper holds that is a sequence of top-level layers including the painting layer:

1. **Start** from an encoder's prediction, or the best of several random latents.
2. **Optimise** z, then the painting layer's features, to reconstruct the image (pixel loss, plus
   a perceptual loss on a segmenter's encoder features when one is given).
3. **Adapt**: fine-tune only the layers after the painting layer, with an L2 penalty towards
   the original weights, so the generator reproduces *this* image while its units keep their
   meaning (edits still work).
4. **Composite**: strokes act on the painting layer's features; the edited generation replaces
   the image only where the edit changed pixels, within the edited cells grown by the receptive
   field, with a feathered mask. Every other pixel is the input's, exactly.

The generator itself is never modified: the adapted weights live in the `Inversion` and are
applied with `torch.func.functional_call`, so several inversions (and app sessions) can share
one model.
"""
from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ganpaint.core import checkpoint
from ganpaint.core.hooks import Trace
from ganpaint.core.intervene import FEATHER, apply_strokes, stroke_mask

MAX_PIXELS = 40_000_000  # uploads above this are refused before decoding (memory, decode time)


class ImageError(ValueError):
    """An upload that cannot be used; the message says why and what to do."""


class InversionError(ValueError):
    """A generator (or saved state) that inversion cannot work with."""


# ----------------------------------------------------------------------------------------------
# Image input


@dataclass
class PreparedImage:
    """An upload made ready for a model: the full-resolution original (uint8 RGB), the square
    crop taken from it, and that crop resized to the model's size as a [-1, 1] tensor."""
    original: np.ndarray  # (H, W, 3) uint8, the whole upload after mode conversion
    box: tuple            # (left, top, side): the centred square crop, in original pixels
    tensor: torch.Tensor  # (1, 3, S, S) in [-1, 1]
    message: str          # what was done to the image, to show the user

    @property
    def crop(self) -> np.ndarray:
        """The centred square taken from the original (uint8, side × side × 3, at the
        original's resolution): what a full-size composite starts from."""
        left, top, side = self.box
        return self.original[top:top + side, left:left + side]

    def paste(self, crop: np.ndarray) -> np.ndarray:
        """The original with its crop replaced by `crop` (uint8, side × side): the download is
        the uploaded image at its own resolution."""
        left, top, side = self.box
        if crop.shape[:2] != (side, side):
            raise ValueError(f"crop is {crop.shape[1]}×{crop.shape[0]}, expected {side}×{side}")
        out = self.original.copy()
        out[top:top + side, left:left + side] = crop
        return out


def _to_rgb(im):
    """Any PIL mode → RGB; transparency is flattened onto white (what a viewer shows)."""
    from PIL import Image
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im).convert("RGB")
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float greyscale: rescale to 8 bits
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / hi * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    return im.convert("RGB")


def _open(source, max_pixels):
    """A PIL image from a path, bytes, file object, PIL image or uint8/float array; the size is
    checked before the pixels are decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    name = "the image"
    if isinstance(source, Image.Image):
        im = source
    elif isinstance(source, np.ndarray):
        a = source
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
            raise ImageError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4); got shape "
                             f"{a.shape}")
        _check_size(a.shape[1], a.shape[0], max_pixels, name)
        if a.dtype != np.uint8:
            if not np.issubdtype(a.dtype, np.number):
                raise ImageError(f"an image array must hold numbers, not {a.dtype}")
            a = np.clip(a * 255.0 if a.max() <= 1.0 else a, 0, 255).round().astype(np.uint8)
        im = Image.fromarray(np.ascontiguousarray(a))
    else:
        if isinstance(source, (bytes, bytearray)):
            name, fh = "the uploaded data", io.BytesIO(source)
        elif isinstance(source, (str, Path)):
            name, fh = str(source), source
            if not Path(source).exists():
                raise ImageError(f"{source}: file not found")
            if Path(source).is_dir():
                raise ImageError(f"{source}: is a folder, not an image file")
        else:
            name, fh = getattr(source, "name", "the upload"), source
        try:
            im = Image.open(fh)
        except UnidentifiedImageError:
            raise ImageError(f"{name} is not an image (PNG, JPEG, WebP, BMP, GIF, TIFF ... "
                             f"files are accepted)") from None
        except Image.DecompressionBombError as e:
            raise ImageError(f"{name}: too large ({e}); the limit is "
                             f"{max_pixels / 1e6:.0f} megapixels") from None
        except OSError as e:
            raise ImageError(f"{name}: cannot read this image: {e}") from None
    _check_size(im.width, im.height, max_pixels, name)
    try:
        im = ImageOps.exif_transpose(im)  # photos are stored sideways with an orientation tag
        im.load()
    except Exception as e:  # truncated or corrupt pixel data
        raise ImageError(f"{name}: cannot decode this image (truncated or corrupt?): {e}") from None
    return im


def _check_size(width, height, max_pixels, name):
    if width <= 0 or height <= 0:
        raise ImageError(f"{name} is empty ({width}×{height} pixels)")
    if width * height > max_pixels:
        raise ImageError(f"{name} is {width}×{height} = {width * height / 1e6:.1f} megapixels; "
                         f"the limit is {max_pixels / 1e6:.0f} megapixels: downscale it first")


def load_image(source, size: int, max_pixels: int = MAX_PIXELS) -> PreparedImage:
    """Any image (path, bytes, file object, PIL image, array; any size, any mode) → the centred
    square crop resized to `size` × `size`, with a message saying what was done."""
    from PIL import Image
    im = _to_rgb(_open(source, max_pixels))
    original = np.asarray(im, dtype=np.uint8).copy()
    h, w = original.shape[:2]
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    crop = original[top:top + side, left:left + side]
    notes = []
    if side != w or side != h:
        notes.append(f"centre-cropped from {w}×{h} to {side}×{side}")
    if side != size:
        notes.append(f"{'resized' if side > size else 'enlarged'} to the model's {size}×{size}")
        crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.LANCZOS))
    message = ("image " + " and ".join(notes)) if notes else f"image is {size}×{size}: used as is"
    t = torch.from_numpy(np.array(crop)).permute(2, 0, 1)[None].float() / 127.5 - 1
    return PreparedImage(original, (left, top, side), t, message)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2), after clamping to the valid range."""
    mse = (a.detach().float().clamp(-1, 1) - b.detach().float().clamp(-1, 1)).pow(2).mean()
    return float("inf") if mse == 0 else float(10 * torch.log10(4.0 / mse))


# ----------------------------------------------------------------------------------------------
# Running a generator split at its painting layer, with or without adapted weights


def check_splittable(generator, layer: str | None = None) -> str:
    """The painting layer, if the generator can be inverted at it; else a clear error."""
    layer = layer or generator.paint_layer
    if layer is None:
        raise InversionError(f"{generator.name}: no painting layer: set the model's `paint_layer` "
                             f"attribute, or pass layer=")
    if not generator.can_split(layer):
        kind = type(generator.model).__name__
        raise InversionError(
            f"{generator.name}: cannot invert at {layer!r}: inversion needs a generator that is an "
            f"nn.Sequential with {layer!r} as a top-level layer (ProGAN files and the shipped scene "
            f"GAN are), so it can optimise that layer's features and adapt only the layers after "
            f"it; this model is a {kind}"
            + ("" if not isinstance(generator.model, nn.Sequential) else
               f" whose top-level layers are {[n for n, _ in generator.model.named_children()]}"))
    return layer


def later_layers(generator, layer: str) -> list:
    """[(name, module)] of the top-level layers after `layer`: the part adaptation tunes."""
    children = list(generator.model.named_children())
    names = [n for n, _ in children]
    return children[names.index(layer) + 1:]


def later_parameters(generator, layer: str) -> dict:
    """{full parameter name: tensor} of the layers after `layer` (views of the model's)."""
    return {f"{name}.{k}": p for name, m in later_layers(generator, layer)
            for k, p in m.named_parameters()}


def forward_after(generator, layer: str, features: torch.Tensor, params: dict | None = None,
                  layers=None):
    """Images from painting-layer features, through the later layers with `params` ({full
    name: tensor}, e.g. adapted weights) in place of the model's own; the model is untouched.
    `layers`: run only these (name, module) pairs instead (a tail of the later layers)."""
    x = features
    for name, module in (later_layers(generator, layer) if layers is None else layers):
        sub = {k[len(name) + 1:]: v for k, v in (params or {}).items() if k.startswith(name + ".")}
        x = functional_call(module, sub, (x,)) if sub else module(x)
    return x


def features_of(generator, layer: str, z: torch.Tensor, grad=False) -> torch.Tensor:
    """The painting layer's output for z; with `grad`, differentiable with respect to z."""
    with torch.set_grad_enabled(grad), Trace(generator.model, [layer], stop=True,
                                             detach=not grad) as tr:
        generator.model(z)
    return tr[layer]


@torch.no_grad()
def receptive_growth(generator, layer: str, z: torch.Tensor | None = None) -> int:
    """How many output pixels beyond a painting-layer cell's footprint an edit of that cell can
    change, measured: perturb the centre cell's features and see where the image moves."""
    z = generator.latents([0]) if z is None else z[:1]
    f = features_of(generator, layer, z)
    h, w = f.shape[-2:]
    cy, cx = h // 2, w // 2
    f2 = f.clone()
    f2[..., cy, cx] += 3 * f.std() * torch.randn(f.shape[1], generator=torch.Generator().manual_seed(0))
    diff = (forward_after(generator, layer, f2) - forward_after(generator, layer, f)).abs().amax((0, 1))
    H, W = diff.shape
    ys, xs = torch.nonzero(diff > 1e-6, as_tuple=True)
    if len(ys) == 0:
        return 0
    sy, sx = H / h, W / w  # cell footprint in pixels
    y0, y1, x0, x1 = cy * sy, (cy + 1) * sy - 1, cx * sx, (cx + 1) * sx - 1
    out_y = torch.clamp(torch.maximum(y0 - ys, ys - y1), min=0)
    out_x = torch.clamp(torch.maximum(x0 - xs, xs - x1), min=0)
    return int(math.ceil(float(torch.maximum(out_y, out_x).max())))


# ----------------------------------------------------------------------------------------------
# Losses


def perceptual_network(source):
    """A function images → list of feature maps for the perceptual loss, or None.

    `source` may be such a function; an object with `perceptual_features(images)`; or a
    segmenter whose `net` has a U-Net encoder `enc1`, `enc2`, `enc3` (the shipped one): its
    features at three scales, at the segmenter's resolution. Anything else: None (pixel loss
    only)."""
    if source is None:
        return None
    if callable(getattr(source, "perceptual_features", None)):
        return source.perceptual_features
    net = getattr(source, "net", None)
    blocks = [getattr(net, n, None) for n in ("enc1", "enc2", "enc3")]
    if all(isinstance(b, nn.Module) for b in blocks):
        res = getattr(source, "resolution", None)

        def features(x):
            if res and tuple(x.shape[-2:]) != (res, res):
                x = F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False)
            out, h = [], x
            for i, block in enumerate(blocks):
                h = block(h if i == 0 else F.max_pool2d(h, 2))
                out.append(h)
            return out
        return features
    if callable(source) and not hasattr(source, "segment"):
        return source
    return None


class ReconstructionLoss:
    """Pixel MSE plus, with a feature network, `perceptual` × the mean of per-scale MSEs of its
    features (each divided by the target's mean square, so scales weigh alike)."""

    def __init__(self, target: torch.Tensor, features=None, perceptual: float = 0.1):
        self.target, self.features, self.weight = target, features, float(perceptual)
        self.target_feats = None
        if features is not None and self.weight > 0:
            with torch.no_grad():
                self.target_feats = [t.detach() for t in features(target)]
            self.norms = [t.pow(2).mean().clamp_min(1e-8) for t in self.target_feats]

    def __call__(self, images: torch.Tensor, per_sample=False) -> torch.Tensor:
        dims = (1, 2, 3)
        loss = (images - self.target).pow(2).mean(dims)
        if self.target_feats is not None:
            feats = self.features(images)
            p = sum((f - t).pow(2).mean(dims) / n
                    for f, t, n in zip(feats, self.target_feats, self.norms)) / len(feats)
            loss = loss + self.weight * p
        return loss if per_sample else loss.mean()


# ----------------------------------------------------------------------------------------------
# The inversion


@dataclass
class Inversion:
    """An image inverted into a generator: everything needed to reconstruct and edit it.

    `features` are the painting layer's features the optimisation settled on (None: those of
    `z`); `adapted` holds copies of the parameters of the layers after the painting layer, as
    fine-tuned for this image (empty: the model's own)."""
    target: torch.Tensor          # (1, 3, S, S) in [-1, 1]
    z: torch.Tensor               # (1, z_dim)
    layer: str
    features: torch.Tensor | None
    adapted: dict
    reconstruction: torch.Tensor  # (1, 3, S, S), with the adapted weights, no edit
    psnr: float
    grow: int = 0                 # receptive-field growth of one cell, in model pixels
    stats: dict = field(default_factory=dict)  # psnr_start/encoder/optimised/adapted, seconds, drift
    model: str = ""               # the generator's name, to check a saved state is reused right
    image: PreparedImage | None = None  # the upload, for full-resolution compositing

    def base_features(self, generator) -> torch.Tensor:
        """The painting layer's features of the inverted latent (with the learned
        offset): what strokes edit."""
        return self.features if self.features is not None else self.latent_features(generator)

    def stroked_features(self, generator, strokes=()) -> torch.Tensor:
        """The painting layer's features with `strokes` applied. In the cells a stroke touches,
        the features first go back to the latent's own: the optimised offset holds detail the
        units do not explain (in a tree's cells, much of the tree), which would keep drawing
        what a "remove" stroke switched off. On the scene GAN ("remove tree", 20 units, 31
        held-out tree renders) this leaves 23 % of the tree instead of 75 %, at the same PSNR
        (the unedited reconstruction does not change). The cells a "remove" stroke reaches at
        full strength (every cell the brush touched; not its soft ring) are filled from the
        optimised features around them instead (`fill_from_around`): what was behind the object
        is most like what is beside it, and the latent's own features there still hold much of
        the object (the same 31 scenes, soft edge: 9 % left, not 24 %). A removal over every
        cell has nothing around it and restarts from the latent's features."""
        strokes = list(strokes)
        f = self.base_features(generator)
        if self.features is not None and strokes:
            grid = f.shape[-2:]
            cells = stroke_cells(strokes, grid).to(f.device, f.dtype)
            if cells.any():
                hole = stroke_cells([s for s in strokes if s.value is None], grid) >= 1
                restart = self.latent_features(generator).to(f.device)
                if hole.any() and not hole.all():
                    restart = torch.where(hole.to(f.device), fill_from_around(f, hole), restart)
                f = torch.lerp(f, restart, cells)
        return apply_strokes(f, strokes)

    def latent_features(self, generator) -> torch.Tensor:
        """The painting layer's features of the latent alone: what a "draw" stroke's cells
        (and a stroke's soft ring) restart from, and what a stroke's units are chosen on (see
        `stroke`, `stroked_features`)."""
        return features_of(generator, self.layer, self.z.to(generator.device))

    def stroke(self, painter, concept, mask, action="draw", units=10, strength=1.0, feather=FEATHER):
        """`painter.stroke` for this image: units chosen on the features the stroke edits."""
        return painter.stroke(concept, mask, action, units, strength,
                              features=self.latent_features(painter.generator), feather=feather)

    @torch.no_grad()
    def render(self, generator, strokes=()) -> torch.Tensor:
        """The generated image (1, 3, S, S) with `strokes` applied at the painting layer and the
        adapted later layers; no compositing."""
        return forward_after(generator, self.layer, self.stroked_features(generator, strokes),
                             self.adapted)

    def edit(self, generator, strokes=(), grow: int | None = None) -> torch.Tensor:
        """The target with the strokes' edit composited in (1, 3, S, S); no stroke, or one that
        changes nothing, returns the target exactly."""
        strokes = list(strokes)
        f = self.base_features(generator)
        cells = stroke_cells(strokes, f.shape[-2:])
        return composite(self.target, self.render(generator, strokes), self.render(generator),
                         cells, self.grow if grow is None else grow)

    def edit_full(self, generator, strokes=(), grow: int | None = None) -> np.ndarray:
        """The uploaded image at its own resolution (uint8 H × W × 3) with the edit composited
        into its crop; needs `image` (set by `invert` when given a path, bytes or PIL image)."""
        if self.image is None:
            raise ValueError("this inversion has no uploaded image: use edit() for the model-size result")
        strokes = list(strokes)
        cells = stroke_cells(strokes, self.base_features(generator).shape[-2:])
        crop = torch.from_numpy(self.image.crop.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
        out = composite(crop, self.render(generator, strokes), self.render(generator), cells,
                        self.grow if grow is None else grow)
        return self.image.paste(_to_uint8(out))

    def paint(self, painter, concept, mask, action="draw", units=10, strength=1.0):
        """One `Painter` stroke on this image, composited: the same call as `Painter.paint`."""
        return self.edit(painter.generator, [self.stroke(painter, concept, mask, action, units, strength)])

    # A state a later command can reuse (data only: loadable with weights_only=True).
    def state_dict(self) -> dict:
        """Everything needed to reuse the inversion (latent, features, adapted weights,
        image), as tensors and plain values for a weights-only file."""
        return {"target": self.target, "z": self.z, "layer": self.layer,
                "features": self.features, "adapted": dict(self.adapted),
                "reconstruction": self.reconstruction, "psnr": self.psnr, "grow": self.grow,
                "stats": dict(self.stats), "model": self.model,
                "box": list(self.image.box) if self.image else None}

    def save(self, path):
        """Write the state (atomically) for `ganpaint paint --state` and later sessions."""
        checkpoint.save(self.state_dict(), path)

    @classmethod
    def load(cls, path, generator=None) -> "Inversion":
        """Read a saved inversion; with `generator`, check it was made with that model."""
        s = checkpoint.load(path)
        try:
            inv = cls(s["target"], s["z"], s["layer"], s["features"], dict(s["adapted"]),
                      s["reconstruction"], float(s["psnr"]), int(s["grow"]), dict(s["stats"]),
                      s["model"])
        except (KeyError, TypeError) as e:
            raise checkpoint.CheckpointError(f"{path}: not a ganpaint inversion file: {e}") from None
        if generator is not None:
            if inv.model and inv.model != generator.name:
                raise InversionError(f"{path} was inverted with model {inv.model!r}, not "
                                     f"{generator.name!r}: invert the image again")
            ours = later_parameters(generator, check_splittable(generator, inv.layer))
            bad = [k for k, v in inv.adapted.items() if k not in ours or ours[k].shape != v.shape]
            if bad:
                raise InversionError(f"{path}: its adapted weights do not fit {generator.name!r} "
                                     f"(first mismatch: {bad[0]}): invert the image again")
        return inv


def fill_from_around(f: torch.Tensor, hole: torch.Tensor, steps: int = 40) -> torch.Tensor:
    """`f` (N, C, h, w) with the cells of `hole` (h, w bool) replaced by a smooth fill from the
    cells around them (Jacobi steps of a 3×3 average, the other cells held fixed): what a
    removed object's cells become. A hole covering every cell keeps a smoothed `f`."""
    hole = hole.to(f.device)
    out = f.clone()
    if not hole.all():  # start from the mean around: fewer steps to settle
        out = torch.where(hole, f[..., ~hole].mean(-1)[..., None, None], f)
    for _ in range(steps):
        avg = F.avg_pool2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        out = torch.where(hole, avg, f)
    return out


def stroke_cells(strokes, grid) -> torch.Tensor:
    """(h, w) in [0, 1]: the painting-layer cells any stroke touches (the union of their masks
    at the layer's grid; a per-sample mask counts for the first sample)."""
    cells = torch.zeros(tuple(grid))
    for s in strokes:
        if len(s.units) == 0:
            continue
        m = stroke_mask(s, grid)
        cells = torch.maximum(cells, m[0] if m.dim() == 3 else m)
    return cells


def composite_region(cells, size, grow: int = 0) -> torch.Tensor:
    """(size, size) bool: the edited cells upsampled to the model's size and grown by `grow`
    pixels; `composite` leaves every pixel outside it as the original's."""
    cells = torch.as_tensor(cells, dtype=torch.float32)
    region = F.interpolate(cells[None, None], size=(size, size), mode="nearest")
    if grow > 0:
        region = F.max_pool2d(region, 2 * int(grow) + 1, stride=1, padding=int(grow))
    return region[0, 0] > 0


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    x = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().byte()
    return x[0].permute(1, 2, 0).cpu().numpy()


def _feather(region: torch.Tensor, width: int) -> torch.Tensor:
    """A soft mask that is 0 outside `region` (N, 1, H, W) and ramps up to 1 over `width` pixels
    inside it (the mean of the region eroded by 0 … width−1 pixels)."""
    if width <= 1:
        return region
    out, r = region.clone(), region
    for _ in range(width - 1):
        r = -F.max_pool2d(-r, 3, stride=1, padding=1)  # erode by one pixel
        out = out + r
    return out / width


def composite(original: torch.Tensor, edited: torch.Tensor, unedited: torch.Tensor, cells,
              grow: int = 0, feather: int = 3, tolerance: float = 2 / 255) -> torch.Tensor:
    """Blend an edit into the original: out = original·(1 − a) + edited·a.

    `edited` / `unedited`: the generator's image with and without the edit, at the model's
    size S (the same computation, so they differ only where the edit acts); `original` at any
    size (the model's, or the uploaded crop's). `cells` (h, w): the painting-layer cells the
    edit touched. The mask a is built at the model's size: the cells, upsampled, grown by
    `grow` pixels (the receptive field), feathered inward over `feather` pixels, and kept only
    near pixels the edit changed by more than `tolerance` (in [-1, 1] units; 2/255 = one grey
    level). It is then upsampled bilinearly to the original's size. Where a = 0, the output is
    the original's pixel exactly; an edit that changes nothing returns the original."""
    squeeze = original.dim() == 3
    orig = original[None] if squeeze else original
    edited = edited.to(orig.device, orig.dtype)
    unedited = unedited.to(orig.device, orig.dtype)
    S = edited.shape[-2:]
    cells = torch.as_tensor(cells, dtype=torch.float32).to(orig.device)
    if cells.dim() != 2:
        raise ValueError(f"cells must be an (h, w) mask; got shape {tuple(cells.shape)}")
    if S[0] != S[1]:
        raise ValueError(f"the generated images must be square, not {S[1]}×{S[0]}")
    region = composite_region(cells, S[0], grow)[None, None].float()
    alpha = _feather(region, int(feather))
    changed = ((edited - unedited).abs().amax(1, keepdim=True) > tolerance).float()
    near = F.avg_pool2d(F.max_pool2d(changed, 3, 1, 1), 3, 1, 1, count_include_pad=False)
    alpha = alpha * near  # (N, 1, h, w) at the model's size
    H, W = orig.shape[-2:]
    if not (alpha > 0).any():
        out = orig.clone()
        return out[0] if squeeze else out
    # Blend only inside the bounding box of the (upsampled) mask: uploads can be megapixels.
    ys, xs = torch.nonzero(alpha.amax((0, 1)) > 0, as_tuple=True)
    sy, sx = H / S[0], W / S[1]
    y0, y1 = max(0, int((ys.min() - 1) * sy)), min(H, int(math.ceil((ys.max() + 2) * sy)))
    x0, x1 = max(0, int((xs.min() - 1) * sx)), min(W, int(math.ceil((xs.max() + 2) * sx)))
    out = orig.clone()
    if (H, W) == tuple(S):
        a, e = alpha[..., y0:y1, x0:x1], edited[..., y0:y1, x0:x1]
    else:  # upsample the mask and the edit to the original's size, over the box only
        a = _resize_box(alpha, (H, W), (y0, y1, x0, x1))
        e = _resize_box(edited, (H, W), (y0, y1, x0, x1))
    o = orig[..., y0:y1, x0:x1]
    out[..., y0:y1, x0:x1] = torch.where(a > 0, o * (1 - a) + e * a, o)
    return out[0] if squeeze else out


def _resize_box(x: torch.Tensor, size, box) -> torch.Tensor:
    """The window `box` (y0, y1, x0, x1) of `x` bilinearly resized to `size`, computed without
    making the full-size tensor (align_corners=False sampling, as F.interpolate)."""
    H, W = size
    y0, y1, x0, x1 = box
    h, w = x.shape[-2:]
    gy = ((torch.arange(y0, y1, dtype=torch.float32) + 0.5) * h / H - 0.5).clamp(0, h - 1)
    gx = ((torch.arange(x0, x1, dtype=torch.float32) + 0.5) * w / W - 0.5).clamp(0, w - 1)
    iy0, ix0 = gy.floor().long(), gx.floor().long()
    iy1, ix1 = (iy0 + 1).clamp(max=h - 1), (ix0 + 1).clamp(max=w - 1)
    wy, wx = (gy - iy0)[:, None], (gx - ix0)[None, :]
    rows0, rows1 = x[..., iy0, :], x[..., iy1, :]
    top = rows0[..., ix0] * (1 - wx) + rows0[..., ix1] * wx
    bottom = rows1[..., ix0] * (1 - wx) + rows1[..., ix1] * wx
    return top * (1 - wy) + bottom * wy


# ----------------------------------------------------------------------------------------------
# Optimisation


def _reporter(progress, total):
    """progress: None (silent), True (a tqdm bar), or a callable (fraction, description), which
    is how `gr.Progress` is called."""
    if progress is None or progress is False:
        return lambda n, desc: None, lambda: None
    if progress is True:
        from tqdm import tqdm
        bar = tqdm(total=total, desc="invert", unit="step")

        def report(n, desc):
            bar.set_description(f"invert: {desc}")
            bar.update(n - bar.n)
        return report, bar.close
    return lambda n, desc: progress(min(1.0, n / max(total, 1)), desc), lambda: None


def _adam(params, steps, lr, loss_fn, report, done, desc, every=10):
    """Adam with a cosine decay to a tenth of `lr`; gradients only for `params` (the model's
    own weights get none). Returns the last loss."""
    opt = torch.optim.Adam(params, lr=lr)
    loss = None
    for i in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / max(steps, 1))))
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        opt.step()
        if (i + 1) % every == 0 or i + 1 == steps:
            report(done + i + 1, desc)
    return None if loss is None else float(loss.detach())


def invert(generator, image, encoder=None, perceptual=None, layer: str | None = None,
           starts: int = 16, z_steps: int = 100, feature_steps: int = 100, adapt_steps: int = 250,
           z_lr: float = 0.05, feature_lr: float = 0.05, adapt_lr: float = 3e-3,
           perceptual_weight: float = 0.1, feature_penalty: float = 3.0,
           weight_penalty: float = 1.0, match_weight: float = 1.0,
           adapt_from: str | None = None, seed: int = 0,
           progress=None) -> Inversion:
    """Invert `image` into `generator` and adapt the generator to it.

    image: a (1, 3, S, S) / (3, S, S) tensor in [-1, 1] at the model's size, a `PreparedImage`
    (from `load_image`, whose message a caller shows), or anything `load_image` reads (path,
    bytes, PIL image, array), which is then centre-cropped and resized.
    encoder: optional; maps the image to z, or to (z, painting-layer features).
    perceptual: optional segmenter (or feature function, see `perceptual_network`).
    starts: random latents tried (with the encoder's latent, when there is one); the best by
    reconstruction loss is kept.
    match_weight: with an encoder that predicts the painting layer's features, how much their
    relative distance to a latent's features counts, in choosing the start and in optimising z.
    feature_penalty: how strongly the optimised features are held to those of the optimised z
    (relative MSE). Freer features reconstruct better but draw the image with units other than
    the concept's; strokes restart their cells from the latent's features or, for a removal,
    from the features around them (see `Inversion.stroked_features`), so this matters less for
    edits than it did: measured before that, on the scene GAN without an encoder (first 8 tree
    renders, 20 units removed), penalty 1.0 gave 27.8 dB and left 64 % of the tree, 3.0 with 250 adaptation steps 28.5 dB and 49 %.
    adapt_from: the first layer adapted (default: the one after the painting layer); the layers
    between stay the model's, so more of the layout stays the units' (edits hold better) and
    adaptation is faster, at some PSNR. On the scene GAN (12 tree renders) "layer6" left 71 % of
    a removed tree at 26.5 dB, against 77 % at 26.9 dB by default.
    weight_penalty: the L2 penalty on ‖θ − θ₀‖² / ‖θ₀‖² during adaptation (higher keeps the
    adapted weights closer to the original; 0 turns it off).
    progress: None, True (tqdm), or a callable (fraction, description) such as `gr.Progress()`.
    """
    t0 = time.perf_counter()
    layer = check_splittable(generator, layer)
    dev = generator.device
    for _, m in later_layers(generator, layer):  # batch norm etc. must not update statistics
        m.eval()
    prepared, size = None, output_size(generator)
    if isinstance(image, PreparedImage):
        prepared, target = image, image.tensor
    elif isinstance(image, torch.Tensor):
        target = image[None] if image.dim() == 3 else image
        if target.dim() != 4 or target.shape[:2] != (1, 3):
            raise ValueError(f"image tensor must be (1, 3, S, S) or (3, S, S); got {tuple(image.shape)}")
    else:
        prepared = load_image(image, size)
        target = prepared.tensor
    target = target.to(dev, torch.float32)
    if tuple(target.shape[-2:]) != (size, size):
        raise ValueError(f"image is {target.shape[-1]}×{target.shape[-2]}, the model draws "
                         f"{size}×{size}: use load_image(image, {size}) first")
    loss = ReconstructionLoss(target, perceptual_network(perceptual), perceptual_weight)
    total = z_steps + feature_steps + adapt_steps
    report, close = _reporter(progress, total)
    stats = {}

    # 1. Start: the best of `starts` random latents (and the encoder's latent, when there is
    # one) by reconstruction loss, plus, when the encoder predicts the painting layer's
    # features, their distance to those (a latent whose features match draws the same layout).
    f0, score = None, None
    with torch.no_grad():
        zs = generator.latents(range(max(1, starts)), seed=seed)
        if encoder is not None:
            pred = encoder(target)
            ze, f0 = pred if isinstance(pred, (tuple, list)) else (pred, None)
            ze = ze.detach().to(dev).reshape(1, -1)
            img = generator(ze) if f0 is None else forward_after(generator, layer, f0.to(dev))
            stats["psnr_encoder"] = psnr(img, target)
            zs = torch.cat([ze, zs])
            if f0 is not None:
                f0 = f0.detach().to(dev)
                f0_scale = f0.pow(2).mean().clamp_min(1e-8)
                score = lambda fz: (fz - f0).pow(2).mean((1, 2, 3)) / f0_scale
        losses = []
        for i in range(0, len(zs), 8):
            fz = features_of(generator, layer, zs[i:i + 8])
            l = loss(forward_after(generator, layer, fz), per_sample=True)
            losses.append(l if score is None else l + match_weight * score(fz))
        z0 = zs[int(torch.cat(losses).argmin())][None]
        stats["psnr_start"] = psnr(generator(z0), target)
    report(0, "start")
    stats["seconds_start"] = time.perf_counter() - t0

    # 2a. Optimise z (towards the encoder's features too, when it predicted them).
    z = z0.clone().requires_grad_(True)

    def z_loss():
        fz = features_of(generator, layer, z, True)
        l = loss(forward_after(generator, layer, fz))
        return l if score is None else l + match_weight * score(fz).mean()
    if z_steps > 0:
        _adam([z], z_steps, z_lr, z_loss, report, 0, "optimise z")
    z = z.detach()
    stats["seconds_z"] = time.perf_counter() - t0 - stats["seconds_start"]
    with torch.no_grad():
        fz = features_of(generator, layer, z)
    # 2b. Optimise the painting layer's features from the latent's, with a penalty that keeps
    # them near those (edits expect a latent's features).
    features = None
    if feature_steps > 0:
        f = fz.clone().requires_grad_(True)
        scale = fz.pow(2).mean().clamp_min(1e-8)
        _adam([f], feature_steps, feature_lr,
              lambda: loss(forward_after(generator, layer, f))
              + feature_penalty * (f - fz).pow(2).mean() / scale,
              report, z_steps, "optimise features")
        features = f.detach()
    fixed = fz if features is None else features
    with torch.no_grad():
        stats["psnr_optimised"] = psnr(forward_after(generator, layer, fixed), target)
    t_adapt = time.perf_counter()

    # 3. Adapt the later layers from `adapt_from` on, near their original weights. The layers
    # before it stay the model's, so the image's layout still comes from the units (edits
    # work); their output for the fixed features is computed once.
    later = later_layers(generator, layer)
    names = [n for n, _ in later]
    first = names[0] if adapt_from is None else adapt_from
    if first not in names:
        raise InversionError(f"adapt_from={adapt_from!r}: not a layer after {layer!r}; those are "
                             f"{names}")
    tuned = later[names.index(first):]
    original = {f"{n}.{k}": p.detach() for n, m in tuned for k, p in m.named_parameters()}
    adapted = {}
    if adapt_steps > 0:
        with torch.no_grad():
            frozen = forward_after(generator, layer, fixed, layers=later[:names.index(first)])
        params = {k: v.clone().requires_grad_(True) for k, v in original.items()}
        norm = sum(v.pow(2).sum() for v in original.values()).clamp_min(1e-12)

        def adapt_loss():
            drift = sum((params[k] - original[k]).pow(2).sum() for k in params) / norm
            return loss(forward_after(generator, layer, frozen, params, tuned)) + weight_penalty * drift
        _adam(list(params.values()), adapt_steps, adapt_lr, adapt_loss, report,
              z_steps + feature_steps, "adapt")
        adapted = {k: v.detach() for k, v in params.items()}
        with torch.no_grad():
            drift = sum((adapted[k] - original[k]).pow(2).sum() for k in adapted) / norm
        stats["weight_drift"] = float(drift.sqrt())  # ‖θ − θ₀‖ / ‖θ₀‖
    close()
    stats["seconds_adapt"] = time.perf_counter() - t_adapt
    inv = Inversion(target, z, layer, features, adapted, None, 0.0,
                    receptive_growth(generator, layer, z), stats, generator.name, prepared)
    inv.reconstruction = inv.render(generator)
    inv.psnr = psnr(inv.reconstruction, target)
    stats["psnr_adapted"] = inv.psnr
    stats["seconds"] = time.perf_counter() - t0
    return inv


def output_size(generator) -> int:
    """The (square) size of the generator's images: what uploads are resized to."""
    with torch.no_grad():
        img = generator(generator.latents([0]))
    if img.shape[-1] != img.shape[-2]:
        raise InversionError(f"{generator.name} draws {img.shape[-1]}×{img.shape[-2]} images; "
                             f"inversion supports square models")
    return int(img.shape[-1])


def outside_change(edited: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> float:
    """The largest change outside the composited `region`, in [0, 1] units (images in [-1, 1]);
    0 when the region covers every pixel (a large tree's cells with the soft edge can)."""
    if region.all():
        return 0.0
    return float((edited - target)[..., ~region].abs().max()) / 2


def evaluate(generator, segmenter=None, painter=None, encoder=None, samples: int = 50,
             concept: str = "tree", units: int = 20, min_pixels: int = 40, progress=False,
             log=print, **options) -> dict:
    """The inversion bars on held-out renders (seeds ≥ scenes.HELDOUT_SEED, never trained on):
    mean PSNRs (encoder or random start, optimised, adapted), seconds per image, and, with a
    `painter`, "remove `concept`" over the concept's cells (from the render's exact labels) on
    each scene that has ≥ `min_pixels` of it: the median fraction of the concept's pixels
    (by `segmenter`) left after compositing, and the largest change outside the composited
    region (in [0, 1] units; 0 means the input's pixels exactly)."""
    import statistics

    from tqdm import tqdm

    from ganpaint.world.labels import INDEX
    from ganpaint.world.scenes import HELDOUT_SEED, render, to_tensor_images
    size = output_size(generator)
    rows, left, outside = [], [], 0.0
    for i in tqdm(range(samples), desc="invert --eval", disable=not progress):
        image, labels = render(HELDOUT_SEED + i, size)
        target = to_tensor_images(image[None]).to(generator.device)
        inv = invert(generator, target, encoder=encoder, perceptual=segmenter, **options)
        rows.append(inv.stats)
        where = torch.from_numpy(labels == INDEX[concept])
        if painter is None or segmenter is None or int(where.sum()) < min_pixels:
            continue
        stroke = inv.stroke(painter, concept, where.float(), "remove", units)
        out = inv.edit(generator, [stroke])
        k = segmenter.concepts.index(concept)
        before = int((segmenter.segment(target) == k).sum())
        if before:
            left.append(int((segmenter.segment(out) == k).sum()) / before)
        region = composite_region(stroke_cells([stroke], inv.base_features(generator).shape[-2:]),
                                  size, inv.grow)
        outside = max(outside, outside_change(out, target, region))
    mean = lambda key: (statistics.mean(r[key] for r in rows) if rows and key in rows[0] else None)
    return {"samples": samples, "psnr_encoder": mean("psnr_encoder"),
            "psnr_start": mean("psnr_start"), "psnr_optimised": mean("psnr_optimised"),
            "psnr_adapted": mean("psnr_adapted"), "seconds_per_image": mean("seconds"),
            f"edit_{concept}_left_median": statistics.median(left) if left else None,
            f"edit_{concept}_scenes": len(left), "outside_max_diff": outside}
