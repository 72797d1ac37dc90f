import pytest
import torch

from ganpaint.core import checkpoint
from ganpaint.world.augment import degrade
from ganpaint.world.labels import CONCEPTS
from ganpaint.world.scenes import HELDOUT_SEED, render_batch, to_tensor_images
from ganpaint.world.segmenter import DEFAULT_WEIGHTS, confusion, evaluate, load_segmenter, scores


@pytest.fixture(scope="module")
def seg():
    return load_segmenter()


def test_accuracy_on_held_out_renders(seg):
    r = evaluate(seg, samples=150, seed=123)
    assert r["pixel_accuracy"] >= 0.95 and r["mean_iou"] >= 0.85, r
    assert r["iou"]["door"] >= 0.7 and r["iou"]["window"] >= 0.7, r["iou"]


def test_robust_to_blur_noise_and_colour(seg):
    images, labels = render_batch(range(HELDOUT_SEED + 7000, HELDOUT_SEED + 7060), 64)
    x = degrade(to_tensor_images(images), torch.Generator().manual_seed(0), strength=1.0)
    r = scores(confusion(seg.segment(x), torch.from_numpy(labels), len(CONCEPTS)), CONCEPTS)
    assert r["pixel_accuracy"] >= 0.9, r


def test_interface(seg):
    images, _ = render_batch([HELDOUT_SEED + 1, HELDOUT_SEED + 2], 128)
    x = to_tensor_images(images)
    assert seg.concepts == CONCEPTS
    assert seg.segment(x).shape == (2, 128, 128)
    assert seg.segment(x, 32).shape == (2, 32, 32)
    p = seg.probabilities(x, 64)
    assert p.shape == (2, len(CONCEPTS), 64, 64)
    assert torch.allclose(p.sum(1), torch.ones(2, 64, 64), atol=1e-4)


def test_corrupt_weights_named(tmp_path):
    bad = tmp_path / "segmenter.pt"
    bad.write_bytes(DEFAULT_WEIGHTS.read_bytes()[:1000])
    with pytest.raises(checkpoint.CheckpointError, match="segmenter.pt"):
        load_segmenter(bad)
