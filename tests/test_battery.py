"""The bad-input battery (issue 19): every bad flag, file or interruption gets one clear line on
stderr and exit code 2 (130 for Ctrl-C), never a traceback, and data files never run code.

Table-driven: (command, expected exit code, words the error line must contain). `{d}` is a
finished toy dissection, `{tmp}` a fresh folder, `{f:NAME}` a prepared bad file."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from ganpaint.apps.cli import main

from tests.toy import DISSECT, TOY, error_line, run_cli


def cli(capsys, args):
    """(exit code, stderr) of `ganpaint args`, run in this process."""
    code, _, err = run_cli(capsys, args)
    return code, err


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    out = tmp_path_factory.mktemp("d") / "toy"
    assert main(DISSECT + ["--out", str(out)]) == 0
    return out


def bad_files(root, d):
    """Prepared bad inputs: {name: path}."""
    root.mkdir(exist_ok=True)
    f = {}

    def write(name, data):
        f[name] = root / name
        (f[name].write_bytes if isinstance(data, bytes) else f[name].write_text)(data)

    write("file", "not a folder")
    write("random.pt", np.random.default_rng(0).bytes(300))
    write("empty.pt", b"")
    torch.save([torch.zeros(2)], root / "list.pt")
    torch.save(torch.zeros(3, 3), root / "tensor.pt")
    f["list.pt"], f["tensor.pt"] = root / "list.pt", root / "tensor.pt"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {root / 'PWNED'}",))
    torch.save({"a": Evil()}, root / "evil.pt")
    f["evil.pt"] = root / "evil.pt"
    for name, edit in {"lists": lambda j: {"layers": [], "concepts": j["concepts"]},
                       "array": lambda j: [1, 2],
                       "short": lambda j: {**j, "layers": {"layer3": {
                           **j["layers"]["layer3"],
                           "unit_stats": j["layers"]["layer3"]["unit_stats"][:2]}}},
                       "unit99": lambda j: {**j, "layers": {"layer3": {
                           **j["layers"]["layer3"], "ranking": {"dark": [{"unit": 99, "iou": 1}]}}}},
                       "abort": lambda j: {**j, "model": "os:abort"},
                       "mkdtemp": lambda j: {**j, "model": "tempfile:mkdtemp"},
                       "marker": lambda j: {**j, "model": "battery_marker:make"}}.items():
        copy = root / name
        shutil.copytree(d, copy)
        (copy / "dissection.json").write_text(json.dumps(edit(json.loads((d / "dissection.json").read_text()))))
        f[name] = copy
    for name, data in {"npz0": b"", "npzbad": b"PK\x03\x04 garbage"}.items():
        copy = root / name
        shutil.copytree(d, copy)
        (copy / "results.npz").write_bytes(data)
        f[name] = copy
    return f


EXP = ["--concept", "dark", "--samples", "2", "--batch-size", "2", "--device", "cpu"]
BATTERY = [
    # 1. data files hold names, not code
    (["ablate", "--dissection", "{f:abort}", *EXP, "--k", "1"], 2,
     ["os:abort", "import path", "never runs code", "--model", "--trust"]),
    (["insert", "--dissection", "{f:mkdtemp}", *EXP, "--units", "1"], 2, ["tempfile:mkdtemp", "--trust"]),
    (["ablate", "--dissection", "{d}", *EXP, "--k", "1", "--model", "tests.toy:tiny_generator"], 2,
     ["segmenter", "tests.toy:toy_segmenter", "--segmenter"]),
    # import paths typed by the user must build a model
    (["dissect", "--model", "os:system", "--model-arg", "command=touch {tmp}/PWNED", "--out", "{tmp}/o"],
     2, ["os:system", "standard library"]),
    (["dissect", "--model", "builtins:exec", "--out", "{tmp}/o"], 2, ["standard library"]),
    (["dissect", "--model", "tests.toy:ToySegmenter", "--out", "{tmp}/o"], 2, ["nn.Module", "ToySegmenter"]),
    (["dissect", "--model", "tests.toy:tiny_generator", "--model-arg", "colour=red", "--out", "{tmp}/o"],
     2, ["colour"]),
    # 3. silent wrong results
    (["ablate", "--dissection", "{d}", *EXP, *TOY, "--k", "-5"], 2, ["--k", "at least 0", "-5"]),
    (["ablate", "--dissection", "{d}", *EXP, *TOY, "--k", "1", "100000"], 2, ["--k 100000", "0..8"]),
    (["insert", "--dissection", "{d}", *EXP, *TOY, "--units", "-3"], 2, ["--units", "at least 1"]),
    (["insert", "--dissection", "{d}", *EXP, *TOY, "--units", "9"], 2, ["--units 9", "1..8"]),
    (["rank", "--dissection", "{d}", "--concept", "dark", "--top", "-3"], 2, ["--top", "at least 1"]),
    (["dissect", "--model", "tests.toy:nan_generator", "--segmenter", "tests.toy:toy_segmenter",
      "--layers", "layer3", "--samples", "16", "--no-report", "--out", "{tmp}/nan"], 2, ["NaN", "weights"]),
    # 5. messages instead of tracebacks
    (["rank", "--dissection", "{d}", "--concept", "dark", "--by", "causal"], 2, ["rank-causal"]),
    (DISSECT + ["--samples", "0", "--out", "{tmp}/o"], 2, ["--samples", "at least 1"]),
    (DISSECT + ["--samples", "-4", "--out", "{tmp}/o"], 2, ["--samples", "at least 1"]),
    (DISSECT + ["--batch-size", "0", "--out", "{tmp}/o"], 2, ["--batch-size", "at least 1"]),
    (DISSECT[:-2] + ["--device", "tpu", "--out", "{tmp}/o"], 2, ["unknown device 'tpu'", "cpu"]),
    (DISSECT + ["--out", "{f:file}"], 2, ["is an existing file"]),
    (DISSECT + ["--out", "{f:file}/sub"], 2, ["cannot create output folder", "is a file"]),
    (["rank", "--dissection", "{f:lists}", "--list"], 2, ["not a ganpaint dissection", "layers"]),
    (["rank", "--dissection", "{f:array}", "--list"], 2, ["not a ganpaint dissection"]),
    (["rank", "--dissection", "{f:short}", "--list"], 2, ["unit_stats", "8 units"]),
    (["rank", "--dissection", "{f:unit99}", "--concept", "dark"], 2, ["ranking", "0..7"]),
    (["unit-importance", "--dissection", "{f:npz0}", "--layer", "layer3", "--out", "{tmp}/u"], 2,
     ["results.npz", "corrupt", "re-run"]),
    (["unit-importance", "--dissection", "{f:npzbad}", "--layer", "layer3", "--out", "{tmp}/u"], 2,
     ["results.npz", "corrupt"]),
    (["unit-importance", "--dissection", "{d}", "--layer", "conv9", "--out", "{tmp}/u"], 2,
     ["no results for layer 'conv9'", "layer3"]),
    (["dissect", "--model", "progan:{f:list.pt}", "--out", "{tmp}/o"], 2, ["holds a list", "state dict"]),
    (["dissect", "--model", "progan:{f:tensor.pt}", "--out", "{tmp}/o"], 2, ["holds a Tensor"]),
    (["dissect", "--model", "tests.toy:tiny_generator", "--segmenter", "tests.toy:list_segmenter",
      "--samples", "16", "--no-report", "--out", "{tmp}/o"], 2, ["segment()", "returned a list", "tensor"]),
    (["rank-causal", "--dissection", "{d}", "--concepts", "dark", "--steps", "0"], 2,
     ["--steps", "at least 1"]),
    (DISSECT + ["--quantile", "1.5", "--out", "{tmp}/o"], 2, ["--quantile", "(0, 0.5)", "1.5"]),
    (DISSECT + ["--tail", "0", "--out", "{tmp}/o"], 2, ["--tail", "(0, 1]"]),
    (["dissect", "--model", "progan:{f:random.pt}", "--out", "{tmp}/o"], 2,
     ["random.pt", "not a torch file"]),
    (["dissect", "--model", "progan:{f:empty.pt}", "--out", "{tmp}/o"], 2, ["empty.pt", "not a torch file"]),
    (["dissect", "--model", "progan:{f:evil.pt}", "--out", "{tmp}/o"], 2, ["evil.pt", "pickled Python"]),
    (["eval-segmenter", "--samples", "0"], 2, ["--samples", "at least 1"]),
]


def fill(arg, d, tmp, files):
    arg = str(arg).replace("{d}", str(d)).replace("{tmp}", str(tmp))
    for name, path in files.items():
        arg = arg.replace(f"{{f:{name}}}", str(path))
    return arg


@pytest.fixture(scope="module")
def files(d, tmp_path_factory):
    return bad_files(tmp_path_factory.mktemp("bad"), d)


@pytest.mark.parametrize("args,code,words", BATTERY, ids=[" ".join(a[:1] + [w[0]]) for a, _, w in BATTERY])
def test_battery(args, code, words, d, files, tmp_path, capsys):
    got, err = cli(capsys, [fill(a, d, tmp_path, files) for a in args])
    line = error_line(err)
    assert got == code, err
    for w in words:
        assert fill(w, d, tmp_path, files) in line, line
    assert "pickled" not in line or "evil" in line  # random bytes are not called code
    assert not (tmp_path / "PWNED").exists() and not (files["file"].parent / "PWNED").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(tmp_path, capsys):
    code, err = cli(capsys, DISSECT[:-2] + ["--device", "cuda", "--out", tmp_path / "o"])
    assert code == 2 and "CUDA is not available" in error_line(err)


def test_a_dissection_never_runs_its_import_path(d, files, tmp_path, capsys, monkeypatch):
    """A dissection naming an import path: refused without a word from the user; with --trust the
    path runs (the marker appears); and the app refuses it the same way."""
    marker = tmp_path / "called"
    (tmp_path / "battery_marker.py").write_text(
        "from pathlib import Path\nfrom tests.toy import tiny_generator\n\n"
        f"def make():\n    Path({str(marker)!r}).touch()\n    return tiny_generator()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["ablate", "--dissection", files["marker"], *EXP, "--segmenter", "tests.toy:toy_segmenter",
            "--k", "1", "--out", tmp_path / "x"]
    code, err = cli(capsys, args)
    assert code == 2 and "battery_marker:make" in error_line(err) and not marker.exists()
    code, err = cli(capsys, args + ["--trust"])
    assert code == 0, err
    assert marker.exists()
    import app
    marker.unlink()
    with pytest.raises(SystemExit) as e:
        app.main(["--dissection", str(files["marker"])])
    assert e.value.code == 2 and "--trust" in capsys.readouterr().err and not marker.exists()


def test_ctrl_c_saves_and_exits_130(tmp_path, capsys):
    out = tmp_path / "o"
    code, err = cli(capsys, ["dissect", "--model", "tests.toy:interrupting_generator", "--segmenter",
                             "tests.toy:toy_segmenter", "--samples", "64", "--batch-size", "8",
                             "--no-report", "--out", out])
    assert code == 130, err
    line = error_line(err)
    assert "interrupted" in line and "progress saved" in line and "resume" in line
    assert (out / "partial" / "state.pt").exists() and not (out / "dissection.json").exists()
    assert not (out / "dissect.lock").exists()  # released


def test_finished_run_with_other_settings(d, tmp_path, capsys):
    out = tmp_path / "d"
    shutil.copytree(d, out)
    code, err = cli(capsys, DISSECT + ["--out", out, "--quantile", "0.005"])
    assert code == 2 and "finished dissection with other settings" in error_line(err)
    assert "quantile" in error_line(err)


def test_second_dissection_into_a_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "dissect.lock").write_text(f"{os.getpid()}\n")  # a live process holds it
    code, err = cli(capsys, DISSECT + ["--out", out])
    assert code == 2 and "another dissection" in error_line(err) and str(os.getpid()) in err
    assert not (out / "dissection.json").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / "dissect.lock").write_text(f"{dead.pid}\n")  # left by a killed run: taken over
    code, err = cli(capsys, DISSECT + ["--out", out])
    assert code == 0, err
    assert (out / "dissection.json").exists() and not (out / "dissect.lock").exists()


def test_results_before_json_and_no_temporary_files(tmp_path, monkeypatch):
    """dissection.json is the commit point: renamed into place after results.npz (and the report)."""
    import ganpaint.core.dissect as dissect_module
    order = []
    real = os.replace

    def record(src, dst):
        order.append(os.path.basename(dst))
        return real(src, dst)
    monkeypatch.setattr(dissect_module.os, "replace", record)
    out = tmp_path / "o"
    assert main(DISSECT + ["--out", str(out)]) == 0
    assert order[-2:] == ["results.npz", "dissection.json"]
    assert not list(out.glob("*.tmp")) and not list(out.glob("partial/*.tmp"))
    assert np.load(out / "results.npz")["layer3/iou"].shape == (8, 4)


def test_stdlib_callables_are_refused_also_when_re_exported(tmp_path, monkeypatch, capsys):
    (tmp_path / "reexport.py").write_text("from os import system\nfrom shutil import rmtree\n"
                                          "from subprocess import Popen\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    victim = tmp_path / "victim"
    victim.mkdir()
    for name, args in [("system", ["--model-arg", f"command=touch {tmp_path}/PWNED"]),
                       ("rmtree", ["--model-arg", f"path={victim}"]),
                       ("Popen", ["--model-arg", f"args=touch {tmp_path}/PWNED"])]:
        code, err = cli(capsys, ["dissect", "--model", f"reexport:{name}", *args, "--out", tmp_path / "o"])
        assert code == 2 and "refused to call" in error_line(err), err
    assert victim.exists() and not (tmp_path / "PWNED").exists()
