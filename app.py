"""ganpaint's painting app: `python app.py` serves the embedded default on http://127.0.0.1:7860."""
import argparse
import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no analytics, no network calls
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--model", default=None, help="generator: scenes | progan:<file> | "
                   "stylegan2:<file> | package.module:function (default: the dissection's model)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="model argument (default: those the dissection recorded, e.g. a "
                        "stylegan2 model's truncation and noise; these override them)")
    p.add_argument("--dissection", default=None,
                   help="dissection directory of the model to paint with (default: the shipped "
                        "one, models/dissection)")
    p.add_argument("--layer", default=None, help="painting layer (default: the dissection's first)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--trust", action="store_true",
                   help="let the dissection's model import path run (it is code: without this "
                        "flag only registry ids and weights files are used)")
    a = p.parse_args(argv)
    import signal
    # stopped by SIGTERM (a service manager, `kill`): exit as on Ctrl+C, so the server closes and
    # the temp files are removed (Python's default SIGTERM ends the process without cleanup)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    from ganpaint.core.checkpoint import CheckpointError
    from ganpaint.core.names import UnknownNameError
    try:
        serve(a)
    except (UnknownNameError, CheckpointError, ValueError, FileNotFoundError) as e:
        p.exit(2, f"{p.prog}: error: {e}\n")  # bad flags or files: one line, as the CLI
    except KeyboardInterrupt:
        return 130
    return 0


def serve(a):
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    # Gradio's queue summarises its log of events with pandas after every event, for a
    # monitoring page this app does not use: 5-7 ms of CPU per request, 24 ms once the log holds
    # its default 10,000 events. Summarised every 1,000 events instead, and at most 1,000 kept.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")
    if "GRADIO_TEMP_DIR" not in os.environ:  # Gradio's cache of replies: ours, gone on exit
        cache = tempfile.mkdtemp(prefix="ganpaint-gradio-")
        os.environ["GRADIO_TEMP_DIR"] = cache
        atexit.register(shutil.rmtree, cache, True)

    from ganpaint.apps import registry
    from ganpaint.core.checkpoint import CheckpointError
    from ganpaint.apps.paintapp import CSS, HEAD, MAX_UPLOAD, PaintApp, build_demo, limit_decoding
    from ganpaint.apps.serving import Janitor

    from ganpaint.core.checkpoint import MODELS
    ddir = Path(a.dissection) if a.dissection else MODELS / "dissection"
    d = registry.load_dissection(ddir)
    # the dissection's model and model arguments (truncation, noise, ...) unless given here
    g = registry.generator_from_dissection(d, ddir / "dissection.json", a.model, a.model_arg,
                                           registry.device(a.device), a.trust)
    try:  # the dissection's segmenter, if loading it runs no code: picks the opening scene
        seg = registry.load_segmenter(registry.spec_from_file(
            d.get("segmenter"), "segmenter", ddir / "dissection.json", "--segmenter", a.trust))
    except (ValueError, CheckpointError, FileNotFoundError):
        seg = None
    from ganpaint.apps.encoder import shipped_encoder
    enc = shipped_encoder(g, registry.device(a.device), print)  # for uploads ("your image")
    app = PaintApp(g, d, segmenter=seg, layer=a.layer, encoder=enc)
    # Gradio sets matplotlib's backend around every handler call, which imports pyplot the
    # first time: done here, not during the first people's requests (~1 s of CPU)
    import matplotlib.pyplot  # noqa: F401  (imported for its side effect)
    limit_decoding()
    demo = build_demo(app, ddir / "experiments")
    Janitor(os.environ["GRADIO_TEMP_DIR"])  # one file per reply: keep the newest
    demo.queue(default_concurrency_limit=2)
    # everything built so far (models, the app's blocks) lives as long as the server: set aside from
    # the garbage collector, whose full passes over it took a few hundred ms in the middle of
    # people's requests
    import gc
    gc.collect()
    gc.freeze()
    demo.launch(server_name=a.host, server_port=a.port, share=False, footer_links=[], css=CSS,
                head=HEAD, max_file_size=MAX_UPLOAD)


if __name__ == "__main__":
    raise SystemExit(main())
