"""Fixtures shared by several test modules (pytest finds them here; test modules never
import each other). Helpers that are plain functions live in tests/toy.py."""
import pytest

from ganpaint.core.dissect import dissect
from ganpaint.core.intervene import Painter
from tests.toy import source


@pytest.fixture(scope="module")
def painter(tmp_path_factory):
    """A Painter on the tiny generator's layer4, dissected with the toy segmenter (48 samples):
    small enough to build once per module, real enough to rank, ablate and insert."""
    src = source()
    d = dissect(src, ["layer4"], tmp_path_factory.mktemp("d"), samples=48, batch_size=16,
                progress=False, log=lambda *a: None)
    return Painter(src.generator, d, "layer4")


def pytest_collection_modifyitems(items):
    """tests/test_browser.py starts the app on the shipped model for every test, and most of
    its tests drive Chromium: all of it is `browser` and `slow` (marked here, in one place)."""
    for item in items:
        if item.path.name == "test_browser.py":
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)
