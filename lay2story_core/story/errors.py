"""The one error type for bad story / layout input."""

from __future__ import annotations

__all__ = ["LayoutError"]


class LayoutError(ValueError):
    """Every bad story/layout input raises this.

    ``str(err) == f"{path}: {detail}"``; the detail names the bad value, e.g.
    ``"frames[3].subjects[0].box: x1 0.2 < x0 0.7"``. Attributes: ``path`` (where, as a dotted/indexed field path,
    ``"<json>"`` for JSON syntax errors or a file name for file errors), ``detail`` (what is wrong) and ``value``
    (the offending value, ``None`` when the field is missing).
    """

    def __init__(self, path: str, detail: str, value: object = None) -> None:
        # args carries all three so the error pickles (data loader workers) and copies faithfully.
        super().__init__(path, detail, value)
        self.path = path
        self.detail = detail
        self.value = value

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}"

    def __repr__(self) -> str:
        return f"LayoutError({self.path!r}, {self.detail!r})"
