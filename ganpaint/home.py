"""Where the shipped weights (`models/`) and assets (`assets/`) are found.

ganpaint ships its trained weights, dissections and label file with the code, so that it works
offline. They live at the repository's top level (`models/`, `assets/`), and a wheel carries
the same folders inside the package as `ganpaint/_data/models` and `ganpaint/_data/assets`
(mapped by `[tool.setuptools]` in pyproject.toml; nothing is copied in the checkout). Each
folder is looked up in this order:

1. `$GANPAINT_HOME/<name>` when the environment variable GANPAINT_HOME is set (a folder holding
   `models/` and `assets/`, e.g. a checkout): to try other weights without reinstalling;
2. `ganpaint/_data/<name>` inside the installed package (a wheel, `pip install .`);
3. `<name>/` beside the package in a source checkout (`pip install -e .`, or running from it).

A folder that is found nowhere gives an error that names GANPAINT_HOME and every place tried.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV = "GANPAINT_HOME"
_PACKAGE = Path(__file__).resolve().parent


class DataNotFoundError(FileNotFoundError):
    """The shipped `models/` or `assets/` folder is missing; the message says where it looked
    and how to point ganpaint at it (GANPAINT_HOME)."""


def candidates(name: str) -> list[Path]:
    """The places searched for the shipped folder `name` ("models" or "assets"), in order."""
    home = os.environ.get(ENV, "").strip()
    if home:
        # an explicit setting is the only place looked at: silently falling back to other
        # weights would hide a typo in the variable
        return [Path(home).expanduser() / name]
    out = [_PACKAGE / "_data" / name]
    checkout = _PACKAGE.parent
    if (checkout / "pyproject.toml").is_file():  # a source checkout, not site-packages
        out.append(checkout / name)
    return out


def find(name: str) -> Path | None:
    """The first existing folder among `candidates(name)`, or None."""
    return next((p for p in candidates(name) if p.is_dir()), None)


def missing(name: str, what: str = "") -> DataNotFoundError:
    """The error for a shipped folder (or a file `what` in it) that cannot be found."""
    places = ", ".join(str(p) for p in candidates(name))
    item = f"{name}/{what}" if what else f"{name}/"
    folder = find(name)
    if folder is not None and what:  # the folder is there, the file is not (not trained yet?)
        return DataNotFoundError(
            f"ganpaint's {name}/ folder ({folder}) has no {what}; make that file (e.g. the "
            f"ganpaint command that trains it) or set {ENV} to a folder whose {name}/ has it")
    if os.environ.get(ENV, "").strip():
        how = (f"{ENV} is set to {os.environ[ENV]!r}: point it at a folder that holds "
               f"models/ and assets/ (a ganpaint checkout), or unset it to use the installed ones")
    else:
        how = (f"install ganpaint from its source folder (pip install . or pip install -e .), "
               f"or set {ENV} to a folder that holds models/ and assets/ (a ganpaint checkout)")
    return DataNotFoundError(f"ganpaint's shipped {item} was not found (looked in: {places}); "
                             f"{how}")


def path(name: str) -> Path:
    """The shipped folder `name`, or where it would be (the first candidate) when absent.

    Does not raise, so that importing ganpaint never fails for want of weights a caller may
    not need; loading a file from an absent folder raises `missing(...)` at that point.
    """
    return find(name) or candidates(name)[0]


def require(name: str, what: str = "") -> Path:
    """The shipped folder `name` (and the file `what` in it, if given); raises
    DataNotFoundError naming GANPAINT_HOME when it is not there."""
    folder = find(name)
    if folder is None or (what and not (folder / what).exists()):
        raise missing(name, what)
    return folder / what if what else folder
