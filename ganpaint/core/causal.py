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

Rankings live beside `dissection.json` in `causal.json` (global) and `causal_local.json`
({layer: {concept: ...}}); `Dissection` saves and merges them, so painting and the experiments
use them when present.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ganpaint.core.dissection import Dissection
from ganpaint.core.names import lookup

CAUSAL_SEED = 2  # latents apart from the dissection's (0) and the experiments' (1)
THETA_START = -3.0  # α = sigmoid(θ) starts near 0.05: small, but with a gradient


def _edited_images(generator, layer, z, feats, edit):
    """Images after `edit` of the layer's output, keeping the graph for α."""
    if generator.can_split(layer):
        return generator.forward_from(layer, edit(feats), grad=True)
    images, _ = generator.run(z, edit={layer: edit}, grad=True)
    return images


def learn(generator, segmenter, layer: str, concept: str, samples=256, steps=300,
          batch_size=16, lr=0.1, penalty=0.01, seed=CAUSAL_SEED, local=False,
          progress=True) -> dict:
    """Learn α for one concept; returns the ranking (units by α, best first) and the share of
    the concept left during learning (`curve`). `local`: ablate and count only at the cells
    where the unedited scene has the concept."""
    for what, v in (("samples", samples), ("steps", steps), ("batch size", batch_size)):
        if int(v) < 1:
            raise ValueError(f"{what} must be at least 1, got {v}")
    c = lookup(concept, segmenter.concepts, getattr(segmenter, "aliases", None))
    name = segmenter.concepts[c]
    z = generator.latents(range(samples), seed)
    feats = torch.cat([generator.run(z[i:i + 64], [layer], stop=True)[1][layer]
                       for i in range(0, samples, 64)])
    with torch.no_grad():  # the concept's probability, and where it wins (its label map)
        probs, mine = zip(*[(p[:, c], p.argmax(1) == c) for p in (segmenter.probabilities(
            _edited_images(generator, layer, z[i:i + 64], feats[i:i + 64], lambda x: x))
            for i in range(0, samples, 64))])
        probs, mine = torch.cat(probs), torch.cat(mine)
    if local:
        cells = F.adaptive_max_pool2d(mine[:, None].float(), feats.shape[2:])
        where = F.interpolate(cells, size=probs.shape[-2:], mode="nearest")[:, 0]
    else:
        cells = torch.ones(samples, 1, 1, 1, device=probs.device)
        where = torch.ones(samples, 1, 1, device=probs.device)
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
    alpha = torch.sigmoid(theta).detach().cpu()
    order = torch.argsort(-alpha, stable=True)
    return {"concept": name, "layer": layer, "local": bool(local), "samples": samples,
            "steps": steps, "batch_size": batch_size, "penalty": penalty, "seed": seed,
            "left_start": curve[0], "left_end": curve[-1], "curve": curve[:: max(1, steps // 50)],
            "ranking": [{"unit": int(u), "alpha": round(float(alpha[u]), 5)} for u in order]}


def learn_all(generator, segmenter, dissection: Dissection, concepts, layer=None,
              log=print, **kw) -> list[dict]:
    """Learn rankings for several concepts and add them to the dissection (saved beside it
    when it lives in a folder); returns them."""
    dissection = Dissection.of(dissection)
    layer = dissection.layer(layer)
    if dissection.path is None:
        log("note: this dissection lives in memory: the learned rankings are kept in it, not "
            "on disk (Dissection.save(folder) writes them)")
    results = []
    for concept in concepts:
        r = learn(generator, segmenter, layer, concept, **kw)
        dissection.add_learned(r)
        top = ", ".join(str(u["unit"]) for u in r["ranking"][:10])
        log(f"{r['concept']}{' (local)' if r['local'] else ''}: share left while learning "
            f"{r['left_start']:.3f} → {r['left_end']:.3f}; top units {top}")
        results.append(r)
    return results
