"""Causal unit rankings: the units whose removal takes a concept away the most.

IoU ranks units by what they correlate with. A unit can match trees well and still not be
what draws them (the next layer's pixel norm and the other units make up for it). The PNAS
2020 paper ranks by effect instead: learn one coefficient α ∈ [0, 1] per unit, ablating
features to x·(1 − α), that minimises how much of the concept the segmenter still sees, with an
L1 penalty keeping α sparse; then rank units by α. Removing the top units of that ranking
removes far more of the concept than removing the top units by IoU, and inserting them draws
the concept where the scene allows it (doors on walls, not in the sky): one ranking serves
both painting actions.

A painting stroke ablates only where the brush went, and the tree around it keeps drawing
into the stroke through the next layers' convolutions (and the pixel norm scales the remaining
units up). Units that remove a concept everywhere are not the ones that remove it locally, so
`local=True` learns a second ranking the way painting uses it: α acts only on the feature cells
where the concept is in each sample, and the loss counts the concept left in those cells.

Drawing is not removal run backwards: the units whose absence erases doors need not be the
ones whose presence in one empty cell makes a door there. `insert=True` learns the third
ranking the way a "draw" dab works (GAN Dissection's insertion effect): at one cell per sample,
features become x·(1 − α) + v·α with v each unit's insertion level, and the loss rewards the
concept gained in that cell and its 8 neighbours. The cells are drawn where a person would
dab: where the concept is not yet, weighted by how much they hold of what surrounds the
concept where it is (`insertion_sites`: wall for doors). A door dabbed in the sky draws
nothing whatever the units, so such sites would only add noise.

Rankings live beside `dissection.json` in `causal.json` (global), `causal_local.json` and
`causal_insert.json` ({layer: {concept: ...}}); `Dissection` saves and merges them, so
painting and the experiments use them when present.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ganpaint.core.dissection import Dissection
from ganpaint.core.intervene import cell_shares
from ganpaint.core.names import lookup

CAUSAL_SEED = 2  # latents apart from the dissection's (0) and the experiments' (1)
THETA_START = -3.0  # α = sigmoid(θ) starts near 0.05: small, but with a gradient
# an insertion's effect starts only when enough units are in: from α near 0.05 no dab draws
# anything, the gradient is nil and the penalty wins. Insertion starts from α = 0.5 instead
THETA_START_INSERT = 0.0


def _edited_images(generator, layer, z, feats, edit):
    """Images after `edit` of the layer's output, keeping the graph for α."""
    if generator.can_split(layer):
        return generator.forward_from(layer, edit(feats), grad=True)
    images, _ = generator.run(z, edit={layer: edit}, grad=True)
    return images


def learn(generator, segmenter, layer: str, concept: str, samples=256, steps=300,
          batch_size=16, lr=0.1, penalty=0.01, seed=CAUSAL_SEED, local=False,
          insert=False, value=None, progress=True) -> dict:
    """Learn α for one concept; returns the ranking (units by α, best first) and the share of
    the concept left during learning (`curve`). `local`: ablate and count only at the cells
    where the unedited scene has the concept. `insert`: learn the drawing ranking instead
    (`value`: per-unit insertion levels, by default each unit's 99th percentile here); its
    `curve` is the concept gained per dab, in cells' worth of pixels."""
    for what, v in (("samples", samples), ("steps", steps), ("batch size", batch_size)):
        if int(v) < 1:
            raise ValueError(f"{what} must be at least 1, got {v}")
    if local and insert:
        raise ValueError("a ranking is learned for removal (optionally local) or for insertion, not both")
    c = lookup(concept, segmenter.concepts, getattr(segmenter, "aliases", None))
    name = segmenter.concepts[c]
    z = generator.latents(range(samples), seed)
    feats = torch.cat([generator.run(z[i:i + 64], [layer], stop=True)[1][layer]
                       for i in range(0, samples, 64)])
    with torch.no_grad():  # the concept's probability, and the label map
        probs, labels = zip(*[(p[:, c], p.argmax(1)) for p in (segmenter.probabilities(
            _edited_images(generator, layer, z[i:i + 64], feats[i:i + 64], lambda x: x))
            for i in range(0, samples, 64))])
        probs, labels = torch.cat(probs), torch.cat(labels)
        mine = labels == c
    if local:
        cells = F.adaptive_max_pool2d(mine[:, None].float(), feats.shape[2:])
        where = F.interpolate(cells, size=probs.shape[-2:], mode="nearest")[:, 0]
    else:
        cells = torch.ones(samples, 1, 1, 1, device=probs.device)
        where = torch.ones(samples, 1, 1, device=probs.device)
    if insert:
        return _learn_insert(generator, segmenter, layer, z, feats, probs, labels, c, name, value,
                             samples, steps, batch_size, lr, penalty, seed, progress)
    before = probs * where
    drawn = torch.nonzero(before.flatten(1).sum(1) >= 1)[:, 0]
    if local and len(drawn) == 0:
        raise ValueError(f"the generator drew no {name} in {samples} samples: nothing to learn from")
    pool = drawn if local else torch.arange(samples)
    theta = torch.full((feats.shape[1],), THETA_START, device=feats.device, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    rng = torch.Generator().manual_seed(seed)
    curve = []
    desc = f"{'local ' if local else ''}causal ranking {name}"
    for _ in tqdm(range(steps), disable=not progress, desc=desc, unit="step"):
        idx = pool[torch.randint(len(pool), (batch_size,), generator=rng)]
        alpha = torch.sigmoid(theta).reshape(1, -1, 1, 1)
        a = alpha * cells[idx].to(feats.device)
        images = _edited_images(generator, layer, z[idx], feats[idx], lambda x: x * (1 - a))
        kept = segmenter.probabilities(images, grad=True)[:, c] * where[idx]
        left = kept.sum() / before[idx].sum().clamp_min(1.0)
        loss = left + penalty * alpha.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.append(round(float(left.detach()), 5))
    return _result(theta, curve, "local" if local else "causal", name, layer, samples, steps,
                   batch_size, penalty, seed, "left")


def _result(theta, curve, kind, name, layer, samples, steps, batch_size, penalty, seed, what):
    """The learned ranking as saved: units by α, best first, and the learning curve."""
    alpha = torch.sigmoid(theta).detach().cpu()
    order = torch.argsort(-alpha, stable=True)
    return {"concept": name, "layer": layer, "kind": kind, "local": kind == "local",
            "samples": samples, "steps": steps, "batch_size": batch_size, "penalty": penalty,
            "seed": seed, f"{what}_start": curve[0], f"{what}_end": curve[-1],
            "curve": curve[:: max(1, steps // 50)],
            "ranking": [{"unit": int(u), "alpha": round(float(alpha[u]), 5)} for u in order]}


def insertion_sites(labels, c, n_concepts, grid) -> torch.Tensor:
    """(N, h, w) weights of the cells where a person would draw concept c: cells without it,
    weighted by how much they hold what surrounds c where it is (a door's cell is mostly wall,
    so wall cells weigh most for doors; sky and grass cells for trees). A concept that fills
    every cell it is in has no known context: then every cell without it weighs the same."""
    shares = cell_shares(labels, n_concepts, grid)
    has = shares[:, c] > 0
    context = (shares * has[:, None]).sum((0, 2, 3))
    if context.sum() - context[c] <= 0:  # it fills its cells: no context known, any cell will do
        context = torch.ones_like(context)
    context[c] = 0
    return torch.einsum("k,nkhw->nhw", context / context.sum().clamp_min(1e-9), shares) * ~has


def _learn_insert(generator, segmenter, layer, z, feats, probs, labels, c, name, value, samples,
                  steps, batch_size, lr, penalty, seed, progress):
    """The insertion ranking (see the module's docstring): one dab per sample per step."""
    n, units, h, w = feats.shape
    sites = insertion_sites(labels, c, len(segmenter.concepts), (h, w)).reshape(-1)
    if sites.sum() <= 0:
        raise ValueError(f"the generator drew no {name} in {samples} samples (or only {name}): "
                         "no place to learn drawing it from")
    if value is None:
        value = torch.quantile(feats.transpose(0, 1).reshape(units, -1).float(), 0.99, dim=1)
    v = torch.as_tensor(value, dtype=feats.dtype, device=feats.device).reshape(1, units, 1, 1)
    H, W = probs.shape[-2:]
    cell_px = (H / h) * (W / w)
    theta = torch.full((units,), THETA_START_INSERT, device=feats.device, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    rng = torch.Generator().manual_seed(seed)
    curve = []
    for _ in tqdm(range(steps), disable=not progress, desc=f"insertion ranking {name}", unit="step"):
        pick = torch.multinomial(sites, batch_size, replacement=True, generator=rng)
        idx, site = pick // (h * w), pick % (h * w)
        dab = F.one_hot(site, h * w).reshape(batch_size, 1, h, w).to(feats)
        window = F.interpolate(F.max_pool2d(dab, 3, stride=1, padding=1), size=(H, W), mode="nearest")[:, 0]
        a = torch.sigmoid(theta).reshape(1, -1, 1, 1) * dab
        images = _edited_images(generator, layer, z[idx], feats[idx], lambda x: x * (1 - a) + v * a)
        after = segmenter.probabilities(images, grad=True)[:, c]
        gained = ((after - probs[idx]) * window).sum() / (batch_size * cell_px)
        loss = -gained + penalty * torch.sigmoid(theta).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.append(round(float(gained.detach()), 5))
    return _result(theta, curve, "insert", name, layer, samples, steps, batch_size, penalty,
                   seed, "gain")


def learn_all(generator, segmenter, dissection: Dissection, concepts, layer=None,
              log=print, **kw) -> list[dict]:
    """Learn rankings for several concepts and add them to the dissection (saved beside it
    when it lives in a folder); returns them."""
    dissection = Dissection.of(dissection)
    layer = dissection.layer(layer)
    if dissection.path is None:
        log("note: this dissection lives in memory: the learned rankings are kept in it, not "
            "on disk (Dissection.save(folder) writes them)")
    if kw.get("insert") and kw.get("value") is None:  # the levels strokes draw with
        kw["value"] = [dissection.level(u, 0.01, layer)  # as Painter.stroke's default
                       for u in range(dissection["layers"][layer]["units"])]
    results = []
    for concept in concepts:
        r = learn(generator, segmenter, layer, concept, **kw)
        dissection.add_learned(r)
        top = ", ".join(str(u["unit"]) for u in r["ranking"][:10])
        if r["kind"] == "insert":
            log(f"{r['concept']} (insertion): gained per dab while learning {r['gain_start']:.3f} "
                f"→ {r['gain_end']:.3f} cells; top units {top}")
        else:
            log(f"{r['concept']}{' (local)' if r['local'] else ''}: share left while learning "
                f"{r['left_start']:.3f} → {r['left_end']:.3f}; top units {top}")
        results.append(r)
    return results
