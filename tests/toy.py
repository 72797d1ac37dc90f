"""A tiny generator and segmenter for tests, loaded through the import-path flags."""
import torch

from ganpaint.progan import ProGAN
from ganpaint.segmenter import Segmenter


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
    from ganpaint.classifier import SceneCNN
    torch.manual_seed(seed)
    return SceneCNN(widths=(4, 4, 8, 8, 8))
