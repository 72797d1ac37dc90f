import pytest
import torch
import torch.nn as nn

from ganpaint.hooks import Trace
from ganpaint.labels import UnknownNameError


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.Linear(4, 4)), nn.Linear(4, 2))


def test_retain_and_edit():
    m = net()
    x = torch.randn(3, 4)
    with Trace(m, ["1.1"]) as tr:
        y = m(x)
    assert torch.allclose(tr["1.1"], m[1](m[0](x)))
    with Trace(m, edit={"1.1": torch.zeros_like}):
        y0 = m(x)
    assert torch.allclose(y0, m[2].bias.expand(3, 2))
    assert not torch.allclose(y, y0)


def test_stop_skips_later_layers():
    m = net()
    calls = []
    m[2].register_forward_hook(lambda *a: calls.append(1))
    with Trace(m, ["0"], stop=True) as tr:
        m(torch.randn(1, 4))
    assert "0" in tr.outputs and calls == []


def test_hooks_removed_on_exception():
    m = net()
    with pytest.raises(ValueError):
        with Trace(m, edit={"0": lambda o: (_ for _ in ()).throw(ValueError("boom"))}):
            m(torch.randn(1, 4))
    assert all(len(mod._forward_hooks) == 0 for mod in m.modules())


def test_unknown_layer_lists_names():
    with pytest.raises(UnknownNameError) as e:
        Trace(net(), ["1.2"])
    assert "'1.1'" in str(e.value) and "Valid layers" in str(e.value)
