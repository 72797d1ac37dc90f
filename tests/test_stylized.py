"""Shape vs texture on a toy classifier where the answer is known."""
from collections import OrderedDict

import torch

from ganpaint.apps import stylized as st
from ganpaint.core.sources import ClassifierSource


class Blobs(ClassifierSource):
    """16-px images: a dark background and a 5×5 'blob' in every image; the blob is red in the
    originals and green when stylized (same place, same labels)."""

    def __init__(self, model, style=None):
        super().__init__(model, "toy", ["ground", "blob"])
        self.style = style

    def describe(self):
        return {**super().describe(), "style": self.style}

    def labelled(self, indices):
        xs, ys = [], []
        for i in indices:
            g = torch.Generator().manual_seed(int(i))
            x = torch.full((3, 16, 16), -1.0) + 0.2 * torch.rand(3, 16, 16, generator=g)
            y = torch.zeros(16, 16, dtype=torch.long)
            r, c = (i * 5) % 11, (i * 7) % 11
            x[1 if self.style is not None else 0, r:r + 5, c:c + 5] = 1.0
            y[r:r + 5, c:c + 5] = 1
            xs.append(x)
            ys.append(y)
        return torch.stack(xs), torch.stack(ys)


def toy():
    """Unit 0 reads red only (colour); unit 1 reads the sum of the channels (brightness: the
    blob's shape in any colour); unit 2 reads noise."""
    conv = torch.nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 0] = 5.0
        conv.weight[1] = 2.0
        conv.weight[2, 2] = -1.0
    return torch.nn.Sequential(OrderedDict(feat=conv, pool=torch.nn.AdaptiveAvgPool2d(1),
                                           flat=torch.nn.Flatten(), head=torch.nn.Linear(3, 2)))


def test_a_colour_unit_is_texture_sensitive_and_a_shape_unit_is_not(tmp_path):
    model = toy()
    r, d0 = st.shape_vs_texture(Blobs(model), Blobs(model, style=1), "feat", samples=32,
                                quantile=0.05, batch_size=16, progress=False)
    units = {x["unit"]: x for x in r["units"]}
    assert units[0]["concept"] == units[1]["concept"] == "blob"
    assert units[0]["iou"] > 0.2 and units[1]["iou"] > 0.2  # both find the blob on originals
    assert [x["unit"] for x in r["texture_sensitive"]] == [0]  # red only: lost when it is green
    shape = [x["unit"] for x in r["shape_sensitive"]]
    assert 1 in shape and 0 not in shape  # brightness: kept (unit 2 reads unchanged blue noise)
    assert units[1]["iou_stylized"] >= 0.9 * units[1]["iou"] and units[0]["iou_stylized"] < 0.05
    st.scatter_figure(r, tmp_path / "s.png")
    assert st.thumbnails(r, d0, Blobs(model), tmp_path / "t.png").stat().st_size > 1000
