"""Where the shipped models/ and assets/ are found (ganpaint.home): the checkout here, the
wheel's ganpaint/_data in an installed copy (.ci/wheel-check), GANPAINT_HOME when set."""
import shutil

import pytest

from ganpaint.core import checkpoint
from ganpaint import home


def test_checkout_folders_are_found():
    assert (home.require("assets", "labels.json")).is_file()
    assert home.require("models").is_dir()
    assert checkpoint.MODELS == home.path("models")


def test_ganpaint_home_is_the_only_place_looked_at(tmp_path, monkeypatch):
    (tmp_path / "assets").mkdir()
    shutil.copy(home.require("assets", "labels.json"), tmp_path / "assets")
    monkeypatch.setenv("GANPAINT_HOME", str(tmp_path))
    assert home.require("assets", "labels.json") == tmp_path / "assets" / "labels.json"
    assert home.candidates("models") == [tmp_path / "models"]  # no silent fallback
    with pytest.raises(home.DataNotFoundError) as e:
        home.require("models")
    assert "GANPAINT_HOME is set to" in str(e.value) and str(tmp_path) in str(e.value)


def test_missing_folder_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setattr(home, "_PACKAGE", tmp_path / "site-packages" / "ganpaint")
    monkeypatch.delenv("GANPAINT_HOME", raising=False)
    assert home.find("models") is None
    err = home.missing("models")
    assert "GANPAINT_HOME" in str(err) and "_data" in str(err) and isinstance(err, FileNotFoundError)
    assert home.path("models") == tmp_path / "site-packages" / "ganpaint" / "_data" / "models"


def test_missing_shipped_weights_file_says_where(monkeypatch):
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.load(checkpoint.MODELS / "no-such-weights.pt")
    assert "has no no-such-weights.pt" in str(e.value) and "GANPAINT_HOME" in str(e.value)
