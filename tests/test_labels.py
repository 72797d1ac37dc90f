import pytest

from ganpaint.core.names import UnknownNameError
from ganpaint.world import labels


def test_lookup_names_and_aliases():
    assert labels.CONCEPTS[labels.lookup("tree")] == "tree"
    assert labels.CONCEPTS[labels.lookup("Trees")] == "tree"
    assert labels.CONCEPTS[labels.lookup("wall")] == "building"


def test_unknown_concept_suggests():
    with pytest.raises(UnknownNameError) as e:
        labels.lookup("dorr")
    msg = str(e.value)
    assert "'door'" in msg and "Valid concepts" in msg and "sky" in msg


def test_colors_match_concepts():
    assert labels.COLORS.shape == (len(labels.CONCEPTS), 3)
    assert labels.colorize([[0, 1]]).shape == (1, 2, 3)
