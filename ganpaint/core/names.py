"""Names a user types (layers, concepts, rankings, models) and the error for an unknown one.

Every lookup by name goes through here, so that a typo always gets the same kind of answer:
the close matches and the full list of valid names, never a bare KeyError.
"""
from __future__ import annotations

import difflib


class UnknownNameError(KeyError):
    """A name (concept, layer, model...) that is not known; the message lists the valid ones."""

    def __str__(self):  # KeyError would print the message with quotes around it
        return str(self.args[0])


def unknown(kind: str, name: str, valid) -> UnknownNameError:
    """Build the error for an unknown `name`, with close matches and the valid names."""
    valid = list(valid)
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return UnknownNameError(
        f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(str(v) for v in valid)}")


def lookup(name: str, concepts, aliases: dict | None = None) -> int:
    """Index of a concept in `concepts` by name or alias (case-insensitive).

    `aliases` maps other words to concept names ("trees" → "tree"); a segmenter or dissection
    that knows its vocabulary's synonyms passes them, so a user can type either."""
    concepts = list(concepts)
    key = str(name).strip().lower()
    key = {str(a).lower(): str(c).lower() for a, c in (aliases or {}).items()}.get(key, key)
    lowered = [c.lower() for c in concepts]
    if key in lowered:
        return lowered.index(key)
    raise unknown("concept", name, concepts)
