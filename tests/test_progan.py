"""ProGAN compatibility with the GAN Dissection release's 256-px LSUN state dicts."""

import pytest
import torch

from ganpaint.core import checkpoint
from ganpaint.adapters import progan
from ganpaint.apps import registry

CHANNELS = [512] * 8 + [256, 256, 128, 128, 64, 64]


def release_state_dict():
    """Random weights with the exact shapes and key names of the release's 256-px files."""
    torch.manual_seed(0)
    sd, cin = {}, 512
    for i, c in enumerate(CHANNELS, 1):
        k = 4 if i == 1 else 3
        sd[f"layer{i}.conv.weight"] = torch.randn(c, cin, k, k)
        sd[f"layer{i}.wscale.b"] = torch.randn(c) * 0.1
        cin = c
    sd["output_256x256.conv.weight"] = torch.randn(3, 64, 1, 1)
    sd["output_256x256.wscale.b"] = torch.zeros(3)
    return sd


@pytest.fixture(scope="module")
def sd():
    return release_state_dict()


@pytest.fixture(scope="module")
def model(sd):
    return progan.from_state_dict(sd)


def test_loads_and_generates(model):
    with torch.no_grad():
        out = model(torch.randn(1, 512))
    assert out.shape == (1, 3, 256, 256)
    assert model.resolution == 256 and model.z_dim == 512


def test_all_layers_hookable_with_right_shapes(model, tmp_path, sd):
    path = tmp_path / "church.pth"
    torch.save(sd, path)
    g = registry.load_generator(f"progan:{path}")
    shapes = g.layer_shapes([f"layer{i}" for i in range(1, 15)])
    res = [4, 4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128, 256, 256]
    for i in range(1, 15):
        assert shapes[f"layer{i}"] == (CHANNELS[i - 1], res[i - 1], res[i - 1])
    assert g.can_split("layer4")


@pytest.mark.slow
def test_old_keys_and_wrapped_dicts(sd, model):
    old = {}
    for k, v in sd.items():
        if k.startswith("layer"):
            i, rest = k[len("layer"):].split(".", 1)
            old[f"features.{int(i) - 1}.{rest}"] = v
        else:
            old["output." + k.split(".", 1)[1]] = v
    m2 = progan.from_state_dict({"state_dict": old})
    z = torch.randn(1, 512)
    with torch.no_grad():
        assert torch.equal(m2(z), model(z))


def test_wrong_shape_names_first_bad_key(sd):
    bad = dict(sd)
    bad["layer5.conv.weight"] = torch.randn(512, 512, 3, 3 + 1)
    with pytest.raises(ValueError, match="layer5.conv.weight"):
        progan.from_state_dict(bad, "bad.pth")


def test_wscale_math():
    """gain √2/k over √in_channels: equals He init √2/√(in·k²) for the convs."""
    block = progan.ConvBlock(16, 8, 3, 1)
    assert block.wscale.scale == pytest.approx(2 ** 0.5 / 3 / 16 ** 0.5)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"x": Evil()}, f)
    with pytest.raises(checkpoint.CheckpointError, match="refused") as e:
        checkpoint.load(path)
    assert str(path) in str(e.value)


def test_truncated_file_named(tmp_path, sd):
    path = tmp_path / "cut.pth"
    torch.save({"a": torch.randn(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(checkpoint.CheckpointError, match="cut.pth"):
        registry.load_generator(f"progan:{path}")


def test_bad_import_paths():
    with pytest.raises(ValueError, match="import path"):
        registry.import_function("os.system('x')")
    with pytest.raises(ValueError, match="cannot import"):
        registry.import_function("no_such_pkg.mod:fn")
    with pytest.raises(ValueError, match="has no function"):
        registry.import_function("tests.toy:nope")
    with pytest.raises(ValueError, match="unknown model"):
        registry.load_generator("stylegan")
