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


def _one_hot_cells(labels, n):
    return torch.nn.functional.one_hot(labels, n).permute(0, 3, 1, 2).float()


def test_splice_cells_moves_one_cell_between_scenes_whose_surroundings_agree():
    """Scene 0: sky with one tree cell at (3, 3); scene 1: all sky; scene 2: all grass.
    Donors are the next scene: 0 ← 1 (sky around both: the tree cell becomes sky), 1 ← 2 and
    2 ← 0 (sky around one, grass around the other: nothing moves)."""
    cells = torch.zeros(3, 8, 8, dtype=torch.long)  # concept 0 sky, 1 tree, 2 grass
    cells[0, 3, 3], cells[2] = 1, 2
    labels = cells.repeat_interleave(8, 1).repeat_interleave(8, 2)  # 64 px, 8 px a cell
    f = torch.randn(3, 5, 8, 8)
    spliced, picks = scenegan.splice_cells(f, labels, 3, torch.Generator().manual_seed(0))
    assert picks == [(0, 1, 3, 3)]
    assert torch.equal(spliced[0, :, 3, 3], f[1, :, 3, 3])
    spliced[0, :, 3, 3] = f[0, :, 3, 3]
    assert torch.equal(spliced, f)  # nothing else changed

    cells = torch.zeros(2, 8, 8, dtype=torch.long)  # sky; trees on every other cell of scene 1
    cells[1, ::2, ::2] = 1
    labels = cells.repeat_interleave(8, 1).repeat_interleave(8, 2)
    _, picks = scenegan.splice_cells(torch.randn(2, 5, 8, 8), labels, 2, torch.Generator().manual_seed(0))
    for row in (0, 1):
        at = [(y, x) for i, _, y, x in picks if i == row]
        assert len(at) == 4 and all(cells[1, y, x] == 1 for y, x in at)  # only the tree cells
        assert all(max(abs(a[0] - b[0]), abs(a[1] - b[1])) >= 3 for a in at for b in at if a != b)


def test_locality_loss_prefers_a_generator_whose_cells_draw_their_own_content():
    """Features are one-hot concepts per cell; a renderer that draws each cell from its own
    features scores near 0, one that blurs 3×3 cells together scores worse; gradients reach
    the renderer."""
    torch.manual_seed(0)
    cells = torch.randint(0, 3, (6, 8, 8))
    cells[:, :, :4] = 0  # shared surroundings so that cells qualify
    labels = cells.repeat_interleave(8, 1).repeat_interleave(8, 2)
    f = _one_hot_cells(cells, 3)
    identity = torch.nn.Identity()
    scale = torch.tensor(20.0, requires_grad=True)
    local = lambda x: torch.nn.functional.interpolate(x * scale, scale_factor=8)  # noqa: E731
    blur = lambda x: local(torch.nn.functional.avg_pool2d(x, 3, 1, 1))  # noqa: E731
    sharp = scenegan.locality_loss(local, f, labels, identity, 3, torch.Generator().manual_seed(1))
    soft = scenegan.locality_loss(blur, f, labels, identity, 3, torch.Generator().manual_seed(1))
    assert sharp < 0.01 < soft
    soft.backward()
    assert scale.grad is not None and scale.grad != 0


@pytest.mark.slow
def test_gan_step_with_the_locality_loss_updates_the_generator_differently():
    real = torch.rand(4, 3, 64, 64) * 2 - 1
    plain, local = scenegan.Trainer(batch_size=4), scenegan.Trainer(batch_size=4, locality=1.0)
    plain.step(real, 0)
    local.step(real, 0)
    assert any(not torch.allclose(a, b) for a, b in zip(plain.g.parameters(), local.g.parameters()))
