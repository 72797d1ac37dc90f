import json
import os
import subprocess
import sys

import pytest
import torch

from ganpaint.core.dissect import dissect
from ganpaint.core.upsample import upsampled
from tests.toy import ROOT, source


def run(out, src=None, **kw):
    kw.setdefault("samples", 96)
    kw.setdefault("batch_size", 16)
    return dissect(src or source(), ["layer3", "layer4"], out, progress=False, report=False,
                   log=lambda *a: None, **kw)


@pytest.mark.parametrize("level_from", ["raw", "upsampled"])
def test_matches_brute_force(tmp_path, level_from):
    """Levels and IoUs against an exact computation over all samples. raw (the published
    method): the level is the top quantile of the raw activations (8×8 here, all samples and
    positions) and the bilinearly upsampled map is thresholded at it; upsampled: the quantile of
    the upsampled map itself. Same error bounds for both."""
    q = 0.01
    result = run(tmp_path / "d", samples=160, quantile=q, level_from=level_from)
    assert result["level_from"] == level_from
    src = source()
    acts, labels, _ = src.batch(list(range(160)), ["layer4"])
    raw = acts["layer4"].transpose(0, 1).reshape(8, -1).double()
    a = upsampled(acts["layer4"], labels.shape[-1]).transpose(0, 1).reshape(8, -1).double()
    # the engine's upsampling is F.interpolate's bilinear, align_corners=False
    ref = torch.nn.functional.interpolate(acts["layer4"], size=labels.shape[-1], mode="bilinear",
                                          align_corners=False)
    assert torch.allclose(ref.transpose(0, 1).reshape(8, -1).double(), a, atol=1e-5)
    lab = labels.reshape(-1)
    leveled = raw if level_from == "raw" else a  # the values the quantile is taken over
    exact_level = torch.quantile(leveled, 1 - q, dim=1)
    lay = result["layers"]["layer4"]
    for u, st in enumerate(lay["unit_stats"]):
        share = (leveled[u] > st["level"]).double().mean().item()
        assert abs(share - q) <= 0.001, (u, share)  # quantile rank error ≤ 0.1%
        above = a[u] > exact_level[u]
        assert abs(st["coverage"] - above.double().mean().item()) <= 0.001
        for concept, iou in st["top"]:
            m = lab == src.concepts.index(concept)
            exact = ((above & m).sum() / (above | m).sum()).item()
            assert abs(exact - iou) <= 0.005, (u, concept, exact, iou)
    assert lay["max_rank_error"] <= 0.001
    if level_from == "raw":  # raw levels sit higher: masks cover less than q of the pixels
        assert lay["coverage"]["mean"] < q
        assert all(st["level"] >= exact_level[u].item() - 0.05 * exact_level[u].abs().item()
                   for u, st in enumerate(lay["unit_stats"]))
    else:
        assert lay["coverage"]["min"] == pytest.approx(q, abs=1e-4)
    # the ranking of a concept is sorted and agrees with the unit records
    for concept, ranking in lay["ranking"].items():
        ious = [r["iou"] for r in ranking]
        assert ious == sorted(ious, reverse=True)


class Interrupting:
    """A source that fails after `after` batches, like a run killed midway."""

    def __init__(self, inner, after, exc):
        self.inner, self.after, self.exc, self.calls = inner, after, exc, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def batch(self, *a):
        self.calls += 1
        if self.calls > self.after:
            raise self.exc
        return self.inner.batch(*a)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError("killed")])
def test_resume_gives_identical_result(tmp_path, exc):
    whole = run(tmp_path / "whole")
    with pytest.raises(type(exc) if isinstance(exc, Exception) else exc):
        run(tmp_path / "cut", Interrupting(source(), 3, exc), save_seconds=0)
    assert (tmp_path / "cut" / "partial" / "state.pt").exists()
    resumed = run(tmp_path / "cut")
    assert resumed == whole
    assert (tmp_path / "cut" / "dissection.json").read_text() == (tmp_path / "whole" / "dissection.json").read_text()


def test_partial_run_with_other_settings_is_refused(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "d", Interrupting(source(), 2, KeyboardInterrupt), save_seconds=0)
    with pytest.raises(ValueError, match="other settings"):
        run(tmp_path / "d", quantile=0.005)


def _cli(out, nproc=None, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    args = ["-m", "ganpaint", "dissect", "--model", "tests.toy:tiny_generator", "--segmenter",
            "tests.toy:toy_segmenter", "--layers", "layer3", "layer4", "--samples", "80",
            "--batch-size", "8", "--out", str(out), "--no-report", "--device", "cpu"]
    if nproc:
        args = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] + args
    return subprocess.run([sys.executable] + args, env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_torchrun_two_processes_equals_one(tmp_path):
    one = _cli(tmp_path / "one")
    assert one.returncode == 0, one.stderr
    two = _cli(tmp_path / "two", nproc=2)
    if two.returncode != 0 and ("rendezvous" in two.stderr.lower() or "gloo" in two.stderr.lower()
                                and "connect" in two.stderr.lower()):
        pytest.skip(f"torchrun could not start here: {two.stderr[-300:]}")
    assert two.returncode == 0, two.stderr
    a = json.loads((tmp_path / "one" / "dissection.json").read_text())
    b = json.loads((tmp_path / "two" / "dissection.json").read_text())
    assert a == b
    assert (tmp_path / "two" / "partial" / "state.rank1of2.pt").exists()
    # rank 1 lost its state (it died before its first save): rank 0 must not resume alone
    # while rank 1 starts over (they used to wait for each other forever); all start over
    (tmp_path / "two" / "partial" / "state.rank1of2.pt").unlink()
    (tmp_path / "two" / "dissection.json").unlink()
    again = _cli(tmp_path / "two", nproc=2, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "all ranks start over" in again.stdout + again.stderr
    assert json.loads((tmp_path / "two" / "dissection.json").read_text()) == a


def test_report_files(tmp_path):
    out = tmp_path / "r"
    from ganpaint.apps.report import make_report
    dissect(source(), ["layer4"], out, samples=32, batch_size=16, progress=False,
            log=lambda *a: None, report=make_report)
    html = (out / "report.html").read_text()
    assert "layer4" in html and "unit_0007.png" in html
    assert "Levels from the raw activations (the published method)" in html  # the definition
    assert "Masks cover" in html
    from PIL import Image
    strip = Image.open(out / "images" / "layer4" / "unit_0000.png")
    assert strip.size[0] == 5 * strip.size[1]
    assert (out / "images" / "layer4" / "detectors.png").exists()


@pytest.mark.slow
def test_custom_model_args_and_rank_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "ganpaint"]
    r = subprocess.run(base + ["dissect", "--model", "tests.toy:tiny_generator", "--model-arg", "width=4",
                               "--model-arg", "seed=3", "--segmenter", "tests.toy:toy_segmenter",
                               "--samples", "32", "--out", str(tmp_path / "d"), "--no-report"],
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "d" / "dissection.json").read_text())
    assert d["layers"]["layer3"]["units"] == 4  # width=4 reached the model; layer3 preferred
    r = subprocess.run(base + ["rank", "--dissection", str(tmp_path / "d"), "--concept", "Red",
                               "--top", "3", "--json"], env=env, cwd=ROOT, capture_output=True,
                       text=True)
    rows = json.loads(r.stdout)
    assert [x["rank"] for x in rows] == list(range(1, len(rows) + 1)) and len(rows) <= 3
    assert set(rows[0]) == {"rank", "unit", "iou", "level"}
    r = subprocess.run(base + ["rank", "--dissection", str(tmp_path / "d"), "--concept", "bluish"],
                       env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "Valid concepts: dark, mid, bright, red" in r.stderr
    r = subprocess.run(base + ["dissect", "--model", "tests.toy:tiny_generator", "--segmenter",
                               "tests.toy:toy_segmenter", "--layers", "layer9", "--out",
                               str(tmp_path / "e")], env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "unknown layer 'layer9'" in r.stderr and "layer1" in r.stderr


def test_full_tail_best_threshold_iou_is_exact(tmp_path):
    """With tail=1 the histogram spans each unit's whole range; IoU at every bin edge is exact,
    so the best threshold found equals the brute-force best over those edges."""
    from ganpaint.core.stats import TailStats
    result = run(tmp_path / "d", samples=64, tail=1.0, level_from="upsampled")
    src = source()
    acts, labels, _ = src.batch(list(range(64)), ["layer4"])
    a = upsampled(acts["layer4"], labels.shape[-1]).transpose(0, 1).reshape(8, -1)
    lab = labels.reshape(-1)
    st = TailStats.from_state_dict(
        __import__("ganpaint.core.checkpoint", fromlist=["load"]).load(tmp_path / "d" / "partial" / "state.pt")["stats"]["layer4"])
    best, thr = st.best_threshold_iou()
    for u in range(8):
        share = (a[u] > result["layers"]["layer4"]["unit_stats"][u]["level"]).double().mean().item()
        assert abs(share - 0.01) <= 0.001  # the quantile level stays accurate with a wide tail
        for c in range(len(src.concepts)):
            m = lab == c
            edges = st.edges[u].float()
            ious = [((a[u] >= e) & m).sum().item() / max(1, ((a[u] >= e) | m).sum().item()) for e in edges[::16]]
            assert best[u, c].item() >= max(ious) - 1e-9
            exact = ((a[u] >= thr[u, c].float()) & m).sum().item() / max(1, ((a[u] >= thr[u, c].float()) | m).sum().item())
            assert abs(exact - best[u, c].item()) < 1e-9
    bt = result["layers"]["layer4"]["best_threshold_iou"]
    assert set(bt) == set(src.concepts) and all(0 <= v["iou"] <= 1 for v in bt.values())


@pytest.mark.parametrize("level_from", ["upsampled", "raw"])
def test_sparse_relu_units_are_exact(level_from):
    """Units that are zero almost everywhere (ReLU): the floor starts above the zeros, so they
    are never binned; a unit active on fewer than q of the pixels gets level 0 exactly and its
    IoU is that of act > 0; a unit active more often gets its quantile as usual (of the raw or
    the upsampled values)."""
    from ganpaint.core.stats import TailStats
    g = torch.Generator().manual_seed(0)
    n, units, h, size, q = 64, 3, 4, 16, 0.01
    act = torch.rand(n, units, h, h, generator=g) * 4
    keep = torch.rand(n, units, 1, 1, generator=g) < torch.tensor([0.004, 0.3, 1.0])[:, None, None]
    act = (act * keep).relu()  # unit 0 fires in ~0.4 % of samples, unit 2 everywhere
    seg = (torch.rand(n, size, size, generator=g) * 3).long()
    st = TailStats(units, 3, q, tail=0.05, level_from=level_from)
    up = upsampled(act, size).transpose(0, 1).reshape(units, -1)
    raw = act.transpose(0, 1).reshape(units, -1)
    st.init_edges(up[:, : up.shape[1] // 4], raw[:, : raw.shape[1] // 4])
    st.update(act, seg)
    r = st.iou()
    assert bool(r["exact"].all())
    lab = seg.reshape(-1)
    leveled = raw if level_from == "raw" else up
    for u in range(units):
        level = torch.quantile(leveled[u].double(), 1 - q).item()
        above = up[u] > level
        for c in range(3):
            m = lab == c
            exact = ((above & m).sum() / (above | m).sum()).item()
            assert abs(exact - r["iou"][u, c].item()) <= 0.005, (u, c)
    assert r["level"][0].item() == 0.0 and torch.quantile(leveled[0].double(), 1 - q).item() == 0.0
    assert st.joint.sum() < 0.2 * up.numel()  # the zeros were not binned


def test_binning_agrees_with_the_bin_edges():
    """Counting bins by arithmetic ((v − floor) · gain, log-spaced above) puts each upsampled
    value in the bin its edges say, also for values far beyond the warm-up (log bins, overflow),
    channels-last activations and non-contiguous label maps; values under the floor are skipped."""
    from ganpaint.core.stats import TailStats
    g = torch.Generator().manual_seed(1)
    n, units, h, size, concepts = 24, 5, 6, 20, 4
    act = torch.randn(n, units, h, h, generator=g)
    seg = (torch.rand(n, size, size, generator=g) * concepts).long().transpose(1, 2)
    st = TailStats(units, concepts, 0.02, bins=64)
    st.init_edges(upsampled(act[:4], size).transpose(0, 1).reshape(units, -1))  # warm-up: 4 samples
    main = (3 * st.bins) // 4
    act[5, 3, 2:4, 2:4] = float(st.edges[3, main]) * 1.05 + 0.1  # far above the warm-up: log bins
    act[7, 3, 1:3, 3:5] = 1e9  # and beyond them: overflow
    up = upsampled(act, size).transpose(0, 1).reshape(units, -1)
    st.update(act.to(memory_format=torch.channels_last), seg)
    e = st.edges.float()
    lab = seg.reshape(-1)
    expected = torch.zeros(units, st.bins + 1, concepts, dtype=torch.int64)
    for u in range(units):
        on = up[u] >= e[u, 0]
        b = torch.searchsorted(e[u].contiguous(), up[u][on], right=True) - 1
        expected[u].view(-1).index_add_(0, b * concepts + lab[on], torch.ones_like(b))
    got = st.state_dict()["joint"].view(units, st.bins + 1, concepts)
    assert got.sum() > 0 and (got.sum((1, 2)) - expected.sum((1, 2))).abs().max() <= 2  # rounding at the floor
    assert (got - expected).abs().sum() <= 0.002 * expected.sum() + 4  # rounding at bin edges
    assert got[3, st.bins].sum() >= 1 and got[3, main + 1: st.bins].sum() >= 1


def test_in_memory_dissection_equals_the_saved_one(tmp_path):
    """dissect() without a folder writes nothing and gives the same document and arrays as a
    saved run; tally() gives the statistics those are read from."""
    import numpy as np

    from ganpaint.core.dissect import tally
    from ganpaint.core.dissection import Dissection
    saved = run(tmp_path / "d", samples=48)
    mem = run(None, samples=48)
    assert isinstance(mem, Dissection) and mem.path is None and saved.path == tmp_path / "d"
    assert dict(mem) == dict(Dissection.load(tmp_path / "d"))
    for layer in ("layer3", "layer4"):
        np.testing.assert_array_equal(mem.results(layer)["iou"], saved.results(layer)["iou"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    stats = tally(source(), ["layer4"], samples=48, batch_size=16, progress=False)
    level = stats["layer4"].level()[0].numpy()
    np.testing.assert_allclose(level, mem.results("layer4")["level"], rtol=1e-6)
    unit = int(np.argmax(level))
    assert mem.level(unit, 0.01, "layer4") == mem["layers"]["layer4"]["unit_stats"][unit]["levels"]["0.01"]
    with pytest.raises(KeyError, match="Valid quantiles: 0.01, 0.005"):
        mem.level(unit, 0.2, "layer4")


def test_an_in_memory_dissection_saves_whole(tmp_path):
    """Dissection.save writes everything it holds: the arrays made in memory (results.npz), its
    learned rankings (beside any already in the folder), then dissection.json; saving a loaded
    dissection elsewhere carries its results.npz along."""
    import numpy as np

    from ganpaint.core.dissection import Dissection, learned_path
    mem = run(None, samples=48)
    c = mem.concepts[0]
    learned = {"layer": "layer4", "concept": c, "local": False,
               "ranking": [{"unit": u, "alpha": 1.0 - u / 10} for u in (3, 1, 2)]}
    mem.add_learned(learned)  # kept in memory: no folder yet
    (tmp_path / "d").mkdir()
    other = {"layer4": {"other": {**learned, "concept": "other"}}}
    learned_path(tmp_path / "d", "causal").write_text(__import__("json").dumps(other))
    mem.save(tmp_path / "d")
    back = Dissection.load(tmp_path / "d")
    np.testing.assert_array_equal(back.results("layer4")["iou"], mem.results("layer4")["iou"])
    assert back.rank(c, "causal", "layer4", 2) == mem.rank(c, "causal", "layer4", 2)
    assert [r["unit"] for r in back.rank(c, "causal", "layer4")] == [3, 1, 2]
    assert "other" in __import__("json").loads(learned_path(tmp_path / "d", "causal").read_text())["layer4"]
    back.save(tmp_path / "copy")
    np.testing.assert_array_equal(Dissection.load(tmp_path / "copy").results("layer4")["iou"],
                                  mem.results("layer4")["iou"])
    assert not list((tmp_path / "d").glob("*.tmp"))


def test_aliases_are_kept_with_the_dissection(tmp_path):
    """A segmenter's other words for its concepts are saved, so `rank` takes either."""
    src = source()
    src.segmenter.aliases = {"shiny": src.segmenter.concepts[1]}
    d = run(tmp_path / "d", src, samples=32)
    from ganpaint.core.dissection import Dissection
    loaded = Dissection.load(tmp_path / "d")
    assert loaded.aliases == {"shiny": src.segmenter.concepts[1]}
    assert loaded.rank("SHINY", layer="layer4") == d.rank(src.segmenter.concepts[1], layer="layer4")
    with pytest.raises(KeyError, match="unknown concept 'dull'.*Valid concepts"):
        loaded.rank("dull", layer="layer4")


class _Maps:
    """A source whose samples carry several label maps (N, K, S, S) over disjoint concept
    ranges, built from the toy source's labels: the objects, and a coarse 'low/high' map."""

    def __init__(self, which=(0, 1)):
        self.src, self.which = source(), which
        names = [list(self.src.concepts), ["low", "high"]]
        self.offsets = [0, len(names[0])]
        self.concepts = [c for k in which for c in names[k]]

    def describe(self):
        return {**self.src.describe(), "maps": list(self.which)}

    def check_layers(self, layers):
        self.src.check_layers(layers)

    def batch(self, idx, layers):
        acts, labels, images = self.src.batch(idx, layers)
        maps = [labels, (labels > 1).long()]
        if len(self.which) == 1:
            return acts, maps[self.which[0]], images
        return acts, torch.stack([maps[0], maps[1] + self.offsets[1]], 1), images


@pytest.mark.parametrize("level_from", ["raw", "upsampled"])
def test_several_label_maps_count_as_separate_dissections(level_from):
    """Every pixel counts once per label map: dissecting two maps at once gives each concept
    the IoU it gets when its map is dissected alone (levels do not depend on labels)."""
    import numpy as np
    kw = dict(samples=48, batch_size=16, progress=False, level_from=level_from)
    both, objects, coarse = (dissect(_Maps(w), ["layer4"], None, **kw) for w in ((0, 1), (0,), (1,)))
    iou = both.results("layer4")["iou"]
    assert iou.shape[1] == 6 and both.concepts[-2:] == ["low", "high"]
    np.testing.assert_allclose(iou[:, :4], objects.results("layer4")["iou"], atol=1e-6)
    np.testing.assert_allclose(iou[:, 4:], coarse.results("layer4")["iou"], atol=1e-6)
    np.testing.assert_allclose(both.results("layer4")["level"], objects.results("layer4")["level"])
    frac = both["layers"]["layer4"]["concept_pixel_fraction"]
    assert sum(frac[c] for c in both.concepts[:4]) == pytest.approx(1.0)  # one object per pixel
    assert frac["low"] + frac["high"] == pytest.approx(1.0)


class _TwoRanks:
    """torch.distributed's collectives for two ranks run as threads (sum / max / min, gather),
    enough for TailStats.all_reduce."""

    class ReduceOp:
        SUM, MAX, MIN = "sum", "max", "min"

    def __init__(self):
        import threading
        self.barrier, self.slots, self.rank = threading.Barrier(2), [None, None], threading.local()

    def get_world_size(self):
        return 2

    def _exchange(self, t):
        self.slots[self.rank.id] = t.clone()
        self.barrier.wait()
        both = list(self.slots)
        self.barrier.wait()
        return both

    def all_reduce(self, t, op="sum"):
        a, b = self._exchange(t)
        t.copy_({"sum": a + b, "max": torch.maximum(a, b), "min": torch.minimum(a, b)}[op])

    def all_gather(self, out, t):
        for o, v in zip(out, self._exchange(t)):
            o.copy_(v)


@pytest.mark.parametrize("level_from", ["raw", "upsampled"])
def test_shards_of_two_label_maps_merge_and_reduce_to_the_whole(level_from):
    """Counts of several label maps per pixel (K = 2) split over two shards: merged, or
    all-reduced across two ranks (one of which saw no batch), they give the levels, IoUs and
    best-threshold IoUs of counting everything in one place."""
    import copy
    import threading
    from ganpaint.core.stats import TailStats
    g = torch.Generator().manual_seed(2)
    n, units, h, size = 32, 4, 4, 16
    act = torch.randn(n, units, h, h, generator=g)
    objects = (torch.rand(n, size, size, generator=g) * 3).long()
    seg = torch.stack([objects, 3 + (objects > 0).long()], 1)  # (N, 2, S, S): concepts 0-2, 3-4
    base = TailStats(units, 5, 0.05, bins=64, tail=1.0, level_from=level_from)
    up = upsampled(act[:8], size).transpose(0, 1).reshape(units, -1)
    base.init_edges(up, act[:8].transpose(0, 1).reshape(units, -1))
    whole, a, b = (copy.deepcopy(base) for _ in range(3))
    whole.update(act, seg)
    a.update(act[:20], seg[:20])
    b.update(act[20:], seg[20:])
    merged = copy.deepcopy(a)
    merged.merge(b)
    ranks = [copy.deepcopy(a), copy.deepcopy(b)]
    idle = copy.deepcopy(base)  # a rank that counted nothing, beside one that counted all
    dist = _TwoRanks()

    def reduce(i, st):
        dist.rank.id = i
        st.all_reduce(dist, "cpu")
    for pair in ([ranks[0], ranks[1]], [copy.deepcopy(whole), idle]):
        threads = [threading.Thread(target=reduce, args=(i, st)) for i, st in enumerate(pair)]
        [t.start() for t in threads]
        [t.join(30) for t in threads]
    for st in (merged, ranks[0], ranks[1], idle):
        assert st.maps == 2 and st.pixels == whole.pixels
        torch.testing.assert_close(st.level(), whole.level())
        got, want = st.iou(), whole.iou()
        torch.testing.assert_close(got["iou"], want["iou"])
        for x, y in zip(st.best_threshold_iou(), whole.best_threshold_iou()):
            torch.testing.assert_close(x, y)
