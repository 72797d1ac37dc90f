"""Issue 20: the published definitions (levels from raw activations, ignore labels) and
StyleGAN2 generators wired through the CLI, in-process."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ganpaint.apps import registry
from ganpaint.adapters import stylegan2 as sg
from ganpaint.apps.cli import main
from ganpaint.core.dissect import dissect
from ganpaint.core.dissection import Dissection
from ganpaint.adapters.generator import Generator
from ganpaint.core.sources import GeneratorSource
from ganpaint.world.probe import ProbeSource
from tests import toy

QUIET = dict(progress=False, log=lambda *a: None)


def _dissect(out, seg, seg_id, samples=48):
    g = toy.tiny_generator()
    src = GeneratorSource(Generator(g, g.z_dim, "tests.toy:tiny_generator"), seg, 0,
                          segmenter_id=seg_id)
    return dissect(src, ["layer4"], out, samples, batch_size=16, **QUIET)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return _dissect(tmp_path_factory.mktemp("plain"), toy.ToySegmenter(), "tests.toy:toy_segmenter")


@pytest.mark.parametrize("seg", [toy.DashSegmenter(), toy.IndexIgnoreSegmenter(),
                                 toy.OutsideIgnoreSegmenter()], ids=["dash", "index", "outside"])
def test_ignore_label_is_neither_ranked_nor_counted(tmp_path, plain, seg):
    """Label 0 ("-", or declared by ignore_index, also outside the concepts) is no concept: not in
    the dissection's concepts, rankings, unit labels, detectors or IoU table. Its pixels still
    count where a unit's mask covers them, so the other concepts' IoUs are unchanged."""
    d = _dissect(tmp_path / "d", seg, "x")
    dark = "dark" if "dark" in seg.concepts else "-"
    kept = ["mid", "bright", "red"]
    assert d["concepts"] == kept and d["ignored_labels"] == [dark]
    lay, ref = d["layers"]["layer4"], plain["layers"]["layer4"]
    assert set(lay["ranking"]) == set(kept) and set(lay["concept_pixel_fraction"]) == set(kept)
    assert set(lay["best_threshold_iou"]) == set(kept)
    assert lay["ignored_pixel_fraction"] == ref["concept_pixel_fraction"]["dark"] > 0
    assert all(u["label"] in kept and all(c in kept for c, _ in u["top"]) for u in lay["unit_stats"])
    assert set(lay["detectors"]) <= set(kept)
    for c in kept:
        assert lay["ranking"][c] == ref["ranking"][c]
    with np.load(tmp_path / "d" / "results.npz") as z:
        assert z["layer4/iou"].shape == (8, 3)
    loaded = Dissection.load(tmp_path / "d")
    assert [r["concept"] for r in loaded.concept_table()] and all(
        r["concept"] in kept for r in loaded.concept_table())
    with pytest.raises(KeyError):
        loaded.rank(dark)


def test_ignore_label_for_classifiers(tmp_path):
    """A probe label declared as no label is dropped from a classifier's dissection alike."""
    src = ProbeSource(toy.tiny_classifier(), "tests.toy:tiny_classifier", size=32, ignore_index=0)
    d = dissect(src, ["conv3"], tmp_path / "c", 16, batch_size=8, **QUIET)
    assert "sky" not in d["concepts"] and d["ignored_labels"] == ["sky"]
    assert "sky" not in d["layers"]["conv3"]["ranking"]
    assert all(u["label"] != "sky" for u in d["layers"]["conv3"]["unit_stats"])


def test_old_dissections_load_as_upsampled(capsys, tmp_path):
    """Dissections written before the choice (no level_from) had the upsampled maps' levels."""
    doc = json.loads(Path("models/dissection/dissection.json").read_text())
    doc.pop("level_from", None)
    (tmp_path / "dissection.json").write_text(json.dumps(doc))
    d = Dissection.load(tmp_path)
    assert d["level_from"] == "upsampled"
    assert main(["rank", "--dissection", str(tmp_path), "--list"]) == 0
    out = capsys.readouterr().out
    assert "levels from the upsampled activations" in out


def test_level_from_flag(tmp_path, capsys):
    base = ["dissect", "--model", "tests.toy:tiny_generator", "--segmenter",
            "tests.toy:toy_segmenter", "--layers", "layer4", "--samples", "16", "--batch-size", "8",
            "--no-report", "--device", "cpu"]
    assert main(base + ["--out", str(tmp_path / "r")]) == 0
    assert main(base + ["--level-from", "upsampled", "--out", str(tmp_path / "u")]) == 0
    r = json.loads((tmp_path / "r" / "dissection.json").read_text())
    u = json.loads((tmp_path / "u" / "dissection.json").read_text())
    assert r["level_from"] == "raw" and u["level_from"] == "upsampled"
    assert u["layers"]["layer4"]["coverage"]["mean"] == pytest.approx(0.01, abs=1e-4)
    assert r["layers"]["layer4"]["coverage"]["mean"] < 0.01
    capsys.readouterr()
    assert main(["rank", "--dissection", str(tmp_path / "r"), "--concept", "mid", "--top", "3"]) == 0
    assert "levels from the raw activations" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(base + ["--level-from", "pixels", "--out", str(tmp_path / "x")])


def tiny_stylegan2(path, seed=0):
    """A random 32-px StyleGAN2 checkpoint in the rosinality format, written to `path`."""
    torch.manual_seed(seed)
    model = sg.StyleGAN2(32, style_dim=16, n_mlp=2, channels={4: 16, 8: 16, 16: 8, 32: 8})
    sd = model.format_state_dict()
    for k, v in sd.items():  # non-trivial noise strengths and biases (zero at initialisation)
        if k.endswith(("noise.weight", "activate.bias")) or k.startswith("style."):
            sd[k] = v + 0.2 * torch.randn_like(v)
    torch.save({"g_ema": sd, "latent_avg": torch.randn(16)}, path)
    return path


def test_stylegan2_dissect_rank_ablate(tmp_path, capsys, monkeypatch):
    ckpt = tiny_stylegan2(tmp_path / "tiny.pt")
    spec, out = f"stylegan2:{ckpt}", tmp_path / "d"
    seg = ["--segmenter", "tests.toy:toy_segmenter"]
    assert main(["dissect", "--model", spec, "--model-arg", "truncation=0.7", "--model-arg",
                 "noise=zero", *seg, "--samples", "8", "--batch-size", "4", "--out", str(out),
                 "--device", "cpu"]) == 0
    d = json.loads((out / "dissection.json").read_text())
    assert d["model"] == spec and d["model_args"] == {"truncation": 0.7, "noise": "zero"}
    assert list(d["layers"]) == ["b8.conv1"] and d["layers"]["b8.conv1"]["units"] == 16
    assert d["level_from"] == "raw" and (out / "report.html").exists()
    assert "model arguments" in (out / "report.html").read_text()
    capsys.readouterr()
    assert main(["rank", "--dissection", str(out), "--list"]) == 0
    listing = capsys.readouterr().out
    assert "b8.conv1" in listing and "raw" in listing and "mid" in listing

    seen = []
    real = registry.load_generator

    def spy(spec_, device="cpu", model_args=None):
        seen.append((spec_, registry.parse_args(model_args)))
        return real(spec_, device, model_args)
    monkeypatch.setattr(registry, "load_generator", spy)
    exp = ["--concept", "mid", "--samples", "4", "--batch-size", "4", "--device", "cpu", "--json",
           *seg, "--out", str(tmp_path / "exp")]
    assert main(["ablate", "--dissection", str(out), "--k", "0", "2", *exp]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["k"] == [0, 2]
    assert seen[-1] == (spec, {"truncation": 0.7, "noise": "zero"})  # recorded args reused
    assert main(["insert", "--dissection", str(out), "--units", "2", "--model-arg", "noise=const",
                 *exp]) == 0
    assert seen[-1] == (spec, {"truncation": 0.7, "noise": "const"})  # typed args override
    # the reloaded generator draws what the dissection saw
    g = registry.generator_from_dissection(d, out / "dissection.json")
    ref = sg.load_generator(ckpt, truncation=0.7, noise="zero")
    z = g.latents([0, 1])
    assert torch.equal(g(z), ref(z))


def test_stylegan2_model_args_are_checked(tmp_path, capsys):
    ckpt = tiny_stylegan2(tmp_path / "tiny.pt")
    base = ["dissect", "--model", f"stylegan2:{ckpt}", "--segmenter", "tests.toy:toy_segmenter",
            "--samples", "4", "--no-report", "--out", str(tmp_path / "o")]
    for arg, words in (("psi=0.7", ["unknown --model-arg 'psi'", "truncation", "noise"]),
                       ("noise=random", ["noise=random", "const, zero, latent"]),
                       ("truncation=-1", ["truncation=-1", "≥ 0"])):
        capsys.readouterr()
        assert main(base + ["--model-arg", arg]) == 2
        err = capsys.readouterr().err
        assert all(w in err for w in words), err
    assert main(["dissect", "--model", "scenes", "--model-arg", "truncation=0.7",
                 "--out", str(tmp_path / "s")]) == 2
    assert "takes no --model-arg" in capsys.readouterr().err
    # `ganpaint models --layers` lists a checkpoint's layers and marks the painting layer
    assert main(["models", "--layers", f"stylegan2:{ckpt}"]) == 0
    out = capsys.readouterr().out
    assert "b32.conv1" in out and "b8.conv1" in out and "(default painting layer)" in out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "stylegan2:<path>" in out and "b256.conv1" in out and "truncation" in out


def test_stylegan2_spec_in_a_dissection_runs_no_code():
    """A dissection naming stylegan2:<file> is a weights file, like progan:<file>."""
    assert registry.spec_from_file("stylegan2:x.pt", "model", "d.json", "--model") == "stylegan2:x.pt"
    with pytest.raises(ValueError, match="import path"):
        registry.spec_from_file("evil.mod:make", "model", "d.json", "--model")
    with pytest.raises(ValueError, match="model_args"):
        registry.generator_from_dissection({"model": "scenes", "model_args": [1]}, "d.json")


def test_stylegan2_rank_causal_and_app(tmp_path, capsys):
    """rank-causal learns on a StyleGAN2 dissection (one hooked full pass per step, no split),
    and the app's generator comes back with the recorded model arguments and paints."""
    from ganpaint.apps.paintapp import PaintApp
    ckpt = tiny_stylegan2(tmp_path / "tiny.pt")
    out, seg = tmp_path / "d", ["--segmenter", "tests.toy:SoftSegmenter"]
    assert main(["dissect", "--model", f"stylegan2:{ckpt}", "--model-arg", "noise=latent", *seg,
                 "--samples", "8", "--batch-size", "4", "--no-report", "--out", str(out)]) == 0
    assert main(["rank-causal", "--dissection", str(out), *seg, "--concepts", "bright",
                 "--samples", "4", "--steps", "2", "--batch-size", "4", "--device", "cpu"]) == 0
    d = Dissection.load(out)
    assert "bright" in d["layers"]["b8.conv1"]["causal"]
    g = registry.generator_from_dissection(d, out / "dissection.json")
    assert g.model_args == {"noise": "latent"} and g.model.noise == "latent"
    app = PaintApp(g, d)
    assert app.grid == (8, 8)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    assert app.painter.stroke("bright", mask, "draw", 4, 1.0) is not None
