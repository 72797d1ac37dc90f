"""A tiny generator and segmenter for tests, loaded through the import-path flags; and the
helpers tests share (`ROOT`, `source`). Shared fixtures are in conftest.py."""
from collections import OrderedDict
from pathlib import Path

import torch

from ganpaint.adapters.progan import ProGAN
from ganpaint.core.sources import Segmenter

ROOT = Path(__file__).resolve().parent.parent  # the checkout: subprocess tests run from it


def tiny_generator(width=8, seed=0):
    """A 16×16 ProGAN with random weights (deterministic by seed)."""
    torch.manual_seed(seed)
    g = ProGAN(z_dim=16, channels=[width] * 6)
    g.z_dim = 16
    g.preferred_layers = ["layer3", "layer4"]
    return g


class ToySegmenter(Segmenter):
    """Labels pixels by brightness: dark, mid, bright; and 'red' where red dominates."""
    concepts = ["dark", "mid", "bright", "red"]

    def segment(self, images, size=None):
        x = images
        if size and size != x.shape[-1]:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="nearest")
        m = x.mean(1)
        lab = torch.full(m.shape, 1, dtype=torch.long)
        lab[m < -0.2] = 0
        lab[m > 0.2] = 2
        lab[(x[:, 0] - x[:, 1:].mean(1)) > 0.4] = 3
        return lab


def toy_segmenter():
    return ToySegmenter()


def tiny_classifier(seed=0):
    """A small SceneCNN with random weights, for classifier dissection tests."""
    from ganpaint.world.classifier import SceneCNN
    torch.manual_seed(seed)
    return SceneCNN(widths=(4, 4, 8, 8, 8))


class _Unflatten(torch.nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0], 8, 4, 4)


def causal_generator():
    """A generator whose brightness is drawn by units 0 and 1 of `layer1` only; unit 2 copies
    unit 0's activation (it correlates perfectly) but draws nothing: a decoy for rankings."""
    torch.manual_seed(0)
    dense = torch.nn.Linear(4, 8 * 16)
    with torch.no_grad():
        w = dense.weight.reshape(8, 16, 4)
        w[2], dense.bias.reshape(8, 16)[2] = w[0], dense.bias.reshape(8, 16)[0]
    out = torch.nn.Conv2d(8, 3, 1)
    with torch.no_grad():
        out.weight.zero_()
        out.weight[:, :2] = 1.5
        out.bias.fill_(-1.0)
    return torch.nn.Sequential(OrderedDict(
        layer1=torch.nn.Sequential(dense, _Unflatten(), torch.nn.ReLU()), output=out))


class SoftSegmenter(Segmenter):
    """Differentiable two-concept segmenter: 'dark' vs 'bright' from mean intensity."""
    concepts = ["dark", "bright"]

    def probabilities(self, images, size=None, grad=False):
        with torch.set_grad_enabled(grad):
            m = images.mean(1, keepdim=True) * 4
            return torch.cat([-m, m], 1).softmax(1)


class _NearAndFar(torch.nn.Module):
    """Brightness at a pixel = unit 0 there (near) + unit 1 at the mirrored pixel (far)."""
    def forward(self, x):
        near, far = x[:, :1], x[:, 1:2].flip(-1)
        return (2.0 * near + 4.0 * far - 2.0).expand(-1, 3, -1, -1)


def context_generator():
    """A generator where unit 0 draws brightness where it is and unit 1 (more strongly) across the
    image, at the mirrored cell: zeroing unit 1 everywhere darkens most, zeroing it where the
    image is bright darkens other cells. Global and local rankings must differ."""
    torch.manual_seed(1)
    dense = torch.nn.Linear(4, 8 * 16)
    return torch.nn.Sequential(OrderedDict(
        layer1=torch.nn.Sequential(dense, _Unflatten(), torch.nn.ReLU()), output=_NearAndFar()))


def nan_generator():
    """The tiny generator with NaN weights in layer2: every later activation is NaN."""
    g = tiny_generator()
    with torch.no_grad():
        g.layer2.conv.weight.fill_(float("nan"))
    return g


class _Interrupting(torch.nn.Module):
    """Wraps a generator; its `after`+1-th forward pass raises KeyboardInterrupt (a Ctrl-C)."""

    def __init__(self, inner, after):
        super().__init__()
        self.inner, self.after, self.calls, self.z_dim = inner, after, 0, inner.z_dim
        self.preferred_layers = ["inner.layer3"]

    def forward(self, z):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return self.inner(z)


def interrupting_generator(after=2):
    return _Interrupting(tiny_generator(), after)


def list_segmenter():
    """A segmenter whose segment() returns a list, not a tensor."""
    class ListSegmenter(ToySegmenter):
        def segment(self, images, size=None):
            return super().segment(images, size).tolist()
    return ListSegmenter()


class DashSegmenter(ToySegmenter):
    """ToySegmenter whose label 0 (dark pixels) means "no label", named "-" as in the
    unified-parsing segmenter of the GAN Dissection release."""
    concepts = ["-", "mid", "bright", "red"]


def dash_segmenter():
    return DashSegmenter()


class IndexIgnoreSegmenter(ToySegmenter):
    """ToySegmenter declaring label 0 ("dark") as no label through `ignore_index`."""
    ignore_index = 0


def index_ignore_segmenter():
    return IndexIgnoreSegmenter()


class OutsideIgnoreSegmenter(ToySegmenter):
    """Dark pixels labelled 255, outside the concepts, declared as `ignore_index`."""
    concepts = ["mid", "bright", "red"]
    ignore_index = 255

    def segment(self, images, size=None):
        lab = super().segment(images, size)
        return torch.where(lab == 0, 255, lab - 1)


def outside_ignore_segmenter():
    return OutsideIgnoreSegmenter()


def source(seed=0):
    """The tiny generator with the toy segmenter as a dissection source (the ids it records
    are import paths into this module)."""
    from ganpaint.adapters.generator import Generator
    from ganpaint.core.sources import GeneratorSource
    g = tiny_generator()
    return GeneratorSource(Generator(g, g.z_dim, "tests.toy:tiny_generator"), ToySegmenter(), seed,
                           segmenter_id="tests.toy:toy_segmenter")


# -- running the CLI in-process (the battery and the inversion CLI tests) ------------------------
TOY = ["--model", "tests.toy:tiny_generator", "--segmenter", "tests.toy:toy_segmenter"]
DISSECT = ["dissect", *TOY, "--layers", "layer3", "--samples", "32", "--batch-size", "16",
           "--no-report", "--device", "cpu"]


def run_cli(capsys, args):
    """(exit code, stdout, stderr) of `ganpaint args`, run in this process."""
    from ganpaint.apps.cli import main
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err):
    """The one line ganpaint wrote about the error (tqdm bars may share stderr)."""
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.startswith("ganpaint")]
    assert len(lines) == 1, err
    return lines[0]


def free_port() -> int:
    """A localhost TCP port nothing listens on now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, env: dict | None = None, timeout: float = 120):
    """Start `python app.py --port PORT` from the checkout and wait until it answers.
    Returns (process, url); raises RuntimeError with the app's last output if it exits or does
    not answer within `timeout` s. Shared by the browser tests and bench/serve_bench.py."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT), **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}  # None: unset it for the app
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited: {proc.stdout.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"app did not start within {timeout:.0f} s")
