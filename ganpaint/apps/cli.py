"""Command line: `ganpaint <subcommand>` (also `python -m ganpaint`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ganpaint.core.dissect import output_dir
from ganpaint.core.dissection import RANKINGS
from ganpaint.core.intervene import FEATHER

COMMANDS = {}


def count(low):
    """argparse type: a whole number ≥ `low` (sample counts, sizes, seeds: 0 or −3 would fail
    deep inside, or silently do the wrong thing)."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {v}")
        return v
    return parse


def at_least(low):
    """argparse type: a number ≥ `low`."""
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not v >= low:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return v
    return parse


def share(high, closed=False, zero=False):
    """argparse type: a share in (0, high) — (0, high] if `closed`, [0, ...) with `zero`."""
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not ((0 <= v if zero else 0 < v) and (v <= high if closed else v < high)):
            raise argparse.ArgumentTypeError(
                f"must be in {'[' if zero else '('}0, {high}{']' if closed else ')'}, got {text}")
        return v
    return parse


class Parser(argparse.ArgumentParser):
    """Usage errors as one line (what is wrong, and where help is), exit code 2."""

    def error(self, message):
        """Exit 2 with the usage and the message, as argparse does, without its traceback noise."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def command(name, help):
    """Register a subcommand: the decorated function adds its arguments and returns a runner."""
    def wrap(fn):
        COMMANDS[name] = (help, fn)
        return fn
    return wrap


def _threads(args):
    import torch
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def _train_args(p, name, steps):
    """Arguments every training command shares (run directory for resuming, export, device)."""
    run_dir = "runs/gan" if name == "scenegan" else f"runs/{name}"
    p.add_argument("--out", default=run_dir, help="run directory (state for resuming)")
    p.add_argument("--export", default=f"models/{name}.pt", help="where the final weights go")
    p.add_argument("--steps", type=count(1), default=steps)
    p.add_argument("--batch-size", type=count(1), default=32)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=count(1), default=None, help="CPU threads (default: torch's)")


@command("train-segmenter", "train the scene segmenter on rendered scenes (resumable)")
def _train_segmenter(p):
    _train_args(p, "segmenter", 3000)
    p.add_argument("--resolution", type=count(8), default=64)
    p.add_argument("--width", type=count(1), default=24)

    def run(a):
        from ganpaint.world.train_segmenter import train
        _threads(a)
        train(a.out, a.export, a.steps, a.batch_size, a.resolution, a.width, device=a.device and _device(a))
    return run


@command("eval-segmenter", "score the segmenter on held-out renders")
def _eval_segmenter(p):
    p.add_argument("--segmenter", default=None, help="weights file (default: the shipped one)")
    p.add_argument("--samples", type=count(1), default=500)
    p.add_argument("--seed", type=count(0), default=0, help="offset into the held-out seeds")
    p.add_argument("--size", type=count(8), default=64, help="render resolution")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    def run(a):
        from ganpaint.world.segmenter import DEFAULT_WEIGHTS, evaluate, load_unet
        seg = load_unet(a.segmenter or DEFAULT_WEIGHTS)
        r = evaluate(seg, a.samples, a.seed, a.size, progress=not a.json)
        if a.json:
            print(json.dumps(r))
            return
        print(f"pixel accuracy {r['pixel_accuracy']:.4f}   mean IoU {r['mean_iou']:.4f}")
        for c, v in r["iou"].items():
            print(f"  {c:<10} IoU {v:.4f}")
    return run


@command("train-gan", "train the scene GAN on rendered scenes (resumable)")
def _train_gan(p):
    _train_args(p, "scenegan", 20000)
    p.add_argument("--lr-g", type=at_least(0.0), default=1e-3)
    p.add_argument("--lr-d", type=at_least(0.0), default=4e-4)
    p.add_argument("--no-semantic-d", dest="semantic", action="store_false",
                   help="train against the pixel discriminator only (no frozen-segmenter one)")
    p.add_argument("--init", default=None,
                   help="what a fresh run starts from: a generator file (e.g. models/scenegan.pt) "
                        "or a compact training state (state_compact.pt, written at every export)")
    p.add_argument("--locality", type=at_least(0.0), default=0.0,
                   help="weight of the locality loss: a painting-layer cell transplanted from another "
                        "scene should draw its own content (0: off)")

    def run(a):
        from ganpaint.world.scenegan import train
        _threads(a)
        train(a.out, a.export, a.steps, a.batch_size, a.lr_g, a.lr_d, device=a.device and _device(a),
              semantic=a.semantic, init=a.init, locality=a.locality)
    return run


def _model_args(p):
    p.add_argument("--model", default="scenes",
                   help="scenes | progan:<file.pth> | stylegan2:<file.pt> | package.module:function "
                        "(see `ganpaint models`)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="model argument (repeatable): for stylegan2:<file> truncation=0.7 and "
                        "noise=const|zero|latent; for package.module:function its keyword arguments")
    p.add_argument("--segmenter", default="scenes",
                   help="scenes | <file>.pt | package.module:function")
    p.add_argument("--segmenter-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def _device(a):
    from ganpaint.apps.registry import device
    return device(a.device)


@command("eval-gan", "measure a scene generator against the quality bars (class balance, FD, dissection, causal effects)")
def _eval_gan(p):
    _model_args(p)
    p.add_argument("--dissection", default=None,
                   help="dissection directory of the model (default for scenes: models/dissection)")
    p.add_argument("--samples", type=count(1), default=1000)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--judge", default=None, help="scene classifier whose features give a second, "
                   "independent Fréchet distance (default: the shipped one)")
    p.add_argument("--no-judge", action="store_true", help="skip the classifier-feature distance")

    def run(a):
        from ganpaint.core import checkpoint
        from ganpaint.apps import registry
        from ganpaint.apps.evaluate import check_bars, eval_gan
        dev = _device(a)
        g = registry.load_generator(a.model, dev, a.model_arg)
        seg = registry.load_segmenter(a.segmenter, dev, a.segmenter_arg)
        ddir = a.dissection or (checkpoint.MODELS / "dissection"
                                if a.model == "scenes" else None)
        d = registry.load_dissection(ddir) if ddir and Path(ddir).exists() else None
        judge = None
        if not a.no_judge:
            from ganpaint.world import classifier
            net = classifier.load_cnn(a.judge or classifier.DEFAULT_WEIGHTS, dev)
            judge = lambda x: classifier.features(net, x)  # noqa: E731
        r = eval_gan(g, seg, d, a.samples, progress=not a.json, judge=judge)
        if a.json:
            print(json.dumps(r))
            return
        for name, ok, figures in check_bars(r):
            print(f"{'INFO' if ok is None else 'PASS' if ok else 'FAIL'}  {name:<26} {figures}")
    return run


@command("dissect", "dissect layers of a generator (or a classifier): IoU of every unit with every concept")
def _dissect(p):
    _model_args(p)
    p.add_argument("--classifier", default=None,
                   help="dissect a classifier on the labelled probe set instead: scenes-cnn | package.module:function")
    p.add_argument("--layers", nargs="+", default=None, help="layer names (default: the model's painting layer)")
    p.add_argument("--samples", type=count(1), default=2000)
    p.add_argument("--out", required=True, help="dissection directory (a partial run there resumes)")
    p.add_argument("--seed", type=count(0), default=0)
    p.add_argument("--batch-size", type=count(1), default=16)
    p.add_argument("--quantile", type=share(0.5), default=None,
                   help="top quantile q of each unit's activation (default 0.01 for generators, "
                        "0.005 for classifiers as in Network Dissection)")
    p.add_argument("--bins", type=count(8), default=1024, help="histogram bins per unit (accuracy vs memory)")
    p.add_argument("--tail", type=share(1, closed=True), default=None,
                   help="share of each unit's top activations histogrammed (default 5·q, at most 0.5); "
                        "1.0 also finds each unit's best threshold per concept over its whole range "
                        "(2018 GAN Dissection style; counting is slower)")
    p.add_argument("--level-from", choices=["raw", "upsampled"], default="raw",
                   help="where each unit's top-quantile level comes from: raw (default, the "
                        "published method: the unit's raw activations at the feature map's "
                        "resolution, over all samples and positions; the bilinearly upsampled map "
                        "is thresholded at it, so masks cover about, not exactly, q of the pixels) "
                        "or upsampled (the quantile of the upsampled map: masks cover exactly q)")
    p.add_argument("--seg-size", type=count(1), default=None, help="label map resolution (default: image size)")
    p.add_argument("--no-report", action="store_true", help="skip report.html and its images")
    p.add_argument("--probe-labels", choices=["all", "objects"], default="all",
                   help="with --classifier: the probe set's concepts in all Network Dissection "
                        "categories (objects, parts, materials, colours; default) or objects only")

    def run(a):
        from ganpaint.core.dissect import distributed
        with distributed():
            _run_dissect(a)
    return run


def _run_dissect(a):
    """The dissect command's work (apart from its argument definitions, `_dissect`): one
    place that loads the model, its probe or segmenter, and runs the dissection."""
    from ganpaint.apps import registry
    from ganpaint.core.dissect import dissect
    from ganpaint.core.sources import GeneratorSource
    from ganpaint.world.probe import ProbeSource
    dev = _device(a)
    if a.classifier:
        net = registry.load_classifier(a.classifier, dev, a.model_arg)
        src = ProbeSource(net, a.classifier, seed=a.seed, device=dev, labels=a.probe_labels)
        layers = a.layers or ["conv5"]
    else:
        g = registry.load_generator(a.model, dev, a.model_arg)
        seg = registry.load_segmenter(a.segmenter, dev, a.segmenter_arg)
        layers = a.layers or [g.paint_layer]
        if layers == [None]:
            raise ValueError("this model declares no preferred layer: pass --layers")
        src = GeneratorSource(g, seg, a.seed, a.seg_size, a.segmenter)
    from ganpaint.apps.report import make_report
    dissect(src, layers, a.out, a.samples, a.quantile, a.batch_size, a.bins,
            report=None if a.no_report else make_report,
            tail=a.tail, level_from=a.level_from)


@command("rank", "rank the units of a dissected layer by IoU with a concept (or by causal effect)")
def _rank(p):
    p.add_argument("--dissection", required=True, help="dissection directory")
    p.add_argument("--layer", default=None, help="layer (default: the first dissected one)")
    p.add_argument("--concept", default=None)
    p.add_argument("--top", type=count(1), default=20)
    p.add_argument("--by", default="iou", choices=RANKINGS,
                   help="IoU, or a causal ranking learned by `rank-causal` (local: with --local)")
    p.add_argument("--list", action="store_true", help="list concepts and their detector counts")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    def run(a):
        from ganpaint.apps import registry
        d = registry.load_dissection(a.dissection)
        if a.list or a.concept is None:
            rows = d.concept_table(a.layer)
            if a.json:
                print(json.dumps(rows))
                return
            print(d.definition(a.layer))
            print(f"{'concept':<12}{'detectors':>10}{'best IoU':>10}{'best unit':>10}")
            for r in rows:
                print(f"{r['concept']:<12}{r['detectors']:>10}{r['best_iou']:>10.3f}{r['best_unit']:>10}")
            return
        rows = d.rank(a.concept, a.by, a.layer, a.top)
        if a.json:
            print(json.dumps(rows))
            return
        print(d.definition(a.layer))
        print(f"{'rank':>4} {'unit':>5} {'IoU':>7} {'level':>9}" + (f" {'alpha':>7}" if a.by != "iou" else ""))
        for r in rows:
            print(f"{r['rank']:>4} {r['unit']:>5} {r['iou']:>7.4f} {r['level']:>9.4g}"
                  + (f" {r['alpha']:>7.3f}" if "alpha" in r else ""))
    return run


@command("rank-causal", "learn causal unit rankings: the units whose removal takes a concept away "
         "most (or, with --insert, whose insertion draws it)")
def _rank_causal(p):
    _model_flags(p)
    p.add_argument("--concepts", nargs="+", required=True)
    p.add_argument("--samples", type=count(1), default=256, help="latents the coefficients are learned on")
    p.add_argument("--steps", type=count(1), default=300)
    p.add_argument("--batch-size", type=count(1), default=16)
    p.add_argument("--penalty", type=at_least(0.0), default=0.01, help="L1 weight on the coefficients (sparsity)")
    p.add_argument("--local", action="store_true",
                   help="learn the ranking removal strokes use: ablate and count only where the concept is")
    p.add_argument("--insert", action="store_true",
                   help="learn the ranking draw strokes use: insert at one cell, count the concept "
                        "gained around it")
    p.add_argument("--threads", type=count(1), default=None)

    def run(a):
        from ganpaint.core import causal
        if a.local and a.insert:
            raise SystemExit("error: --local and --insert learn different rankings: pick one")
        _threads(a)
        painter, seg = _painter(a)
        causal.learn_all(painter.generator, seg, painter.dissection, a.concepts,
                         painter.layer, samples=a.samples, steps=a.steps,
                         batch_size=a.batch_size, penalty=a.penalty, local=a.local, insert=a.insert)
        from ganpaint.core.dissection import learned_path
        kind = "local" if a.local else "insert" if a.insert else "causal"
        print(f"wrote {learned_path(a.dissection, kind)}")
    return run


def _painter(a):
    from ganpaint.apps import registry
    from ganpaint.core.intervene import Painter
    d = registry.load_dissection(a.dissection)
    dev = _device(a)
    if d.get("kind") == "classifier":
        raise ValueError(f"{a.dissection} is a classifier's dissection: this command needs a "
                         f"generator's (`ganpaint dissect --model ...`)")
    source = Path(a.dissection) / "dissection.json"
    model = a.model or registry.spec_from_file(d.get("model"), "model", source, "--model", a.trust)
    seg = a.segmenter or registry.spec_from_file(d.get("segmenter", "scenes"), "segmenter", source,
                                                 "--segmenter", a.trust)
    # the dissection's model arguments (truncation, noise, ...) are reused unless overridden
    g = registry.generator_from_dissection(d, source, model, a.model_arg, dev, a.trust)
    return Painter(g, d, a.layer), registry.load_segmenter(seg, dev, a.segmenter_arg)


def _within(flag, values, painter, low):
    """Unit counts must fit the painting layer (more than it has would be silently capped)."""
    n = painter.dissection.units(painter.layer)
    bad = [v for v in values if not low <= v <= n]
    if bad:
        raise ValueError(f"{flag} {bad[0]}: layer {painter.layer} has {n} units, so it must be "
                         f"in {low}..{n}")


def _model_flags(p):
    p.add_argument("--dissection", required=True, help="dissection directory")
    p.add_argument("--model", default=None,
                   help="generator: scenes | progan:<file> | stylegan2:<file> | "
                        "package.module:function (default: the dissection's)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="model argument (default: those the dissection recorded, e.g. "
                        "truncation and noise of a stylegan2 model; these override them)")
    p.add_argument("--segmenter", default=None, help="segmenter (default: the dissection's)")
    p.add_argument("--segmenter-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--layer", default=None, help="layer (default: the first dissected one)")
    p.add_argument("--device", default=None)
    p.add_argument("--trust", action="store_true",
                   help="let the dissection's model/segmenter import paths run (they are code: "
                        "without this flag only registry ids and weights files are used)")


def _experiment_args(p):
    _model_flags(p)
    p.add_argument("--concept", required=True)
    p.add_argument("--samples", type=count(1), default=500)
    p.add_argument("--seed", type=count(0), default=1, help="latent seed (the dissection uses 0)")
    p.add_argument("--batch-size", type=count(1), default=25)
    p.add_argument("--out", default=None, help="where JSON and PNG go (default: <dissection>/experiments)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


@command("ablate", "zero a concept's top-k units and measure how much of the concept goes away")
def _ablate(p):
    _experiment_args(p)
    p.add_argument("--k", type=count(0), nargs="+", default=[0, 1, 2, 4, 8, 12, 16, 20, 30])
    p.add_argument("--local", action="store_true",
                   help="ablate only at feature cells where the concept is, and measure there")
    p.add_argument("--ranking", default=None, choices=RANKINGS,
                   help="which top-k units: by IoU or a learned causal ranking (default: the "
                        "learned one, local first with --local)")

    def run(a):
        from pathlib import Path
        from ganpaint.apps import experiments
        from ganpaint.apps import plots
        from ganpaint.world.labels import lookup
        painter, seg = _painter(a)
        _within("--k", a.k, painter, 0)
        out = output_dir(a.out or Path(a.dissection) / "experiments")
        stem = f"ablate_{seg.concepts[lookup(a.concept, seg.concepts)]}" + (
            "_local" if a.local else "") + (f"_{a.ranking}" if a.ranking else "")
        r = experiments.ablation(painter, seg, a.concept, a.k, a.samples, a.batch_size, a.seed,
                                 a.local, progress=not a.json, strip=out / f"{stem}_strip.png",
                                 by=a.ranking)
        experiments.save(r, out, stem)
        plots.ablation_curve(r, out / f"{stem}.png")
        if a.json:
            print(json.dumps(r))
            return
        print(f"{r['concept']} pixel fraction before: {r['fraction_before']:.4f}")
        print(f"{'k':>4} {'after':>8} {'removed':>8} {'random (mean ± sd of draws)':>28}")
        for k, f, rm, rr, sd in zip(r["k"], r["fraction_after"], r["removed"], r["random_removed"],
                                    r["random_removed_std"]):
            print(f"{k:>4} {f:>8.4f} {rm:>8.3f} {rr:>19.3f} ± {sd:.3f}")
        print(f"wrote {out / (stem + '.json')}, {out / (stem + '.png')}")
    return run


@command("insert", "insert a concept's top units at random cells: what gets added, by context")
def _insert(p):
    _experiment_args(p)
    p.add_argument("--units", type=count(1), default=20)
    p.add_argument("--cells-per-sample", type=count(1), default=4)
    p.add_argument("--quantile", default="0.005", choices=["0.01", "0.005"],
                   help="insert each unit at this top-quantile level")

    def run(a):
        from pathlib import Path
        from ganpaint.apps import experiments
        from ganpaint.apps import plots
        painter, seg = _painter(a)
        _within("--units", [a.units], painter, 1)
        out = output_dir(a.out or Path(a.dissection) / "experiments")
        r = experiments.insertion(painter, seg, a.concept, a.units, a.samples,
                                  a.cells_per_sample, a.batch_size, a.seed, a.quantile,
                                  progress=not a.json)
        stem = f"insert_{r['concept']}"
        experiments.save(r, out, stem)
        plots.bar_chart({k: v["mean_added"] for k, v in r["context"].items()}, out / f"{stem}.png",
                        f"{r['concept']} pixels added by inserting {r['units']} units, by context",
                        f"mean {r['concept']} pixels added")
        if a.json:
            print(json.dumps(r))
            return
        print(f"{'context':<12}{'cells':>7}{'mean added':>12}")
        for k, v in r["context"].items():
            print(f"{k:<12}{v['n']:>7}{v['mean_added']:>12.2f}")
        print(f"wrote {out / (stem + '.json')}, {out / (stem + '.png')}")
    return run


@command("train-classifier", "train the scene-category CNN on rendered scenes (resumable)")
def _train_classifier(p):
    _train_args(p, "classifier", 1500)

    def run(a):
        from ganpaint.world.classifier import train
        _threads(a)
        train(a.out, a.export, a.steps, a.batch_size, device=a.device and _device(a))
    return run


def _classifier_args(p, samples):
    p.add_argument("--classifier", default="scenes-cnn", help="scenes-cnn | package.module:function")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--samples", type=count(1), default=samples)
    p.add_argument("--batch-size", type=count(1), default=50)
    p.add_argument("--out", required=True, help="directory for the JSON and PNG")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default=None)


def _unit_labels(a) -> dict | None:
    """{unit: "label IoU x"} from `--dissection` (what each unit was found to detect), or None."""
    if not a.dissection:
        return None
    from ganpaint.apps import registry
    stats = registry.load_dissection(a.dissection).unit_stats(a.layer)
    return {s["unit"]: f"{s['label']} IoU {s['iou']:.3f}" for s in stats}


def _classifier(a):
    from ganpaint.apps import registry
    return registry.load_classifier(a.classifier, _device(a), a.model_arg)


def _save(r, a, stem, groups, title, ylabel, **plot):
    """The experiment's JSON and its bar chart (groups: {group: {bar: value}}) in a.out."""
    from pathlib import Path
    from ganpaint.apps import plots
    from ganpaint.apps.experiments import save
    path = save(r, output_dir(a.out), stem)
    plots.grouped_bars(groups, Path(a.out) / f"{stem}.png", title, ylabel, **plot)
    if a.json:
        print(json.dumps(r))
    else:
        print(f"wrote {path} and {Path(a.out) / (stem + '.png')}")


@command("robustness", "dissect a classifier on perturbed probe images: do its detectors survive?")
def _robustness(p):
    _classifier_args(p, 500)
    p.add_argument("--layers", nargs="+", default=["conv3", "conv4", "conv5"])
    p.add_argument("--perturbations", nargs="+", default=None,
                   help="noise:K rotate:DEG patches:N (default: the standard nine)")
    p.add_argument("--quantile", type=share(0.5), default=0.005)

    def run(a):
        from ganpaint.apps import classifier_experiments as ce
        r = ce.robustness(_classifier(a), a.classifier, a.layers, a.perturbations or ce.PERTURBATIONS,
                          a.samples, a.quantile, a.batch_size, progress=not a.json)
        groups = {"none": {f"{l} unique": r["unperturbed"][l]["unique"] for l in a.layers}}
        for spec, row in r["perturbed"].items():
            groups[spec] = {f"{l} unique": row[l]["unique"] for l in a.layers}
        _save(r, a, "robustness", groups, "unique detected concepts under perturbations of the probe images",
              "unique concepts")
    return run


@command("axis-alignment", "are interpretable directions aligned with units? random rotations and PCA")
def _axis(p):
    _classifier_args(p, 500)
    p.add_argument("--layer", default="conv5")
    p.add_argument("--draws", type=count(1), default=5, help="random rotations")
    p.add_argument("--concept", default="tree", help="concept for the PCA test")
    p.add_argument("--quantile", type=share(0.5), default=0.005)

    def run(a):
        from ganpaint.apps import classifier_experiments as ce
        r = ce.axis_alignment(_classifier(a), a.classifier, a.layer, a.draws, a.samples, a.quantile,
                              a.batch_size, a.concept, progress=not a.json)
        groups = {"unit basis": {"unique detectors": r["unit_basis"]["unique"],
                                 "detectors": r["unit_basis"]["detectors"]},
                  f"rotated (×{a.draws})": {"unique detectors": r["rotated_unique_mean"],
                                            "detectors": r["rotated_detectors_mean"]}}
        errors = {f"rotated (×{a.draws})": {"unique detectors": r["rotated_unique_std"],
                                            "detectors": r["rotated_detectors_std"]}}
        _save(r, a, "axis_alignment", groups,
              f"{a.layer}: detectors in the unit basis vs random rotations (mean ± sd)", "count",
              errors=errors)
    return run


@command("unit-importance", "which units a class needs, and what removing them does")
def _importance(p):
    _classifier_args(p, 600)
    p.add_argument("--layer", default="conv5")
    p.add_argument("--dissection", default=None, help="dissection of the layer (for mean IoUs)")

    def run(a):
        from pathlib import Path

        from ganpaint.apps import classifier_experiments as ce
        from ganpaint.core.dissection import load_results
        iou = load_results(a.dissection, a.layer)["iou"] if a.dissection else None
        r = ce.unit_importance(_classifier(a), a.classifier, a.layer, a.samples, None, a.batch_size, iou,
                               progress=not a.json)
        groups = {c: {"all units": row["balanced_accuracy"],
                      "top 4 removed": row["remove_top4"]["balanced"],
                      "top 20 removed": row["remove_top20"]["balanced"],
                      "all but top 20 removed": row["remove_all_but_top20"]["balanced"],
                      "best half removed": row["remove_best_half"]["balanced"],
                      "worst half removed": row["remove_worst_half"]["balanced"]}
                  for c, row in r["classes"].items()}
        ce.importance_figure(r, Path(output_dir(a.out)) / "unit_importance_views.png")
        _save(r, a, "unit_importance", groups,
              f"{a.layer}: balanced single-class accuracy after removing units", "balanced accuracy",
              hline=0.5)
    return run


@command("peak-detectors", "single units whose peak activation tells a concept's presence in an image")
def _peaks(p):
    _classifier_args(p, 1000)
    p.add_argument("--layer", default="conv5")
    p.add_argument("--held-out", type=count(1), default=1000,
                   help="probe images after the fitting ones, for the reported accuracy")
    p.add_argument("--min-share", type=share(0.5), default=0.005,
                   help="a concept is in an image when it covers at least this share of it")
    p.add_argument("--dissection", default=None,
                   help="the classifier's dissection, to label each unit by what it detects")

    def run(a):
        from pathlib import Path

        from ganpaint.apps import peak_detectors as pk
        from ganpaint.apps.experiments import save
        from ganpaint.world.probe import ProbeSource
        labels = _unit_labels(a)
        src = ProbeSource(_classifier(a), a.classifier, device=_device(a))
        r = pk.peak_detectors(src, a.layer, a.samples, a.held_out, a.batch_size, a.min_share,
                              labels, progress=not a.json)
        path = save(r, output_dir(a.out), "peak_detectors")
        pk.histogram_figure(r, Path(a.out) / "peak_detectors.png")
        if a.json:
            print(json.dumps(r))
            return
        print(f"{a.layer}: best single-unit peak detector per concept (balanced accuracy on "
              f"{a.held_out} held-out probe images; chance 0.5)")
        for c, row in sorted(r["concepts"].items(), key=lambda kv: -kv[1]["balanced_accuracy"]):
            label = f"  [{row['unit_label']}]" if "unit_label" in row else ""
            print(f"  {c:<10} unit {row['unit']:>4}  peak > {row['threshold']:<9.4g} "
                  f"{row['balanced_accuracy']:.3f}  (in {row['presence'] * 100:.0f} % of images){label}")
        for c, why in r["skipped"].items():
            print(f"  {c:<10} skipped: {why}")
        print(f"wrote {path} and {Path(a.out) / 'peak_detectors.png'}")
    return run


@command("adversarial", "PGD attacks on the classifier: which units move, and deactivating units as a defence")
def _adversarial(p):
    _classifier_args(p, 300)
    p.add_argument("--layer", default="conv5")
    p.add_argument("--eps", type=share(1.0), nargs="+", default=None,
                   help="L-inf bounds as shares of the pixel range (default 0.002 0.005 0.01)")
    p.add_argument("--steps", type=count(1), default=10, help="PGD steps")
    p.add_argument("--importance-samples", type=count(1), default=600,
                   help="probe images for ranking units by importance to each class")
    p.add_argument("--dissection", default=None,
                   help="the classifier's dissection, to label each unit by what it detects")

    def run(a):
        from pathlib import Path

        import torch

        from ganpaint.apps import adversarial as adv
        from ganpaint.apps import classifier_experiments as ce
        from ganpaint.apps.experiments import save
        from ganpaint.world.classifier import CATEGORIES, PROBE_SEED, category
        from ganpaint.world.probe import ATTACK_BLOCK, BLOCK, ProbeSource
        model = _classifier(a)
        labels = _unit_labels(a)
        imp = ce.unit_importance(model, a.classifier, a.layer, a.importance_samples, None,
                                 a.batch_size, progress=not a.json)
        important = {CATEGORIES.index(c): row["important_units"] for c, row in imp["classes"].items()}
        src = ProbeSource(model, a.classifier, device=_device(a),
                          start=PROBE_SEED + ATTACK_BLOCK * BLOCK)  # images of its own
        x, lab = src.probe(range(a.samples))
        y = torch.tensor([category(l.numpy()) for l in lab])
        r = adv.attack(model, a.layer, x.to(_device(a)), y.to(_device(a)), important,
                       a.eps or adv.EPSILONS, a.steps, labels=labels,
                       class_names=dict(enumerate(CATEGORIES)), progress=not a.json)
        r["model"] = a.classifier
        path = save(r, output_dir(a.out), "adversarial")
        adv.attack_figure(r, Path(a.out) / "adversarial.png")
        if a.json:
            print(json.dumps(r))
            return
        print(f"{a.layer}: clean accuracy {r['clean_accuracy']:.3f} on {r['images']} held-out "
              f"probe images; most-moved units vs each class's top "
              f"{r['important_per_class']} important (chance {r['chance_overlap']:.3f})")
        for e, row in r["eps"].items():
            units = ", ".join(f"{u['unit']} ({u['mean_change']:+.2f})" for u in row["top_changed_units"][:5])
            print(f"  eps {e}: accuracy {row['attacked_accuracy']:.3f}, success "
                  f"{row['success']:.3f}, overlap true/reached class "
                  f"{row['overlap_source']:.2f}/{row['overlap_target']:.2f}; units {units}")
        d = r["defence"]
        for k, row in d["k"].items():
            print(f"  defence, {k:>2} units off: important clean {row['important']['clean']:.3f} "
                  f"attacked {row['important']['attacked']:.3f} | random clean "
                  f"{row['random']['clean']:.3f} attacked {row['random']['attacked']:.3f}")
        print(f"wrote {path} and {Path(a.out) / 'adversarial.png'}")
    return run


@command("categories", "a classifier dissection's unique detectors per concept category and layer")
def _categories(p):
    p.add_argument("--dissection", required=True, help="a dissection made with category labels "
                   "(`dissect --classifier ...`, probe labels 'all')")
    p.add_argument("--out", default=None, help="where categories.json and .png go (default: the dissection)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    def run(a):
        from pathlib import Path

        from ganpaint.apps import plots
        from ganpaint.apps.experiments import save
        from ganpaint.apps import registry
        d = registry.load_dissection(a.dissection)
        r = d.category_counts()
        out = output_dir(a.out or a.dissection)
        path = save(r, out, "categories")
        plots.stacked_bars({layer: row["unique"] for layer, row in r["layers"].items()},
                           out / "categories.png",
                           f"unique detectors per category (IoU ≥ {r['detector_iou']})",
                           "unique detected concepts")
        if a.json:
            print(json.dumps(r))
            return
        for layer, row in r["layers"].items():
            parts = ", ".join(f"{c} {n} ({', '.join(row['concepts'][c])})" if row["concepts"][c]
                              else f"{c} 0" for c, n in row["unique"].items())
            print(f"{layer}: {parts}")
        print(f"wrote {path} and {Path(out) / 'categories.png'}")
    return run


@command("stylized", "shape vs texture: dissect a classifier on its probe images and on stylized copies")
def _stylized(p):
    _classifier_args(p, 500)
    p.add_argument("--layer", default="conv5")
    p.add_argument("--style", type=count(0), default=0, help="which random restyling of the scenes")
    p.add_argument("--quantile", type=share(0.5), default=0.005)

    def run(a):
        from pathlib import Path

        from ganpaint.apps import stylized as st
        from ganpaint.apps.experiments import save
        from ganpaint.world.probe import ProbeSource
        model = _classifier(a)
        src = ProbeSource(model, a.classifier, device=_device(a))
        r, d0 = st.shape_vs_texture(src, ProbeSource(model, a.classifier, device=_device(a),
                                                     style=a.style),
                                    a.layer, a.samples, a.quantile, a.batch_size, progress=not a.json)
        out = output_dir(a.out)
        path = save(r, out, "stylized")
        st.scatter_figure(r, out / "stylized.png")
        st.thumbnails(r, d0, src, out / "stylized_units.png")
        if a.json:
            print(json.dumps(r))
            return
        print(f"{a.layer}: {r['detectors']} detectors on the probe images, "
              f"{r['detectors_stylized']} on stylized copies (same shapes and labels)")
        for kind in ("shape_sensitive", "texture_sensitive"):
            rows = r[kind]
            print(f"  {kind.replace('_', '-')}: {len(rows)} units"
                  + "".join(f"\n    unit {x['unit']:>4} {x['concept']:<9} IoU {x['iou']:.3f} → "
                            f"{x['iou_stylized']:.3f}" for x in rows[:5]))
        print(f"wrote {path}, {Path(out) / 'stylized.png'} and {Path(out) / 'stylized_units.png'}")
    return run


@command("samples", "save a picture of generated scenes (and their segmentation), optionally next to renders")
def _samples(p):
    _model_args(p)
    p.add_argument("--n", type=count(1), default=8, help="images per row")
    p.add_argument("--seed", type=count(0), default=0)
    p.add_argument("--size", type=count(8), default=128, help="pixels per image in the picture")
    p.add_argument("--renders", action="store_true", help="add a row of renders and their labels")
    p.add_argument("--out", required=True, help="PNG file")

    def run(a):
        import numpy as np
        from PIL import Image
        from ganpaint.apps import registry
        from ganpaint.world.labels import colorize
        from ganpaint.world.scenes import render_batch, to_uint8_images
        out = Path(a.out)
        if out.is_dir():
            raise ValueError(f"--out {out} is a folder: give a PNG file name")
        output_dir(out.parent)
        g = registry.load_generator(a.model, _device(a), a.model_arg)
        seg = registry.load_segmenter(a.segmenter, _device(a), a.segmenter_arg)
        big = lambda imgs, nearest=False: np.concatenate([np.asarray(Image.fromarray(i).resize(
            (a.size, a.size), Image.NEAREST if nearest else Image.LANCZOS)) for i in imgs], 1)
        rows = []
        if a.renders:
            imgs, labels = render_batch(range(a.seed, a.seed + a.n), 64)
            rows += [big(imgs, True), big(colorize(labels), True)]
        x = g(g.latents(range(a.n), a.seed))
        rows += [big(to_uint8_images(x)), big(colorize(seg.segment(x).cpu().numpy()), True)]
        Image.fromarray(np.concatenate(rows, 0)).save(out)
        print(f"wrote {a.out}")
    return run


@command("world-stats", "how big and how common each concept of the scene world is (pixel share, presence, box size in px and painting-layer cells)")
def _world_stats(p):
    p.add_argument("--samples", type=count(1), default=2000)
    p.add_argument("--start", type=count(0), default=0, help="first seed")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    def run(a):
        from ganpaint.world.scenes import world_stats
        r = world_stats(a.samples, start=a.start, progress=not a.json)
        if a.json:
            print(json.dumps(r))
            return
        print(f"{'concept':<10} {'fraction':>8} {'presence':>8}  median box px (w×h)  cells (8×8 layer)")
        for c, v in r.items():
            (w, h), (cw, ch) = v["median_box_px"], v["median_box_cells"]
            print(f"{c:<10} {v['fraction']:8.3f} {v['presence']:8.2f}  {w:5.1f} × {h:<5.1f}        "
                  f"{cw:.2f} × {ch:.2f}")
    return run


@command("models", "list the model ids and segmenters ganpaint can load, and StyleGAN2's layers")
def _models(p):
    p.add_argument("--layers", default=None, metavar="MODEL",
                   help="list the layers of this generator (e.g. stylegan2:<file.pt>) with their "
                        "resolutions, and its default painting layer")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE")

    def run(a):
        from ganpaint.adapters import stylegan2
        from ganpaint.apps.registry import CLASSIFIERS, GENERATORS, SEGMENTERS, STYLEGAN2_ARGS, load_generator
        if a.layers:
            g = load_generator(a.layers, "cpu", a.model_arg)
            if isinstance(g.model, stylegan2.StyleGAN2):
                print(stylegan2.describe_layers(g.model))
                return
            names = g.preferred_layers or [n for n, _ in g.model.named_children()]
            shapes = g.layer_shapes(names)
            for n in names:
                c, h, w = shapes[n]
                mark = "  (default painting layer)" if n == g.paint_layer else ""
                print(f"{n:<12} {h:>4}×{w:<4} {c:>4} ch{mark}")
            return
        for title, table in (("generators (--model)", GENERATORS),
                             ("segmenters (--segmenter)", SEGMENTERS),
                             ("classifiers (--classifier)", CLASSIFIERS)):
            print(f"{title}:")
            for k, v in table.items():
                print(f"  {k:<26} {v}")
        print("\nstylegan2 model arguments (--model-arg KEY=VALUE):")
        for k, v in STYLEGAN2_ARGS.items():
            print(f"  {k:<26} {v}")
        print("\nstylegan2 layers of a 256-px checkpoint, channel multiplier 2 (another "
              "checkpoint's: ganpaint models --layers stylegan2:<file>):")
        for row in stylegan2.layer_table(256, 2):
            mark = "  (default painting layer)" if row["name"] == stylegan2.PAINT_LAYER else ""
            r = row["resolution"]
            print(f"  {row['name']:<12} {r:>4}×{r:<4} {row['channels']:>4} ch  {row['kind']}{mark}")
    return run


# ---------------------------------------------------------------- paint on your own image


def _invert_args(p):
    """How `invert` and `paint` invert an image (the step counts default to invert()'s)."""
    p.add_argument("--encoder", default=None,
                   help="encoder weights file, or none (default: models/encoder.pt when it "
                        "exists; otherwise the best of --starts random latents)")
    p.add_argument("--starts", type=count(1), default=None,
                   help="random starting latents tried without an encoder (default 16)")
    p.add_argument("--z-steps", type=count(0), default=None, help="latent optimisation steps (default 100)")
    p.add_argument("--feature-steps", type=count(0), default=None,
                   help="painting-layer feature optimisation steps (default 100)")
    p.add_argument("--adapt-steps", type=count(0), default=None,
                   help="image-specific adaptation steps of the later layers (default 250)")
    p.add_argument("--adapt-from", default=None,
                   help="the first layer adaptation tunes (default: the one after the painting "
                        "layer); a later one keeps more of the layout to the units")
    p.add_argument("--threads", type=count(1), default=None, help="CPU threads (default: torch's)")


def _invert_options(a) -> dict:
    names = ("starts", "z_steps", "feature_steps", "adapt_steps", "adapt_from")
    return {n: getattr(a, n) for n in names if getattr(a, n) is not None}


def _encoder(a, g, dev):
    """The encoder to start from: --encoder's file, none, or the shipped one when it exists
    (and fits the model: a default that was trained for another model is skipped, with a note)."""
    from ganpaint.apps.encoder import load_encoder, shipped_encoder
    if a.encoder and a.encoder.lower() == "none":
        return None
    if a.encoder:
        if not Path(a.encoder).is_file():
            raise FileNotFoundError(f"--encoder {a.encoder}: no such file (or pass --encoder none)")
        return load_encoder(a.encoder, dev, g)
    return shipped_encoder(g, dev, lambda m: print(m, file=sys.stderr))


def _default_dissection(a):
    from ganpaint.core import checkpoint
    if a.dissection:
        return a.dissection
    return checkpoint.MODELS / "dissection" if a.model == "scenes" else None


def _load_painter(a, g):
    """A Painter for the generator from --dissection (a generator's dissection of this model)."""
    from ganpaint.apps import registry
    from ganpaint.core.intervene import Painter
    ddir = _default_dissection(a)
    if ddir is None:
        raise ValueError(f"--dissection is needed for model {a.model!r} (a dissection of its "
                         f"painting layer: `ganpaint dissect --model {a.model} --out DIR`)")
    d = registry.load_dissection(ddir)
    if d.get("kind") == "classifier":
        raise ValueError(f"{ddir} is a classifier's dissection: painting needs a generator's")
    if d.get("model") not in (None, g.name):
        raise ValueError(f"{ddir} is a dissection of model {d['model']!r}, not {g.name!r}: "
                         f"pass the matching --model or --dissection")
    return Painter(g, d)


def _prepare(a, g):
    from ganpaint.apps.invert import load_image, output_size
    prep = load_image(a.image, output_size(g))
    # with --json, stdout holds only the JSON object (the message is in it)
    print(prep.message, file=sys.stderr if getattr(a, "json", False) else sys.stdout)
    return prep


@command("invert", "invert an image into a generator (encode, optimise, adapt): a state `paint` reuses")
def _invert(p):
    p.add_argument("image", nargs="?", default=None, help="the image (any size: it is centre-cropped "
                   "and resized to the model's size)")
    p.add_argument("--out", default=None, help="folder for inversion.pt, reconstruction.png and inversion.json")
    _model_args(p)
    _invert_args(p)
    p.add_argument("--eval", action="store_true",
                   help="instead: measure inversion on held-out renders against the bars")
    p.add_argument("--samples", type=count(1), default=50, help="with --eval: renders inverted")
    p.add_argument("--dissection", default=None,
                   help="with --eval: dissection for the edit bar (default for scenes: models/dissection)")
    p.add_argument("--concept", default="tree", help="with --eval: the concept removed for the edit bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    def run(a):
        _threads(a)
        if a.eval:
            return _run_invert_eval(a)
        if a.image is None:
            raise ValueError("give an IMAGE to invert (or --eval to measure inversion on renders)")
        if a.out is None:
            raise ValueError("give --out DIR: the folder for the inversion's files")
        from PIL import Image
        from ganpaint.apps import registry
        from ganpaint.apps.invert import _to_uint8, invert
        out = Path(a.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file: give a folder")
        dev = _device(a)
        g = registry.load_generator(a.model, dev, a.model_arg)
        seg = registry.load_segmenter(a.segmenter, dev, a.segmenter_arg)
        prep = _prepare(a, g)
        enc = _encoder(a, g, dev)
        inv = invert(g, prep, encoder=enc, perceptual=seg, progress=not a.json, **_invert_options(a))
        output_dir(out)
        inv.save(out / "inversion.pt")
        Image.fromarray(_to_uint8(inv.reconstruction)).save(out / "reconstruction.png")
        r = {"image": str(a.image), "model": g.name, "psnr": inv.psnr, "message": prep.message,
             "size": int(inv.target.shape[-1]), "box": list(prep.box),
             "encoder": None if enc is None else str(a.encoder or "models/encoder.pt"),
             "stats": inv.stats}
        (out / "inversion.json").write_text(json.dumps(r, indent=1, ensure_ascii=False),
                                            encoding="utf-8")
        if a.json:
            print(json.dumps(r))
            return
        print(f"reconstruction PSNR {inv.psnr:.2f} dB ({inv.stats['seconds']:.1f} s)")
        print(f"wrote {out / 'inversion.pt'}, {out / 'reconstruction.png'}, {out / 'inversion.json'}")
    return run


INVERT_BARS = [("psnr_adapted", "≥", 27.0, "dB"), ("seconds_per_image", "≤", 20.0, "s"),
               ("edit_{concept}_left_median", "≤", 0.5, ""), ("outside_max_diff", "≤", 1 / 255, "")]


def _run_invert_eval(a):
    from ganpaint.apps import registry
    from ganpaint.apps.invert import evaluate
    dev = _device(a)
    g = registry.load_generator(a.model, dev, a.model_arg)
    seg = registry.load_segmenter(a.segmenter, dev, a.segmenter_arg)
    painter = _load_painter(a, g) if _default_dissection(a) else None
    enc = _encoder(a, g, dev)
    r = evaluate(g, seg, painter, enc, a.samples, concept=a.concept, progress=not a.json,
                 **_invert_options(a))
    if a.json:
        print(json.dumps(r))
        return
    print(f"{r['samples']} held-out renders, encoder: {'yes' if enc is not None else 'none'}")
    for key in ("psnr_encoder", "psnr_start", "psnr_optimised"):
        if r.get(key) is not None:
            print(f"INFO  {key:<24} {r[key]:.2f} dB")
    for key, op, bar, unit in INVERT_BARS:
        key = key.format(concept=a.concept)
        v = r.get(key)
        if v is None:
            print(f"INFO  {key:<24} not measured")
            continue
        ok = v >= bar if op == "≥" else v <= bar
        print(f"{'PASS' if ok else 'FAIL'}  {key:<24} {v:.4g}{unit and ' ' + unit}  (bar {op} {bar:.4g})")
    if f"edit_{a.concept}_scenes" in r:
        print(f"      ({r[f'edit_{a.concept}_scenes']} scenes with a {a.concept})")


def _read_mask(path, prep, size):
    """MASK.png (the upload's size; > 127 = painted, or the alpha channel where it has one) →
    (size, size) float mask of the crop the model sees."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image, UnidentifiedImageError
    if not Path(path).is_file():
        raise FileNotFoundError(f"--mask {path}: no such file")
    try:
        im = Image.open(path)
        im.load()
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"--mask {path} is not an image: {e}") from None
    h, w = prep.original.shape[:2]
    if im.size != (w, h):
        raise ValueError(f"--mask {path} is {im.width}×{im.height}, but the image is {w}×{h}: "
                         f"draw the mask at the image's size")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        alpha = np.asarray(im.convert("RGBA"))[..., 3]
        m = alpha > 127 if (alpha < 255).any() else np.asarray(im.convert("L")) > 127
    else:
        m = np.asarray(im.convert("L")) > 127
    left, top, side = prep.box
    inside = m[top:top + side, left:left + side]
    if not inside.any():
        raise ValueError(f"--mask {path} paints nothing" + (
            " inside the centre square the model sees" if m.any() else
            " (painted = pixels brighter than 127)"))
    outside = int(m.sum() - inside.sum())
    if outside:
        print(f"note: {outside} painted mask pixels outside the centre square are ignored")
    t = torch.from_numpy(inside.astype(np.float32))[None, None]
    t = F.adaptive_max_pool2d(t, size) if side >= size else F.interpolate(t, size=(size, size))
    return t[0, 0]


def _cells_mask(cells, grid):
    import torch
    h, w = grid
    m = torch.zeros(h, w)
    for text in cells:
        try:
            x, y = (int(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"--cells {text!r}: expected x,y (two whole numbers)") from None
        if not (0 <= x < w and 0 <= y < h):
            raise ValueError(f"--cells {text}: out of range; the painting layer is {w}×{h} cells, "
                             f"so x is 0..{w - 1} and y is 0..{h - 1}")
        m[y, x] = 1
    return m


@command("paint", "paint on your own image: draw or remove a concept, composited at the image's resolution")
def _paint(p):
    p.add_argument("image", help="the image")
    p.add_argument("--concept", required=True)
    p.add_argument("--action", choices=["remove", "draw"], required=True)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--mask", default=None,
                       help="PNG of the image's size: where to paint (> 127 painted, or opaque "
                            "where the PNG has transparency)")
    where.add_argument("--cells", nargs="+", default=None, metavar="X,Y",
                       help="painting-layer cells to paint, as x,y (0-based, x across)")
    p.add_argument("--out", required=True, help="the edited image (PNG), at the image's resolution")
    p.add_argument("--state", default=None, help="inversion.pt from `ganpaint invert` (default: invert now)")
    p.add_argument("--dissection", default=None,
                   help="dissection of the model (default for scenes: models/dissection)")
    p.add_argument("--units", type=count(1), default=20)
    p.add_argument("--strength", type=at_least(0.0), default=1.0, help="draw: multiple of the units' levels")
    p.add_argument("--feather", type=share(1.0, closed=True, zero=True), default=FEATHER,
                   help="the stroke's soft edge: its strength in the 8 cells around its cells (0: hard)")
    _model_args(p)
    _invert_args(p)

    def run(a):
        import torch
        from PIL import Image
        from ganpaint.apps import registry
        from ganpaint.apps.invert import Inversion, invert
        _threads(a)
        out = Path(a.out)
        if out.is_dir():
            raise ValueError(f"--out {out} is a folder: give a file name (edited.png)")
        dev = _device(a)
        g = registry.load_generator(a.model, dev, a.model_arg)
        painter = _load_painter(a, g)
        _within("--units", [a.units], painter, 1)
        prep = _prepare(a, g)
        size = int(prep.tensor.shape[-1])
        if a.cells:
            grid = g.layer_shapes([painter.layer])[painter.layer][1:]
            mask = _cells_mask(a.cells, grid)
        else:
            mask = _read_mask(a.mask, prep, size)
        if a.state:
            if not Path(a.state).is_file():
                raise FileNotFoundError(f"--state {a.state}: no such file")
            inv = Inversion.load(a.state, g)
            if inv.layer != painter.layer:
                raise ValueError(f"--state {a.state} was inverted at layer {inv.layer}, but the "
                                 f"dissection paints {painter.layer}")
            t = inv.target.to(prep.tensor.device)
            if t.shape != prep.tensor.shape or (t - prep.tensor).abs().max() > 1 / 127.5:
                raise ValueError(f"--state {a.state}: state made from another image (invert "
                                 f"{a.image} again, or pass the image that state came from)")
            inv.image = prep
        else:
            seg = registry.load_segmenter(a.segmenter, dev, a.segmenter_arg)
            inv = invert(g, prep, encoder=_encoder(a, g, dev), perceptual=seg, progress=True,
                         **_invert_options(a))
            print(f"reconstruction PSNR {inv.psnr:.2f} dB")
        stroke = inv.stroke(painter, a.concept, mask, a.action, a.units, a.strength, a.feather)
        with torch.no_grad():
            edited = inv.edit_full(g, [stroke])
        output_dir(out.parent)
        Image.fromarray(edited).save(out, format=None if out.suffix else "PNG")
        h, w = edited.shape[:2]
        print(f"wrote {out} ({w}×{h}): {a.action} {a.concept}, {len(stroke.units)} units")
    return run


@command("train-encoder", "train the inversion encoder on a generator's samples (resumable)")
def _train_encoder(p):
    _train_args(p, "encoder", 20000)
    p.add_argument("--model", default="scenes", help="the generator (as for other commands)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--lr", type=at_least(0.0), default=1e-3)
    p.add_argument("--feature-weight", type=at_least(0.0), default=1.0,
                   help="weight of the painting-layer feature loss (next to the latent loss)")
    p.add_argument("--width", type=count(1), default=32, help="channels of the first block")

    def run(a):
        from ganpaint.core import checkpoint
        from ganpaint.apps import registry
        from ganpaint.apps.encoder import train_encoder
        _threads(a)
        checkpoint.run_paths(a.out, a.export)
        g = registry.load_generator(a.model, _device(a), a.model_arg)
        train_encoder(g, a.out, a.export, a.steps, a.batch_size, a.lr, a.feature_weight,
                      width=a.width)
        print(f"wrote {a.export} (run state: {Path(a.out) / 'state.pt'})")
    return run


def build_parser():
    """The `ganpaint` argument parser, one subcommand per `@command` (tests and docs build it
    without running anything)."""
    parser = Parser(
        prog="ganpaint", description="GAN dissection and semantic painting.")
    sub = parser.add_subparsers(dest="command", metavar="command")
    sub.required = True
    for name, (help, fn) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(run=fn(p))
    return parser


def main(argv=None):
    """Run `ganpaint` with `argv` (default: sys.argv) and return the exit code: 0, 2 for an
    error a user can fix (printed as one line, not a traceback), 130 for Ctrl-C."""
    from ganpaint.core.checkpoint import CheckpointError
    from ganpaint.core.names import UnknownNameError
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (UnknownNameError, CheckpointError, ValueError, FileNotFoundError,
            NotImplementedError) as e:  # the last: a segmenter without probabilities(), say
        print(f"ganpaint {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C: one line (a dissection says where it saved)
        print(f"\nganpaint {args.command}: interrupted{': ' + str(e) if str(e) else ''}",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
    return 0
