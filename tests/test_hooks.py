import pytest
import torch
import torch.nn as nn

from ganpaint.core.hooks import Trace
from ganpaint.core.names import UnknownNameError


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


class Recurrent(nn.Module):
    """An LSTM (output (seq, (h, c))) followed by a head on its output sequence."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lstm = nn.LSTM(3, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        seq, (h, c) = self.lstm(x)
        return self.head(seq), h, c


def test_tuple_output_retains_first_tensor_by_default():
    m, x = Recurrent(), torch.randn(2, 4, 3)
    with Trace(m, ["lstm"]) as tr:
        m(x)
    seq, (h, c) = m.lstm(x)
    assert torch.equal(tr["lstm"], seq) and not tr["lstm"].requires_grad


def test_select_names_a_nested_element():
    m, x = Recurrent(), torch.randn(2, 4, 3)
    with Trace(m, ["lstm"], select={"lstm": (1, 0)}) as tr:
        m(x)
    assert torch.equal(tr["lstm"], m.lstm(x)[1][0])


def test_edit_of_tuple_output_flows_on_and_keeps_the_rest():
    m, x = Recurrent(), torch.randn(2, 4, 3)
    _, h0, c0 = m(x)
    with Trace(m, edit={"lstm": torch.zeros_like}) as tr:
        y, h, c = m(x)
    assert torch.allclose(y, m.head.bias.expand(2, 4, 2))  # the head saw the zeroed sequence
    assert torch.equal(h, h0) and torch.equal(c, c0)       # (h, c) untouched
    assert torch.equal(tr["lstm"], torch.zeros(2, 4, 5))   # the edited value is what is kept
    with Trace(m, edit={"lstm": torch.zeros_like}, select={"lstm": (1, 1)}):
        y2, h2, c2 = m(x)
    assert torch.equal(c2, torch.zeros_like(c0)) and torch.equal(h2, h0)


class DictBlock(nn.Module):
    def forward(self, x):
        return {"meta": "not a tensor", "features": x * 2, "skip": x}


class DictNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = DictBlock()

    def forward(self, x):
        out = self.block(x)
        return out["features"] + out["skip"]


def test_dict_output_first_tensor_and_named_key():
    m, x = DictNet(), torch.ones(1, 3)
    with Trace(m, ["block"]) as tr:
        m(x)
    assert torch.equal(tr["block"], 2 * x)  # "meta" is skipped: not a tensor
    with Trace(m, edit={"block": torch.zeros_like}, select={"block": "skip"}) as tr:
        y = m(x)
    assert torch.equal(y, 2 * x) and torch.equal(tr["block"], torch.zeros(1, 3))


def test_select_errors_show_the_structure():
    m = Recurrent()
    with pytest.raises(KeyError, match=r"no element 3.*tuple\(Tensor\(2, 4, 5\), tuple"):
        with Trace(m, ["lstm"], select={"lstm": 3}):
            m(torch.randn(2, 4, 3))
    with pytest.raises(TypeError, match="not a tensor"):
        with Trace(m, ["lstm"], select={"lstm": 1}):
            m(torch.randn(2, 4, 3))
    assert all(len(mod._forward_hooks) == 0 for mod in m.modules())


def test_stop_without_retaining_stops():
    m = net()
    calls = []
    m[2].register_forward_hook(lambda *a: calls.append(1))
    seen = []
    with Trace(m, edit={"1.1": lambda o: seen.append(o.shape) or o}, stop=True,
               retain=False) as tr:
        y = m(torch.randn(1, 4))
        calls.append("after")  # not reached: the forward pass ended at layer 1.1
    assert seen == [(1, 4)] and calls == [] and tr.outputs == {}
    with Trace(m, ["0", "1.1"], stop=True, retain=False) as tr:
        m(torch.randn(1, 4))
    assert calls == [] and tr.outputs == {}
    with Trace(m, ["0"], stop=False, retain=False):
        m(torch.randn(1, 4))
    assert calls == [1]


def test_retain_input_before_an_inplace_layer():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 2))
    x = torch.randn(8, 4)
    pre = m[0](x)
    assert (pre < 0).any()
    with Trace(m, ["1", "2"], retain_input=True) as tr:
        m(x)
    assert torch.allclose(tr.inputs["1"], pre)  # copied before ReLU overwrote it
    assert torch.allclose(tr.inputs["2"], pre.clamp(min=0))
    assert torch.allclose(tr["1"], pre.clamp(min=0))
    with Trace(m, ["0"], retain_input=True, retain=False, stop=True) as tr:
        m(x)
    assert torch.equal(tr.inputs["0"], x) and tr.outputs == {}


def test_clone_protects_retained_outputs_from_later_inplace_layers():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True))
    x = torch.randn(8, 4)
    with Trace(m, ["0"]) as shared, torch.no_grad():
        m(x)
    with Trace(m, ["0"], clone=True) as copied, torch.no_grad():
        m(x)
    assert (shared["0"] >= 0).all()  # the in-place ReLU changed the retained tensor
    assert torch.allclose(copied["0"], m[0](x))
