"""The public API: the README's Python section runs as printed, and `ganpaint` exports what
it promises, with the layers' imports pointing one way (apps → world/adapters → core)."""
import ast
import re
from pathlib import Path

import pytest

import ganpaint

ROOT = Path(__file__).resolve().parents[1]


def _python_block():
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Python\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_python_section_runs(capsys):
    scope = {}
    exec(compile(_python_block(), "README.md (Python)", "exec"), scope)
    d, images = scope["d"], scope["images"]
    assert isinstance(d, ganpaint.Dissection) and d.layers == ["layer4"] and d.path is None
    assert images.shape == (4, 3, 64, 64)
    # the block's own outputs: the tree ranking and the ablation's removed shares
    out = capsys.readouterr().out.splitlines()
    assert "'unit'" in out[0] and len(ast.literal_eval(out[1])) == 2
    # the "remove" stroke changed the masked region of every image and only near it
    z = scope["gen"].latents(range(4))
    plain = scope["painter"].render(z)
    diff = (images - plain).abs().mean(1)  # (4, 64, 64)
    assert diff[:, 32:, :32].mean() > 5 * diff[:, :16, 48:].mean()


def test_exports_resolve():
    for name in ganpaint.__all__:
        assert getattr(ganpaint, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ganpaint.nope  # noqa: B018


# the world builds its scene GAN on the ProGAN adapter's network, so it sits just above it
LAYER = {"core": 0, "adapters": 1, "world": 1.5, "apps": 2}


def absolute(node, package: str) -> str:
    """The module an ImportFrom names, relative ones ("from ..core import x") made absolute
    from inside ganpaint.<package>."""
    if not node.level:
        return node.module or ""
    base = ["ganpaint", package][:max(0, 3 - node.level)]
    return ".".join(base + ([node.module] if node.module else []))


def test_imports_point_from_apps_to_core():
    """No module imports from a layer above its own (core knows no world, app or adapter)."""
    bad = []
    for f in (ROOT / "ganpaint").glob("*/*.py"):
        mine = f.parent.name
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([absolute(node, mine)] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for n in names:
                parts = n.split(".")
                if parts[0] == "ganpaint" and len(parts) > 1 and parts[1] in LAYER:
                    other = parts[1]
                    if other != mine and LAYER[other] >= LAYER[mine]:
                        bad.append(f"{f.relative_to(ROOT)} imports {n}")
    assert not bad, bad


def test_every_public_name_has_a_docstring():
    """Public functions, classes and methods say what they are for (why, not only what)."""
    missing = []
    for f in (ROOT / "ganpaint").rglob("*.py"):
        tree = ast.parse(f.read_text())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                members = [node] + ([m for m in node.body if isinstance(m, ast.FunctionDef)
                                     and not m.name.startswith("_")]
                                    if isinstance(node, ast.ClassDef) else [])
                missing += [f"{f.relative_to(ROOT)}:{m.lineno} {m.name}" for m in members
                            if not ast.get_docstring(m)]
    assert not missing, missing


def test_a_dissection_without_aliases_takes_the_worlds_words(tmp_path):
    """Dissection folders written before aliases were saved: the apps still take "lawn" for
    "grass" when the concepts are the scene world's (and only then)."""
    import json
    import shutil

    from ganpaint.apps.registry import load_dissection
    from ganpaint.core.checkpoint import MODELS
    shutil.copytree(MODELS / "dissection", tmp_path / "d")
    f = tmp_path / "d" / "dissection.json"
    doc = json.loads(f.read_text())
    doc.pop("aliases", None)
    f.write_text(json.dumps(doc))
    d = load_dissection(tmp_path / "d")
    assert d.aliases["lawn"] == "grass" and set(d.aliases.values()) <= set(d.concepts)
    assert d.rank("lawn", layer="layer4", top=3) == d.rank("grass", layer="layer4", top=3)
    from ganpaint.core.dissect import dissect
    from tests.toy import source
    dissect(source(), ["layer4"], tmp_path / "toy", samples=16, batch_size=16, progress=False,
            log=lambda *a: None)  # the toy's concepts are not the world's: no guessing
    assert load_dissection(tmp_path / "toy").aliases == {}
