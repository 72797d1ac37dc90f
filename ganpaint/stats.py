"""One-pass, mergeable statistics for dissection: per-unit tail histograms joint with concepts.

Why: the threshold of a unit is its top-q quantile over all samples and positions, and its IoU
with a concept needs counts *at that threshold* — which is unknown until every sample has been
seen. The reference code therefore runs the generator twice. Here each unit gets a histogram of
its upsampled activation over the upper tail, with one count per (bin, concept). At the end the
level is read off the histogram (interpolated inside one bin) and so are the intersection counts
at that level, so the generator and segmenter run once per sample.

Bins are placed in *rank* space from a warm-up batch: 3/4 of them at equally spaced quantiles
between ranks 1 − tail (default tail = 5q) and 1 − q/20 of the warm-up values, the rest above
(evenly, then geometrically growing up to 1000× the warm-up range), plus an overflow bin. Only
pixels at or above the floor are binned (5 % of them at q = 1 %: the cost of counting); the 5×
margin keeps the level above the floor although the warm-up batch is small (a level that falls
below it is clamped and reported as inexact). Each bin thus holds a tiny share of the pixels
(about 5q / (3/4 · bins)), which bounds the error: the rank error of a level is at most its
bin's share of all pixels, and the intersection count is off by at most a fraction of one
bin. Both bounds are computed and reported per unit. Memory: units × (bins + 1) × concepts
counts, whatever the number of samples. All counts are integers, so merging (resume, several
processes) is exact.
"""
from __future__ import annotations

import torch

from .upsample import interp_matrix


class TailStats:
    def __init__(self, units: int, concepts: int, quantile: float = 0.01, bins: int = 1024,
                 topk: int = 8, tail: float | None = None):
        self.units, self.concepts, self.quantile, self.bins, self.topk = (
            int(units), int(concepts), float(quantile), int(bins), int(topk))
        # share of the pixels (the top of each unit's range) that the histogram covers
        self.tail = min(0.5, 5 * self.quantile) if tail is None else float(tail)
        if not 0 < self.tail <= 1 or self.tail < self.quantile:
            raise ValueError(f"tail must be in [quantile, 1], got {self.tail}")
        self.edges = None  # (U, bins + 1) float64, strictly increasing per unit
        self.joint = torch.zeros(self.units * (self.bins + 1) * self.concepts, dtype=torch.int64)
        self.concept_pixels = torch.zeros(self.concepts, dtype=torch.int64)
        self.pixels = 0
        self.top_values = torch.full((self.units, 0), float("-inf"))
        self.top_index = torch.zeros((self.units, 0), dtype=torch.int64)
        # units whose floor sits just above a tie at the warm-up minimum (see init_edges), that
        # minimum, and the lowest raw activation seen: if nothing fell below the minimum, a
        # level under the floor is exactly that minimum
        self.tie = torch.zeros(self.units, dtype=torch.bool)
        self.tie_value = torch.zeros(self.units, dtype=torch.float64)
        self.raw_min = torch.full((self.units,), float("inf"), dtype=torch.float64)

    # -- bins ---------------------------------------------------------------------------
    def floor_rank(self) -> float:
        return 1.0 - self.tail

    def init_edges(self, values: torch.Tensor) -> None:
        """Place the bins from warm-up values (U, M) of upsampled activations."""
        values = values.detach().to("cpu", torch.float64)
        m = values.shape[1]
        main = (3 * self.bins) // 4
        near = 1.0 - min(self.tail, 10 * self.quantile)  # dense bins around the level
        ranks = torch.linspace(near, 1.0 - self.quantile / 20, main + 1, dtype=torch.float64)
        if self.floor_rank() < near:  # a wider tail: half the bins below, half near the level
            half = main // 2
            ranks = torch.cat([torch.linspace(self.floor_rank(), near, half + 1, dtype=torch.float64)[:-1],
                               torch.linspace(near, 1.0 - self.quantile / 20, main - half + 1,
                                              dtype=torch.float64)])
        pos = ranks * (m - 1)
        lo, hi = pos.floor().long(), pos.ceil().long()
        frac = pos - lo
        # only the ranks above the floor are read: sort just the top values (v[:, j] is the
        # (first + j)-th smallest), not all of them
        first = int(lo.min())
        v = values.topk(m - first, dim=1).values.flip(1)
        lo, hi = lo - first, hi - first
        q = v[:, lo] * (1 - frac) + v[:, hi] * frac  # (U, main + 1)
        # above the warm-up's quantiles: half the remaining bins evenly up to the warm-up
        # range past its maximum, then geometrically growing ones up to 1000× that range, so a
        # later sample far beyond the warm-up still lands in a bin of bounded relative width
        rng = (v[:, -1] - q[:, 0]).clamp(min=1e-6)[:, None]
        n_up = self.bins - main
        lin = torch.linspace(0, 1, n_up // 2 + 1, dtype=torch.float64)[1:]
        geo = torch.logspace(0, 3, n_up - n_up // 2 + 1, dtype=torch.float64)[1:]
        gap = (v[:, -1:] - q[:, -1:]) + rng
        upper = torch.cat([q[:, -1:] + gap * lin[None], q[:, -1:] + gap * geo[None]], 1)
        edges = torch.cat([q, upper], 1)
        span = (edges[:, -1] - edges[:, 0]).abs() + edges[:, 0].abs() + 1e-6
        edges = edges + torch.arange(self.bins + 1, dtype=torch.float64)[None] * span[:, None] * 1e-9
        e32 = torch.cummax(edges, 1).values.to(torch.float32)
        # A floor at the warm-up's minimum means a mass of ties there (ReLU zeros, mostly):
        # start just above it. Thresholds are strict (act > level), so pixels at the minimum
        # never count, and binning them would cost most of the time for such units.
        at_min = e32[:, 0] <= values.min(1).values.to(torch.float32)
        self.tie, self.tie_value = at_min, e32[:, 0].to(torch.float64)
        e32[:, 0] = torch.where(at_min, torch.nextafter(e32[:, 0], torch.tensor(float("inf"))), e32[:, 0])
        self.edges = torch.cummax(e32, 1).values.to(torch.float64)

    def _on(self, device):
        """Bins and accumulators on `device` (counting happens where the activations are)."""
        if getattr(self, "_device", None) != device:
            self._flush()
            self._edges32 = self.edges.to(device, torch.float32).contiguous()
            self._acc = torch.zeros_like(self.joint, device=device)
            self._acc_cp = torch.zeros_like(self.concept_pixels, device=device)
            self._device = device

    def _flush(self):
        """Move the device-side counts into the CPU totals."""
        if getattr(self, "_acc", None) is not None:
            self.joint += self._acc.cpu()
            self.concept_pixels += self._acc_cp.cpu()
            self._acc.zero_()
            self._acc_cp.zero_()

    # -- accumulation ---------------------------------------------------------------------
    def update(self, act: torch.Tensor, seg: torch.Tensor) -> None:
        """Count one chunk: act (N, U, h, w) activations at any resolution, seg (N, S, S) labels.

        Activations are upsampled bilinearly to S×S, rows first: an output row is a convex
        combination of its row-upsampled inputs, so a row whose inputs all lie below a unit's
        floor is skipped without being computed. The rest is binned unit by unit; edges are
        float32 numbers, so float32 comparisons place every value exactly."""
        if self.edges is None:
            raise RuntimeError("init_edges() must be called before update()")
        a = act.detach().float().transpose(0, 1)  # (U, N, h, w)
        self._on(a.device)
        s1, s2 = seg.shape[-2:]
        small = torch.uint8 if self.concepts <= 256 else torch.int32  # gathered per live row
        seg = seg.to(a.device, small)
        rows = torch.matmul(interp_matrix(a.shape[2], s1, a.device), a)  # (U, N, S, w)
        unit, sample, r = (rows.amax(-1) >= self._edges32[:, :1, None]).nonzero(as_tuple=True)
        rows = rows[unit, sample, r]  # the live rows, unit-major: (K, w)
        if a.shape[3] != s2:
            rows = rows @ interp_matrix(a.shape[3], s2, a.device).T  # (K, S)
        labels = seg[sample, r]  # (K, S)
        per_unit = (self.bins + 1) * self.concepts
        start = 0
        for u, k in enumerate(torch.bincount(unit, minlength=self.units).tolist()):
            if k == 0:
                continue
            vals, labs = rows[start:start + k].reshape(-1), labels[start:start + k].reshape(-1)
            start += k
            e = self._edges32[u]
            pix = (vals >= e[0]).nonzero().squeeze(1)
            b = torch.searchsorted(e, vals[pix], right=True) - 1  # 0 … bins (overflow)
            self._acc[u * per_unit:(u + 1) * per_unit] += torch.bincount(
                b * self.concepts + labs[pix].long(), minlength=per_unit)
        self._acc_cp += torch.bincount(seg.reshape(-1).long(), minlength=self.concepts)
        self.pixels += int(seg.numel())
        # bilinear upsampling never goes below the raw minimum
        self.raw_min = torch.minimum(self.raw_min, a.amin((1, 2, 3)).to("cpu", torch.float64))

    def update_top(self, peaks: torch.Tensor, indices: torch.Tensor) -> None:
        """Keep, per unit, the top-k samples by peak activation; ties go to the lower index."""
        idx = indices.cpu().long()[None].expand(self.units, -1)
        self._merge_top(peaks.detach().float().cpu().T, idx)

    def merge(self, other: "TailStats") -> None:
        """Add another shard's statistics (same bins) into these."""
        if not torch.equal(self.edges, other.edges):
            raise ValueError("cannot merge statistics with different bins")
        self._flush()
        other._flush()
        self.joint += other.joint
        self.concept_pixels += other.concept_pixels
        self.pixels += other.pixels
        self.raw_min = torch.minimum(self.raw_min, other.raw_min)
        self._merge_top(other.top_values, other.top_index)

    def _merge_top(self, vals, idx):
        vals = torch.cat([self.top_values, vals], 1)
        idx = torch.cat([self.top_index, idx], 1)
        order = idx.argsort(dim=1, stable=True)
        vals, idx = vals.gather(1, order), idx.gather(1, order)
        order = vals.argsort(dim=1, descending=True, stable=True)[:, : self.topk]
        self.top_values, self.top_index = vals.gather(1, order), idx.gather(1, order)

    # -- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        self._flush()
        return {"units": self.units, "concepts": self.concepts, "quantile": self.quantile,
                "bins": self.bins, "topk": self.topk, "tail": self.tail, "edges": self.edges, "joint": self.joint,
                "concept_pixels": self.concept_pixels, "pixels": self.pixels,
                "top_values": self.top_values, "top_index": self.top_index,
                "tie": self.tie, "tie_value": self.tie_value, "raw_min": self.raw_min}

    @classmethod
    def from_state_dict(cls, s: dict) -> "TailStats":
        st = cls(s["units"], s["concepts"], s["quantile"], s["bins"], s["topk"], s.get("tail"))
        for k in ("edges", "joint", "concept_pixels", "pixels", "top_values", "top_index"):
            setattr(st, k, s[k])
        for k in ("tie", "tie_value", "raw_min"):  # absent from files written before they existed
            if k in s:
                setattr(st, k, s[k])
        return st

    # -- results --------------------------------------------------------------------------
    def _hist(self):
        self._flush()
        return self.joint.view(self.units, self.bins + 1, self.concepts)

    def level(self, quantile: float | None = None):
        """Per-unit activation level with a `quantile` share of pixels above it.

        Returns (level (U,), bin (U,), fraction of that bin above the level (U,), exact (U,) bool:
        False where the level fell below the histogram's floor and was clamped to it).
        """
        q = self.quantile if quantile is None else quantile
        hist = self._hist().sum(2).to(torch.float64)  # (U, B+1)
        above = hist.flip(1).cumsum(1).flip(1)  # count ≥ edges[b]
        target = q * self.pixels
        # the bin b where above[b+1] < target <= above[b]
        ok = above[:, 0] >= target
        b = (above >= target).sum(1).clamp(min=1) - 1
        above_next = torch.cat([above[:, 1:], torch.zeros(self.units, 1, dtype=torch.float64)], 1)
        need = (target - above_next.gather(1, b[:, None])[:, 0]).clamp(min=0)
        inbin = hist.gather(1, b[:, None])[:, 0]
        frac = torch.where(inbin > 0, need / inbin.clamp(min=1), torch.zeros_like(need)).clamp(0, 1)
        lo = self.edges.gather(1, b[:, None])[:, 0]
        top = torch.maximum(self.edges[:, -1], self.top_values[:, 0].to(torch.float64)
                            if self.top_values.shape[1] else self.edges[:, -1])
        hi_edges = torch.cat([self.edges[:, 1:], top[:, None]], 1)
        hi = hi_edges.gather(1, b[:, None])[:, 0]
        level = hi - frac * (hi - lo)
        at_tie = ~ok & self.tie & (self.raw_min >= self.tie_value)  # the level is the tie itself
        level = torch.where(ok, level, torch.where(at_tie, self.tie_value, self.edges[:, 0]))
        frac = torch.where(ok, frac, torch.ones_like(frac))
        return level, b, frac, ok | at_tie

    def iou(self, quantile: float | None = None):
        """IoU (U, C) of each unit's thresholded map with each concept, plus error bounds.

        Returns dict with iou (U, C), level (U,), exact (U,), rank_error (U,) (bound on the
        level's rank error, as a share of all pixels) and iou_error (U, C) (bound on |IoU error|).
        """
        q = self.quantile if quantile is None else quantile
        level, b, frac, ok = self.level(q)
        joint = self._hist().to(torch.float64)  # (U, B+1, C)
        above = joint.flip(1).cumsum(1).flip(1)
        above_next = torch.cat([above[:, 1:], torch.zeros_like(above[:, :1])], 1)
        sure = above_next.gather(1, b[:, None, None].expand(-1, 1, self.concepts))[:, 0]
        inbin = joint.gather(1, b[:, None, None].expand(-1, 1, self.concepts))[:, 0]
        inter = sure + frac[:, None] * inbin
        total = above[:, 0].sum(1)  # pixels at or above the floor
        act = torch.where(total >= q * self.pixels, torch.full_like(level, q * self.pixels), total)[:, None]
        cp = self.concept_pixels.to(torch.float64)[None]
        union = act + cp - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
        # bounds: the intersection lies in [sure, sure + min(inbin, need)]
        need = frac * joint.sum(2).gather(1, b[:, None])[:, 0]
        inter_hi = sure + torch.minimum(inbin, need[:, None])
        iou_hi = inter_hi / (act + cp - inter_hi).clamp(min=1)
        iou_lo = sure / (act + cp - sure).clamp(min=1)
        err = torch.maximum(iou_hi - iou, iou - iou_lo)
        rank_err = joint.sum(2).gather(1, b[:, None])[:, 0] / max(self.pixels, 1)
        return {"iou": iou, "level": level, "exact": ok, "rank_error": rank_err,
                "iou_error": err}

    def best_threshold_iou(self):
        """Per (unit, concept), the highest IoU over all thresholds at the bin edges (the
        histogram's range: ranks above 1 − tail) and that threshold — the per-unit,
        per-concept threshold of the 2018 GAN Dissection, instead of one top quantile.
        Returns (iou (U, C), threshold (U, C))."""
        joint = self._hist().to(torch.float64)
        above = joint.flip(1).cumsum(1).flip(1)  # (U, B+1, C): pixels ≥ edge b, by concept
        act = above.sum(2, keepdim=True)
        cp = self.concept_pixels.to(torch.float64)[None, None]
        iou = above / (act + cp - above).clamp(min=1)
        best, b = iou.max(1)
        return best, self.edges.gather(1, b)
