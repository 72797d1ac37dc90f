"""Probe labels in Network Dissection's categories: objects, parts, materials and colours.

Broden labels each pixel several times (an object, maybe a part, a material, a colour), and
the headline chart counts a layer's unique detectors per category. The scene renderer knows
each pixel's object and surface, so the probe set gets the same: the world's objects (roof,
window and door marked as parts of a building), materials from the surface and object (brick,
plaster, leaves, asphalt, tile, glass, ...), and one of the 11 basic colour terms of Berlin and
Kay, from the rendered RGB (nearest prototype in CIELAB). Three label maps per image, over
disjoint concept ranges: dissection counts each pixel once per map.
"""
from __future__ import annotations

import numpy as np

from ganpaint.world import scenes
from ganpaint.world.labels import CONCEPTS, INDEX

PARTS = ("roof", "window", "door")  # parts of a building
MATERIALS = ("-", "vapour", "turf", "asphalt", "leaves", "wood", "brick", "plaster", "tile",
             "metal", "glass")  # "-": no material (the sky)
COLOURS = {  # basic colour terms (Berlin & Kay), prototypes in sRGB
    "black": (20, 20, 20), "white": (245, 245, 245), "grey": (128, 128, 128),
    "red": (190, 30, 35), "orange": (240, 130, 30), "yellow": (240, 215, 50),
    "green": (60, 150, 60), "blue": (50, 90, 200), "purple": (120, 60, 150),
    "pink": (240, 160, 190), "brown": (120, 75, 40)}
CONCEPTS_ALL = list(CONCEPTS) + list(MATERIALS) + list(COLOURS)
CATEGORY = {**{c: ("part" if c in PARTS else "object") for c in CONCEPTS},
            **{m: "material" for m in MATERIALS if m != "-"}, **{c: "colour" for c in COLOURS}}
OFFSETS = (0, len(CONCEPTS), len(CONCEPTS) + len(MATERIALS))  # each map's first concept index

_SURFACE = {scenes.SOFT: "vapour", scenes.GRASS_TEX: "turf", scenes.ASPHALT: "asphalt",
            scenes.LEAVES: "leaves", scenes.BRICK: "brick", scenes.PLASTER: "plaster"}
_FLAT = {"roof": "tile", "dome": "metal", "window": "glass", "door": "wood", "tree": "wood",
         "sky": "-"}  # flat-painted surfaces: the material follows from the object


def material_map(labels: np.ndarray, surface: np.ndarray) -> np.ndarray:
    """Material index (into MATERIALS) per pixel, from the object labels and surface map."""
    table = np.zeros((len(CONCEPTS), 8), np.uint8)  # (object, surface) → material
    for obj in CONCEPTS:
        for surf in range(8):
            name = _SURFACE.get(surf) or _FLAT.get(obj, "-")
            table[INDEX[obj], surf] = MATERIALS.index(name)
    return table[labels, surface]


def _lab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab
    return rgb2lab(np.asarray(rgb, np.float32).reshape(-1, 1, 3) / 255.0).reshape(-1, 3)


_PROTOTYPES = None


def colour_map(image: np.ndarray) -> np.ndarray:
    """Colour term index (into COLOURS) per pixel of a uint8 (H, W, 3) image."""
    global _PROTOTYPES
    if _PROTOTYPES is None:
        _PROTOTYPES = _lab(np.array(list(COLOURS.values()), np.uint8))
    lab = _lab(image)
    d = ((lab[:, None, :] - _PROTOTYPES[None]) ** 2).sum(-1)
    return d.argmin(1).astype(np.uint8).reshape(image.shape[:2])


def render_labelled(seed: int, size: int = 64):
    """(image uint8 (S, S, 3), label maps uint8 (3, S, S)): objects and parts, materials,
    colours, each offset into `CONCEPTS_ALL`."""
    img, lab, surface = scenes.render(int(seed), size, materials=True)
    maps = np.stack([lab, material_map(lab, surface) + OFFSETS[1],
                     colour_map(img) + OFFSETS[2]]).astype(np.uint8)
    return img, maps
