"""One-pass, mergeable statistics for dissection: per-unit tail histograms joint with concepts.

Why: the threshold of a unit is its top-q quantile over all samples and positions, and its IoU
with a concept needs counts *at that threshold* — which is unknown until every sample has been
seen. The reference code therefore runs the generator twice. Here each unit gets a histogram of
its upsampled activation over the upper tail, with one count per (bin, concept). At the end the
level is read off the histogram (interpolated inside one bin) and so are the intersection counts
at that level, so the generator and segmenter run once per sample.

Bins are placed from a warm-up batch, per unit: a floor at the warm-up's rank 1 − tail (default
tail = 5q), 3/4 of the bins spaced evenly from the floor up to 4× the warm-up's distance from the
floor to its top-q level, the rest above, log-spaced (12 per octave, up to 2²¹× that range),
plus an overflow bin. Only pixels at or above the floor are binned (5 % of them at q = 1 %: the
cost of counting); the 5× margin keeps the level above the floor although the warm-up batch is
small (a level that falls below it is clamped and reported as inexact). Evenly spaced bins make
binning arithmetic, (v − floor) · gain, with no search; near the level each bin holds a tiny
share of the pixels (about q / 120 for an exponential tail), which bounds the error: the rank
error of a level is at most its bin's share of all pixels, and the intersection count is off by
at most a fraction of one bin. Both bounds are computed and reported per unit. Memory: units ×
(bins + 1) × concepts counts, whatever the number of samples. All counts are integers, so
merging (resume, several processes) is exact.

Where the level comes from (`level_from`): "upsampled" reads it off that histogram (each mask then
covers exactly q of the upsampled pixels); "raw" (the published method: Network Dissection, GAN
Dissection) reads it off a second histogram, on the same bins, of the unit's raw activations at
the feature map's resolution (U × (bins + 1) counts; binning them costs little, there are S²/hw
times fewer), and the counts of the upsampled map above that level are then read off the joint
histogram, interpolated inside the bin the level falls in. The bound on the intersection is then
the whole of that bin (its share of the pixels is tiny near the level, as above).
"""
from __future__ import annotations

import torch

from ganpaint.core.upsample import interp_matrix, taps

PER_OCTAVE = 12  # log-spaced bins above the evenly spaced ones
REACH = 4  # the evenly spaced bins reach this many times the warm-up's floor-to-level distance
BINNING = "even+log/2"  # recorded with a run: partial runs binned otherwise are not resumed
ROW_CHUNK = 1 << 20  # upsampled values computed per pass over the live rows (stays in cache)
LEVEL_FROM = ("raw", "upsampled")  # where a unit's top-quantile level is taken from


class TailStats:
    """The counts of one dissected layer: per-unit tail histograms joint with concepts, the
    top samples per unit, and the levels and IoUs read off them (see the module's docstring)."""

    def __init__(self, units: int, concepts: int, quantile: float = 0.01, bins: int = 1024,
                 topk: int = 8, tail: float | None = None, level_from: str = "upsampled"):
        self.units, self.concepts, self.quantile, self.bins, self.topk = (
            int(units), int(concepts), float(quantile), int(bins), int(topk))
        if level_from not in LEVEL_FROM:
            raise ValueError(f"level_from must be one of {', '.join(LEVEL_FROM)}, got {level_from!r}")
        self.level_from = level_from
        if not 0 < self.quantile < 0.5:
            raise ValueError(f"quantile must be in (0, 0.5) (the top share of each unit's "
                             f"activations, e.g. 0.01), got {quantile}")
        # share of the pixels (the top of each unit's range) that the histogram covers
        self.tail = min(0.5, 5 * self.quantile) if tail is None else float(tail)
        if self.bins < 8:
            raise ValueError(f"bins must be at least 8 (evenly spaced and log-spaced ones), got {self.bins}")
        if not 0 < self.tail <= 1 or self.tail < self.quantile:
            raise ValueError(f"tail must be in [quantile, 1] = [{self.quantile}, 1], got {self.tail}")
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
        # level_from="raw": per-unit histogram of the raw activations (same bins) and their count
        self.raw_joint = torch.zeros(self.units * (self.bins + 1) if self.raw else 0, dtype=torch.int64)
        self.raw_pixels = 0
        self.maps = 1  # label maps per pixel (see update): each pixel is in `maps` concepts

    @property
    def raw(self) -> bool:
        """Whether levels are read from the raw activations (the published method)."""
        return self.level_from == "raw"

    # -- bins ---------------------------------------------------------------------------
    def _main(self) -> int:
        return (3 * self.bins) // 4

    def init_edges(self, values: torch.Tensor, raw: torch.Tensor | None = None) -> None:
        """Place the bins from warm-up values (U, M) of upsampled activations (and, for
        level_from="raw", raw ones (U, M'): the floor is then the lower of both floors and the
        evenly spaced bins reach past the raw level, which is the one read)."""
        values = values.detach().to("cpu", torch.float32)
        if self.raw and raw is None:
            raise ValueError("level_from='raw' places its bins from raw warm-up values too")

        def quantiles(v):
            m = v.shape[1]
            k = min(m, int(self.tail * (m - 1)) + 2)
            top = v.topk(k, dim=1).values.double()  # descending: top[:, j] has j values above it

            def above(share):  # the value with `share` of the warm-up values above it, interpolated
                pos = share * (m - 1)
                j = min(int(pos), k - 1)
                frac = pos - j
                return top[:, j] * (1 - frac) + top[:, min(j + 1, k - 1)] * frac
            return above, top

        above, top = quantiles(values)
        floor = above(self.tail).to(torch.float32)
        low = values.min(1).values
        if self.raw:
            raw = raw.detach().to("cpu", torch.float32)
            above, top = quantiles(raw)  # the level read is the raw one: span and top from it
            floor = torch.minimum(floor, above(self.tail).to(torch.float32))
            low = torch.minimum(low, raw.min(1).values)
        # A floor at the warm-up's minimum means a mass of ties there (ReLU zeros, mostly):
        # start just above it. Thresholds are strict (act > level), so pixels at the minimum
        # never count, and binning them would cost most of the time for such units.
        at_min = floor <= low
        self.tie, self.tie_value = at_min, floor.to(torch.float64)
        floor = torch.where(at_min, torch.nextafter(floor, torch.tensor(float("inf"))), floor)
        # evenly spaced bins up to REACH × the distance to the warm-up's level (or, for a unit
        # mostly at its floor, to its maximum); 1e-3 for a unit that never moved
        f = floor.to(torch.float64)
        span = above(self.quantile) - f
        span = torch.where(span > 0, REACH * span, top[:, 0] - f)
        span = torch.where(span > 0, span, torch.full_like(span, 1e-3))
        main = self._main()
        gain = (main / span).to(torch.float32).to(torch.float64)
        steps = torch.arange(self.bins + 1, dtype=torch.float64)
        t = torch.where(steps <= main, steps, main * 2 ** ((steps - main) / PER_OCTAVE))
        self.edges = f[:, None] + t[None] / gain[:, None]

    def _gain(self):
        """Per unit (floor, gain) as float32: bin = (v − floor) · gain below the log region."""
        main = self._main()
        return (self.edges[:, 0].to(torch.float32),
                (main / (self.edges[:, main] - self.edges[:, 0])).to(torch.float32))

    def _on(self, device):
        """Bins and accumulators on `device` (counting happens where the activations are)."""
        if getattr(self, "_device", None) != device:
            self._flush()
            self._floor, self._gain32 = (t.to(device) for t in self._gain())
            # int32 counts (faster to add to); flushed into the int64 totals before they could
            # overflow: no bin of a unit holds more than the pixels counted since the last flush
            self._acc = torch.zeros(self.joint.shape, dtype=torch.int32, device=device)
            self._acc_cp = torch.zeros_like(self.concept_pixels, device=device)
            self._acc_raw = torch.zeros(self.raw_joint.shape, dtype=torch.int32, device=device)
            self._pending = 0
            self._device = device

    def _flush(self):
        """Move the device-side counts into the CPU totals."""
        if getattr(self, "_pending", 0):
            self.joint += self._acc.cpu()
            self.concept_pixels += self._acc_cp.cpu()
            self.raw_joint += self._acc_raw.cpu()
            self._acc.zero_()
            self._acc_cp.zero_()
            self._acc_raw.zero_()
            self._pending = 0

    # -- accumulation ---------------------------------------------------------------------
    def update(self, act: torch.Tensor, seg: torch.Tensor) -> None:
        """Count one batch: act (N, U, h, w) activations at any resolution, seg (N, S, S) labels,
        or (N, K, S, S): K label maps over disjoint concept ranges (objects, materials, colours,
        ...), every pixel counted once per map (Network Dissection's several label categories).

        Activations are upsampled bilinearly to S×S, rows first. Work is skipped wherever a
        bound shows no value can reach a unit's floor: whole (sample, unit) maps whose maximum
        is below it; then output rows, since a row mixes two input rows and so its maximum is
        at most the same mix of their maxima; then rows interpolated along y whose exact
        maximum is below it (columns only mix these values). The live rows are upsampled along
        x, binned and counted a cache-sized slice at a time, all units at once."""
        if self.edges is None:
            raise RuntimeError("init_edges() must be called before update()")
        a = act.detach().float().contiguous()
        n, units, h, w = a.shape
        dev = a.device
        self._on(dev)
        if seg.dim() == 3:
            seg = seg[:, None]
        if self.pixels == 0:
            self.maps = int(seg.shape[1])
        elif seg.shape[1] != self.maps:
            raise ValueError(f"{seg.shape[1]} label maps in this batch, {self.maps} before")
        if seg.shape[1] > 1:  # each map its own concepts: a pixel counted twice for one would be wrong
            lo, hi = seg.amin((0, 2, 3)), seg.amax((0, 2, 3))
            order = lo.argsort()
            if bool((hi[order][:-1] >= lo[order][1:]).any()):
                raise ValueError(f"label maps must use disjoint concept ranges; this batch's maps "
                                 f"span {list(zip(lo.tolist(), hi.tolist()))}")
        s1, s2 = seg.shape[-2:]
        if self._pending + seg.numel() >= 2 ** 31:
            self._flush()
        self._pending += max(seg.numel(), n * h * w)  # a bin's count grows by at most this
        seg = seg.to(dev, torch.uint8 if self.concepts <= 256 else torch.int32)
        i0, i1, w1 = (t.to(dev) for t in taps(h, s1))
        low = self._floor - 1e-6 * self._floor.abs()  # the floor, with slack for rounding
        peak = a.amax(3).transpose(0, 1)  # (U, N, h): unit-major, so counts land near each other
        unit, sample = (peak.amax(2) >= low[:, None]).nonzero(as_tuple=True)
        # row bounds as one matrix product; its rounding (≤ 1e-6 of the largest peak) only
        # widens the candidates, which are checked exactly below
        peak = peak[unit, sample]  # (P, h)
        slack = 1e-5 * peak.abs().amax() if len(peak) else 0.0
        bound = peak @ interp_matrix(h, s1, dev).T  # (P, S1)
        p, r = (bound >= (low[unit] - slack)[:, None]).nonzero(as_tuple=True)
        unit, sample = unit[p], sample[p]
        src = a.view(-1, w)  # input rows, (N·U·h, w)
        at = (sample * units + unit) * h
        rows = torch.lerp(src.index_select(0, at + i0[r]), src.index_select(0, at + i1[r]), w1[r, None])
        live = (rows.amax(1) >= low[unit]).nonzero().squeeze(1)  # columns only mix these values
        unit, rows, segrow = unit[live], rows[live], (sample * s1 + r)[live]
        # in bin units, (v − floor) · gain: interpolation weights sum to 1, so shifting and
        # scaling the w input columns is the same as the S2 output columns, 8–32× cheaper
        rows = rows.sub_(self._floor[unit, None]).mul_(self._gain32[unit, None])
        main = self._main()
        # rows that reach the log-spaced bins go last, so only their slices need the log
        far = rows.amax(1) >= main
        near = int((~far).sum())
        if near < len(far):
            order = torch.argsort(far.to(torch.uint8), stable=True)
            unit, rows, segrow = unit[order], rows[order], segrow[order]
        maps = [seg[:, k].reshape(-1, s2) for k in range(seg.shape[1])]
        per_unit = (self.bins + 1) * self.concepts
        small = torch.int32 if self.units * per_unit < 2 ** 31 else torch.int64
        offset = unit.to(small) * per_unit  # each live row's first count
        ones = torch.ones(1, dtype=self._acc.dtype, device=dev)
        wx = interp_matrix(w, s2, dev).T if w != s2 else None
        step = max(1, ROW_CHUNK // s2)  # live rows per pass, small enough to stay in cache
        slices = [slice(c, min(c + step, near)) for c in range(0, near, step)]
        slices += [slice(c, c + step) for c in range(near, len(unit), step)]
        for sl in slices:
            x = rows[sl] @ wx if wx is not None else rows[sl]  # (k, S2)
            pix = (x >= 0).view(-1).nonzero().squeeze(1)
            t = x.reshape(-1).take(pix)
            # bin: evenly spaced up to `main`, then PER_OCTAVE per octave, then overflow
            if sl.start >= near:
                far = (t >= main).nonzero().squeeze(1)
                t[far] = main + torch.log2(t[far] / main) * PER_OCTAVE
            row = pix >> (s2.bit_length() - 1) if s2 & (s2 - 1) == 0 else torch.div(pix, s2, rounding_mode="floor")
            key = offset[sl].take(row)
            key.add_(t.clamp_(max=self.bins).to(small), alpha=self.concepts)
            for k, seg2 in enumerate(maps):  # the last map adds in place: no copy for one map
                concept = seg2.index_select(0, segrow[sl]).view(-1).take(pix)
                at = key.add_(concept) if k == len(maps) - 1 else key + concept
                self._acc.index_add_(0, at, ones.expand(len(at)))
        self._acc_cp += torch.bincount(seg.reshape(-1).long(), minlength=self.concepts)
        self.pixels += int(seg[:, 0].numel())
        if self.raw:
            self._count_raw(a)
        # bilinear upsampling never goes below the raw minimum
        self.raw_min = torch.minimum(self.raw_min, a.amin((0, 2, 3)).to("cpu", torch.float64))

    def _count_raw(self, a):
        """Bin the raw activations (N, U, h, w) per unit, on the same bins (level_from="raw")."""
        n, units, h, w = a.shape
        main = self._main()
        v = a.transpose(0, 1).reshape(units, -1)
        unit, pos = (v >= (self._floor - 1e-6 * self._floor.abs())[:, None]).nonzero(as_tuple=True)
        t = (v[unit, pos] - self._floor[unit]) * self._gain32[unit]
        keep = t >= 0  # the same test as the upsampled values'
        unit, t = unit[keep], t[keep]
        far = t >= main
        t[far] = main + torch.log2(t[far] / main) * PER_OCTAVE
        key = unit * (self.bins + 1) + t.clamp_(max=self.bins).long()
        self._acc_raw.index_add_(0, key, torch.ones(1, dtype=self._acc_raw.dtype,
                                                    device=a.device).expand(len(key)))
        self.raw_pixels += n * h * w

    def update_top(self, peaks: torch.Tensor, indices: torch.Tensor) -> None:
        """Keep, per unit, the top-k samples by peak activation; ties go to the lower index."""
        idx = indices.cpu().long()[None].expand(self.units, -1)
        self._merge_top(peaks.detach().float().cpu().T, idx)

    def merge(self, other: "TailStats") -> None:
        """Add another shard's statistics (same bins) into these."""
        if not torch.equal(self.edges, other.edges):
            raise ValueError("cannot merge statistics with different bins")
        if self.pixels and other.pixels and self.maps != other.maps:
            raise ValueError(f"cannot merge statistics of {other.maps} label maps into {self.maps}")
        self._flush()
        other._flush()
        self.maps = other.maps if not self.pixels else self.maps
        self.joint += other.joint
        self.concept_pixels += other.concept_pixels
        self.pixels += other.pixels
        self.raw_joint += other.raw_joint
        self.raw_pixels += other.raw_pixels
        self.raw_min = torch.minimum(self.raw_min, other.raw_min)
        self._merge_top(other.top_values, other.top_index)

    def all_reduce(self, dist, device) -> None:
        """Sum every process's counts and merge their top-k lists (torch.distributed, after
        each counted its own batches on the same bins); every process ends with the totals.
        `device` is where the backend moves tensors (CUDA for NCCL, CPU for gloo)."""
        self._flush()
        # label maps per pixel: the same on every process that counted (one that saw no batch
        # still has the default 1)
        maps = torch.tensor([self.maps, -self.maps if self.pixels else -10 ** 9], device=device)
        dist.all_reduce(maps, op=dist.ReduceOp.MAX)
        most, fewest = int(maps[0]), -int(maps[1])
        if fewest != most and fewest != 10 ** 9:
            raise ValueError(f"processes counted different numbers of label maps ({fewest}, {most})")
        self.maps = most
        counts = [self.joint, self.concept_pixels, self.raw_joint,
                  torch.tensor([self.pixels, self.raw_pixels], dtype=torch.int64)]
        for t in counts:
            if not t.numel():
                continue
            on = t.to(device)
            dist.all_reduce(on)
            t.copy_(on.cpu())
        self.pixels, self.raw_pixels = (int(v) for v in counts[3].tolist())
        low = self.raw_min.to(device)
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        self.raw_min = low.cpu()
        world = dist.get_world_size()
        vals = [torch.zeros_like(self.top_values, device=device) for _ in range(world)]
        idx = [torch.zeros_like(self.top_index, device=device) for _ in range(world)]
        dist.all_gather(vals, self.top_values.contiguous().to(device))
        dist.all_gather(idx, self.top_index.contiguous().to(device))
        self.top_values = torch.full((self.units, 0), float("-inf"))
        self.top_index = torch.zeros((self.units, 0), dtype=torch.int64)
        for v, i in zip(vals, idx):
            self._merge_top(v.cpu(), i.cpu())

    def _merge_top(self, vals, idx):
        vals = torch.cat([self.top_values, vals], 1)
        idx = torch.cat([self.top_index, idx], 1)
        order = idx.argsort(dim=1, stable=True)
        vals, idx = vals.gather(1, order), idx.gather(1, order)
        order = vals.argsort(dim=1, descending=True, stable=True)[:, : self.topk]
        self.top_values, self.top_index = vals.gather(1, order), idx.gather(1, order)

    # -- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The counts and bins as tensors and plain values (a weights-only file): a
        partial dissection saves these and resumes from them."""
        self._flush()
        # no count exceeds the pixels seen: int32 halves the file while that fits
        joint = self.joint.to(torch.int32) if self.pixels < 2 ** 31 else self.joint
        return {"units": self.units, "concepts": self.concepts, "quantile": self.quantile,
                "bins": self.bins, "topk": self.topk, "tail": self.tail, "edges": self.edges, "joint": joint,
                "concept_pixels": self.concept_pixels, "pixels": self.pixels,
                "top_values": self.top_values, "top_index": self.top_index,
                "tie": self.tie, "tie_value": self.tie_value, "raw_min": self.raw_min,
                "level_from": self.level_from, "raw_joint": self.raw_joint,
                "raw_pixels": self.raw_pixels, "maps": self.maps}

    @classmethod
    def from_state_dict(cls, s: dict) -> "TailStats":
        """Statistics restored from `state_dict()` (files from older versions too)."""
        st = cls(s["units"], s["concepts"], s["quantile"], s["bins"], s["topk"], s.get("tail"),
                 s.get("level_from", "upsampled"))
        for k in ("edges", "joint", "concept_pixels", "pixels", "top_values", "top_index"):
            setattr(st, k, s[k])
        st.joint = st.joint.to(torch.int64)
        for k in ("tie", "tie_value", "raw_min", "raw_joint", "raw_pixels", "maps"):  # absent from files
            # written before they existed
            if k in s:
                setattr(st, k, s[k])
        return st

    # -- results --------------------------------------------------------------------------
    def _hist(self):
        self._flush()
        return self.joint.view(self.units, self.bins + 1, self.concepts)

    def _cum(self):
        """Float64 counts, computed once per state of the counts (every update or merge adds
        pixels): joint (U, B+1, C), pixels ≥ each edge by concept (U, B+1, C), and both summed
        over concepts (U, B+1)."""
        joint = self._hist()
        if getattr(self, "_cum_at", None) != self.pixels:
            j = joint.to(torch.float64)  # integers below 2**53: sums are exact
            cs = j.cumsum(1)
            above = cs[:, -1:] - cs + j  # pixels ≥ edge b: all minus those below it
            # every pixel is counted once per label map, so the totals over concepts are the
            # pixel counts times `maps` (exactly: all its maps count it in the same bin)
            self._cum_cache = j, above, j.sum(2) / self.maps, above.sum(2) / self.maps
            self._cum_at = self.pixels
        return self._cum_cache

    def _raw_hist(self):
        """Raw-activation counts per bin (U, B+1) and those at or above each edge (U, B+1)."""
        self._flush()
        h = self.raw_joint.view(self.units, self.bins + 1).to(torch.float64)
        cs = h.cumsum(1)
        return h, cs[:, -1:] - cs + h

    def _top(self):
        """Per unit, an upper bound of its values: the overflow bin's upper end."""
        top = self.edges[:, -1]
        if self.top_values.shape[1]:  # peaks of the raw maps (upsampling never exceeds them)
            top = torch.maximum(top, self.top_values[:, 0].to(torch.float64))
        return torch.cat([self.edges[:, 1:], top[:, None]], 1)

    def level(self, quantile: float | None = None):
        """Per-unit activation level with a `quantile` share of values above it: of the raw
        activations (level_from="raw") or of the upsampled ones ("upsampled").

        Returns (level (U,), bin (U,), fraction of that bin above the level (U,), exact (U,) bool:
        False where the level fell below the histogram's floor and was clamped to it).
        """
        q = self.quantile if quantile is None else quantile
        if self.raw:
            hist, above = self._raw_hist()
            target = q * self.raw_pixels
        else:
            _, _, hist, above = self._cum()  # (U, B+1): counts in / ≥ edges[b]
            target = q * self.pixels
        # the bin b where above[b+1] < target <= above[b]
        ok = above[:, 0] >= target
        b = (above >= target).sum(1).clamp(min=1) - 1
        above_next = torch.cat([above[:, 1:], torch.zeros(self.units, 1, dtype=torch.float64)], 1)
        need = (target - above_next.gather(1, b[:, None])[:, 0]).clamp(min=0)
        inbin = hist.gather(1, b[:, None])[:, 0]
        frac = torch.where(inbin > 0, need / inbin.clamp(min=1), torch.zeros_like(need)).clamp(0, 1)
        lo = self.edges.gather(1, b[:, None])[:, 0]
        hi = self._top().gather(1, b[:, None])[:, 0]
        level = hi - frac * (hi - lo)
        at_tie = ~ok & self.tie & (self.raw_min >= self.tie_value)  # the level is the tie itself
        level = torch.where(ok, level, torch.where(at_tie, self.tie_value, self.edges[:, 0]))
        frac = torch.where(ok, frac, torch.ones_like(frac))
        return level, b, frac, ok | at_tie

    def iou(self, quantile: float | None = None):
        """IoU (U, C) of each unit's thresholded map with each concept, plus error bounds.

        Returns dict with iou (U, C), level (U,), exact (U,), rank_error (U,) (bound on the
        level's rank error, as a share of all values the level is read from), iou_error (U, C)
        (bound on |IoU error|) and coverage (U,) (share of the upsampled pixels above the level).
        """
        q = self.quantile if quantile is None else quantile
        if self.raw:
            return self._iou_raw(q)
        level, b, frac, ok = self.level(q)
        joint, above, hist, _ = self._cum()  # (U, B+1, C), (U, B+1)
        above_next = torch.cat([above[:, 1:], torch.zeros_like(above[:, :1])], 1)
        sure = above_next.gather(1, b[:, None, None].expand(-1, 1, self.concepts))[:, 0]
        inbin = joint.gather(1, b[:, None, None].expand(-1, 1, self.concepts))[:, 0]
        inter = sure + frac[:, None] * inbin
        total = above[:, 0].sum(1) / self.maps  # pixels at or above the floor
        act = torch.where(total >= q * self.pixels, torch.full_like(level, q * self.pixels), total)[:, None]
        cp = self.concept_pixels.to(torch.float64)[None]
        union = act + cp - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
        # bounds: the intersection lies in [sure, sure + min(inbin, need)]
        need = frac * hist.gather(1, b[:, None])[:, 0]
        inter_hi = sure + torch.minimum(inbin, need[:, None])
        iou_hi = inter_hi / (act + cp - inter_hi).clamp(min=1)
        iou_lo = sure / (act + cp - sure).clamp(min=1)
        err = torch.maximum(iou_hi - iou, iou - iou_lo)
        rank_err = hist.gather(1, b[:, None])[:, 0] / max(self.pixels, 1)
        return {"iou": iou, "level": level, "exact": ok, "rank_error": rank_err,
                "iou_error": err, "coverage": act[:, 0] / max(self.pixels, 1)}

    def _iou_raw(self, q):
        """iou() for a level read from the raw activations: the upsampled pixels above it are
        counted from the joint histogram; inside the bin the level falls in, the share above it
        is taken as linear in the value, and the bounds allow any share (0 to all of the bin)."""
        level, b, _, ok = self.level(q)
        raw_hist, _ = self._raw_hist()
        joint, above, hist, total = self._cum()  # (U, B+1, C), (U, B+1, C), (U, B+1), (U, B+1)
        c = self.concepts
        # the upsampled bin holding the level; below the floor (a tie at the minimum) all
        # binned pixels are above it
        below = level < self.edges[:, 0]
        u = ((self.edges <= level[:, None]).sum(1) - 1).clamp(min=0)
        lo, hi = self.edges.gather(1, u[:, None])[:, 0], self._top().gather(1, u[:, None])[:, 0]
        share = ((hi - level) / (hi - lo).clamp(min=1e-300)).clamp(0, 1)
        share = torch.where(below, torch.ones_like(share), share)
        pick = lambda t: t.gather(1, u[:, None, None].expand(-1, 1, c))[:, 0]  # noqa: E731
        inbin_c, inbin_t = pick(joint), hist.gather(1, u[:, None])[:, 0]
        sure_c = pick(above) - inbin_c  # pixels in the bins above the level's
        sure_t = total.gather(1, u[:, None])[:, 0] - inbin_t
        exact_bin = below[:, None]  # then the whole bin is above: no uncertainty
        sure_c = torch.where(exact_bin, sure_c + inbin_c, sure_c)
        sure_t = torch.where(below, sure_t + inbin_t, sure_t)
        inbin_c = torch.where(exact_bin, torch.zeros_like(inbin_c), inbin_c)
        inbin_t = torch.where(below, torch.zeros_like(inbin_t), inbin_t)
        share = torch.where(below, torch.zeros_like(share), share)
        inter = sure_c + share[:, None] * inbin_c
        act = sure_t + share * inbin_t
        cp = self.concept_pixels.to(torch.float64)[None]
        union = act[:, None] + cp - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
        # bounds: intersection I in [sure_c, sure_c + inbin_c]; the pixels above the level
        # outside the concept, O = act − I, in [sure_t − sure_c, that + (inbin_t − inbin_c)];
        # IoU = I / (C + O)
        out_lo = sure_t[:, None] - sure_c
        out_hi = out_lo + (inbin_t[:, None] - inbin_c)
        iou_hi = (sure_c + inbin_c) / (cp + out_lo).clamp(min=1)
        iou_lo = sure_c / (cp + out_hi).clamp(min=1)
        err = torch.maximum(iou_hi - iou, iou - iou_lo).clamp(min=0)
        rank_err = raw_hist.gather(1, b[:, None])[:, 0] / max(self.raw_pixels, 1)
        return {"iou": iou, "level": level, "exact": ok, "rank_error": rank_err,
                "iou_error": err, "coverage": act / max(self.pixels, 1)}

    def best_threshold_iou(self):
        """Per (unit, concept), the highest IoU over all thresholds at the bin edges (the
        histogram's range: ranks above 1 − tail) and that threshold — the per-unit,
        per-concept threshold of the 2018 GAN Dissection, instead of one top quantile.
        Returns (iou (U, C), threshold (U, C))."""
        _, above, _, act = self._cum()  # pixels ≥ edge b, by concept (U, B+1, C) and in all
        act = act[:, :, None]
        cp = self.concept_pixels.to(torch.float64)[None, None]
        iou = above / (act + cp - above).clamp(min=1)
        best, b = iou.max(1)
        return best, self.edges.gather(1, b)
