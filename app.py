"""ganpaint's painting app: `python app.py` serves the embedded default on http://127.0.0.1:7860."""
import argparse
import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no analytics, no network calls
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--model", default=None, help="generator id (default: the dissection's model)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dissection", default="models/dissection",
                   help="dissection directory of the model to paint with")
    p.add_argument("--layer", default=None, help="painting layer (default: the dissection's first)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)

    from pathlib import Path

    from ganpaint import registry
    from ganpaint.dissect import load_dissection
    from ganpaint.paintapp import CSS, PaintApp, build_demo

    root = Path(__file__).resolve().parent
    ddir = Path(a.dissection)
    if not ddir.is_absolute() and not ddir.exists():
        ddir = root / ddir
    d = load_dissection(ddir)
    g = registry.load_generator(a.model or d["model"], a.device, a.model_arg)
    app = PaintApp(g, d, layer=a.layer)
    demo = build_demo(app, ddir / "experiments")
    demo.queue(default_concurrency_limit=2)
    demo.launch(server_name=a.host, server_port=a.port, share=False, footer_links=[], css=CSS)


if __name__ == "__main__":
    main()
