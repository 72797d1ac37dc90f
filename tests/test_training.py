"""Training resumes from its checkpoint and continues exactly as an unbroken run would."""
import pytest
import torch

from ganpaint.core import checkpoint
from ganpaint.world import scenegan
from ganpaint.world import train_segmenter
from ganpaint.world.segmenter import load_segmenter


def quiet(*a):
    pass


@pytest.mark.slow
def test_gan_resume_equals_unbroken_run_and_continues_from_a_compact_state(tmp_path):
    """A run stopped at step 2 and resumed equals an unbroken one. Every export also writes a
    compact state (networks in half precision, no optimiser moments): a fresh run started from
    it continues at its step with its networks."""
    scenegan.train(tmp_path / "a", tmp_path / "a.pt", steps=3, batch_size=4, device="cpu", log=quiet)
    scenegan.train(tmp_path / "b", tmp_path / "b.pt", steps=2, batch_size=4, device="cpu", log=quiet)
    compact = tmp_path / "compact.pt"
    (tmp_path / "b" / "state_compact.pt").rename(compact)
    full, small = checkpoint.load(tmp_path / "b" / "state.pt"), checkpoint.load(compact)
    scenegan.train(tmp_path / "b", tmp_path / "b.pt", steps=3, batch_size=4, device="cpu", log=quiet)
    a, b = checkpoint.load(tmp_path / "a" / "state.pt"), checkpoint.load(tmp_path / "b" / "state.pt")
    assert a["step"] == b["step"] == 3
    for k in ("g", "d", "g_ema", "d_sem"):
        for name, t in a[k].items():
            assert torch.allclose(t, b[k][name], atol=1e-6), (k, name)
    g = scenegan.load_generator(tmp_path / "b.pt")
    assert g(torch.randn(2, g.z_dim)).shape == (2, 3, 64, 64)

    assert small["step"] == 2 and set(small["compact_state"]) == {"g", "g_ema", "d", "d_sem"}
    assert compact.stat().st_size < 0.3 * (tmp_path / "b" / "state.pt").stat().st_size
    assert all(torch.allclose(full[k][n].half().float(), v.float())
               for k in ("g", "d") for n, v in small["compact_state"][k].items())
    logs = []
    scenegan.train(tmp_path / "c", tmp_path / "c.pt", steps=2, batch_size=4, init=compact, log=logs.append)
    assert any("compact state" in m and "step 2" in m for m in logs)
    assert not (tmp_path / "c" / "state.pt").exists()  # already at step 2: nothing to train
    scenegan.train(tmp_path / "c", tmp_path / "c.pt", steps=3, batch_size=4, init=compact, log=quiet)
    c = checkpoint.load(tmp_path / "c" / "state.pt")
    assert c["step"] == 3
    g = scenegan.build_generator()  # the continued run starts from the compact weights
    g.load_state_dict({k: v.float() for k, v in small["compact_state"]["g_ema"].items()})
    diff = max((c["g_ema"][k] - v).abs().max().item() for k, v in g.state_dict().items())
    assert 0 < diff < 0.05, diff  # one step of EMA away, not a fresh network


def test_semantic_discriminator_learns_heads_only_and_passes_gradients_to_the_image():
    seg = load_segmenter()
    before = {k: v.clone() for k, v in seg.net.state_dict().items()}
    d = scenegan.SemanticDiscriminator(seg.net).train()
    opt = torch.optim.Adam(d.heads.parameters(), lr=1e-2)
    heads = [p.detach().clone() for p in d.heads.parameters()]
    image = torch.rand(4, 3, 64, 64, requires_grad=True)
    scores = d(image * 2 - 1)
    assert scores.shape == (4, 3)  # one score per feature scale
    scores.mean().backward()
    opt.step()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert any(not torch.equal(a, b) for a, b in zip(heads, d.heads.parameters()))
    for k, v in seg.net.state_dict().items():  # weights and batch-norm statistics untouched
        assert torch.equal(v, before[k]), k


@pytest.mark.slow
def test_gan_run_from_an_older_recipe_resumes_with_a_fresh_semantic_discriminator(tmp_path):
    logs = []
    scenegan.train(tmp_path / "r", tmp_path / "r.pt", steps=1, batch_size=4, semantic=False, log=quiet)
    assert "d_sem" not in checkpoint.load(tmp_path / "r" / "state.pt")
    scenegan.train(tmp_path / "r", tmp_path / "r.pt", steps=2, batch_size=4, log=logs.append)
    state = checkpoint.load(tmp_path / "r" / "state.pt")
    assert state["step"] == 2 and "d_sem" in state and "opt_d_sem" in state
    assert any("d_sem" in m and "starts fresh" in m for m in logs)


@pytest.mark.slow
def test_segmenter_resume_after_interruption(tmp_path, monkeypatch):
    train_segmenter.train(tmp_path / "a", tmp_path / "a.pt", steps=3, batch_size=4, log=quiet)
    real, calls = train_segmenter.degrade, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed during step 3
        return real(*a, **k)
    monkeypatch.setattr(train_segmenter, "degrade", interrupted)
    try:
        train_segmenter.train(tmp_path / "b", tmp_path / "b.pt", steps=3, batch_size=4, log=quiet,
                              save_every=1)
    except KeyboardInterrupt:
        pass
    assert checkpoint.load(tmp_path / "b" / "state.pt")["step"] == 2
    monkeypatch.setattr(train_segmenter, "degrade", real)
    train_segmenter.train(tmp_path / "b", tmp_path / "b.pt", steps=3, batch_size=4, log=quiet)
    a, b = load_segmenter(tmp_path / "a.pt"), load_segmenter(tmp_path / "b.pt")
    for (n, t), (_, u) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert torch.allclose(t.float(), u.float(), atol=1e-6), n
