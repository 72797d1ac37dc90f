import numpy as np
import pytest

from ganpaint.world import labels
from ganpaint.world import scenes
from ganpaint.world.scenes import CLOUD, DOOR, DOME, ROOF, WINDOW, layout, render

SEEDS = range(60)


def test_deterministic_by_seed():
    a, la = render(7, 64)
    b, lb = render(7, 64)
    c, _ = render(8, 64)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("size", scenes.SIZES)
def test_shapes_and_label_range(size):
    img, lab = render(3, size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert lab.shape == (size, size) and lab.max() < len(labels.CONCEPTS)


def test_same_scene_at_every_size():
    _, small = render(11, 64)
    _, big = render(11, 256)
    agree = (big[2::4, 2::4] == small).mean()
    assert agree > 0.9


def test_clouds_only_in_the_sky():
    for s in SEEDS:
        sc = layout(s)
        _, lab = render(sc, 128)
        rows = np.nonzero((lab == CLOUD).any(1))[0]
        if len(rows):
            assert rows.max() < sc.horizon * 128


def test_doors_touch_the_bottom_of_their_wall():
    n_doors = 0
    for s in SEEDS:
        sc = layout(s)
        for obj in sc.objects:
            if obj["kind"] != "building" or obj["door"] is None:
                continue
            n_doors += 1
            x0, top, x1, base = obj["wall"]
            dx0, dy0, dx1, dy1 = obj["door"]
            assert dy1 == pytest.approx(base)  # bottom edge of the wall
            assert x0 <= dx0 < dx1 <= x1 and top < dy0
            for wx0, wy0, wx1, wy1 in obj["windows"]:  # windows on the wall, clear of the door
                assert x0 <= wx0 and wx1 <= x1 and top <= wy0 and wy1 <= base
                assert not (wx0 < dx1 and wx1 > dx0 and wy1 > dy0)
    assert n_doors > 10


def test_door_pixels_sit_on_the_ground():
    """In the label map, below the lowest door pixel of a column comes ground or a nearer object
    (which may be a nearer building's roof), never sky or cloud."""
    for s in SEEDS:
        _, lab = render(s, 128)
        cols = np.nonzero((lab == DOOR).any(0))[0]
        for c in cols:
            r = np.nonzero(lab[:, c] == DOOR)[0].max()
            if r + 1 < 128:
                assert lab[r + 1, c] not in (labels.INDEX["sky"], CLOUD)


def test_roofs_and_domes_above_walls():
    for s in SEEDS:
        sc = layout(s)
        for sh in sc.shapes:
            if sh.label == ROOF:
                wall = sc.objects[sh.part_of]["wall"]
                assert sh.points[:, 1].max() <= wall[1] + 0.01  # nothing of the roof below the wall top
            if sh.label == DOME:
                wall = sc.objects[sh.part_of]["wall"]
                assert sh.points[1] == pytest.approx(wall[1])  # centred on the wall top


def test_variety():
    seen = {labels.CONCEPTS[i] for s in SEEDS for i in np.unique(render(s, 64)[1])}
    assert seen == set(labels.CONCEPTS)
    skies = {layout(s).sky for s in SEEDS}
    assert skies == set(scenes.SKY_TYPES)


def test_stream_batches_and_resume_position():
    st = scenes.SceneStream(64, 4, start=0)
    x1, y1 = next(st)
    x2, _ = next(st)
    assert x1.shape == (4, 3, 64, 64) and y1.shape == (4, 64, 64)
    assert -1 <= x1.min() and x1.max() <= 1
    resumed = scenes.SceneStream(64, 4, start=4)
    assert (next(resumed)[0] == x2).all()


def test_world_is_drawn_at_the_painting_layers_scale():
    """The world issue's composition bars, on 300 scenes (cells are 8 px at 64 px)."""
    s = scenes.world_stats(300)
    door, window, tree = s["door"], s["window"], s["tree"]
    assert door["median_box_px"][0] >= 6 and 1.5 <= door["median_box_cells"][1] <= 2.0
    assert min(window["median_box_px"]) >= 4
    assert door["presence"] >= 0.6
    assert 0.2 <= s["building"]["fraction"] <= 0.4
    assert tree["median_box_cells"][1] >= 1.5
    assert s["sky"]["fraction"] <= 0.35
    for c in ("cloud", "road", "roof", "dome"):
        assert s[c]["presence"] > 0.1
    with pytest.raises(ValueError, match="at least 1"):
        scenes.world_stats(0)


def test_buildings_hold_a_door_and_windows():
    n = 0
    for s in SEEDS:
        for obj in layout(s).objects:
            if obj["kind"] == "building" and obj["door"] is not None:
                n += 1
                assert 1 <= len(obj["windows"]) <= 6
    assert n > 30
