"""Names from users and files that become parts of output paths, checked so they cannot leave
the output folder (``..``, absolute paths, separators where none belong, control characters).

A run id is one path segment; a tile id is a relative path of plain segments (``a/x``); a model
card's ``model_file`` is one file name inside the model folder.
"""

from __future__ import annotations

import re

#: One path segment a person would type: letters, digits, ``.``, ``_``, ``-``, not starting with a dot.
_SEGMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnsafePathError(ValueError):
    """A name would place a file outside the folder it belongs in; the message says which and why."""


def check_segment(name: str, what: str) -> str:
    """``name`` if it is one plain path segment (e.g. a run id), else UnsafePathError."""
    if not isinstance(name, str) or not _SEGMENT.match(name):
        raise UnsafePathError(f"{what} {name!r} must be 1-128 letters, digits, '.', '_' or '-', not starting with '.'")
    return name


def check_relative(path: str, what: str) -> str:
    """``path`` if it is a relative path of ordinary segments (no ``..``, ``.``, empty segments,
    backslashes, drive letters or control characters), else UnsafePathError."""
    if not path or path.startswith("/") or "\\" in path or _CONTROL.search(path) or re.match(r"^[A-Za-z]:", path):
        raise UnsafePathError(f"{what} {path!r} is not a plain relative path")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise UnsafePathError(f"{what} {path!r} has a {segment or 'empty'!r} segment; it could leave the output folder")
    return path
