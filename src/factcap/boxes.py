"""Boxes ``(x0, y0, x1, y1)`` in pixels: area, overlap, suppression, padding, and the spatial
relation of two boxes, for region captions and the caption graph.

Relation rules (:func:`relations`, for boxes ``a`` and ``b``; "overlap" is the intersection's
area):

- ``inside``: at least 90 % of ``a`` lies in ``b`` (and ``a`` is the smaller);
- ``overlapping``: they overlap (IoU > 0) and neither is inside the other;
- ``left of`` / ``right of``: ``a``'s centre is left / right of ``b``'s and the horizontal
  gap between the centres is larger than the vertical one (``above`` / ``below`` otherwise;
  image y grows downwards);
- ``larger than``: ``a``'s area is at least 1.5 times ``b``'s.

>>> relations((0, 0, 10, 10), (20, 0, 30, 10))
['left of']
>>> relations((0, 0, 40, 40), (10, 10, 20, 20))
['larger than']
>>> relations((10, 10, 20, 20), (0, 0, 40, 40))
['inside']
"""

from __future__ import annotations

from collections.abc import Sequence

Box = tuple[float, float, float, float]

#: Share of a box that must lie in another for "inside".
INSIDE_SHARE = 0.9
#: Area ratio for "larger than".
LARGER_RATIO = 1.5


def area(box: Sequence[float]) -> float:
    """The area of ``box`` (0 for an empty or inverted box).

    >>> area((0, 0, 4, 3)), area((5, 5, 1, 1))
    (12.0, 0.0)
    """
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def intersection(a: Sequence[float], b: Sequence[float]) -> float:
    """The area the two boxes share."""
    return area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union.

    >>> iou((0, 0, 2, 2), (1, 0, 3, 2))
    0.3333333333333333
    """
    shared = intersection(a, b)
    union = area(a) + area(b) - shared
    return shared / union if union > 0 else 0.0


def union_box(a: Sequence[float], b: Sequence[float]) -> Box:
    """The smallest box holding both."""
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def suppress(boxes: Sequence[Sequence[float]], iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression, largest first: indices of the boxes kept, largest
    first; a box overlapping a kept one with IoU above ``iou_threshold`` is dropped.

    >>> suppress([(0, 0, 10, 10), (1, 1, 10, 10), (20, 20, 25, 25)], 0.5)
    [0, 2]
    """
    order = sorted(range(len(boxes)), key=lambda i: (-area(boxes[i]), i))
    kept: list[int] = []
    for i in order:
        if all(iou(boxes[i], boxes[k]) <= iou_threshold for k in kept):
            kept.append(i)
    return kept


def pad(box: Sequence[float], padding: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``box`` grown by ``padding`` of its width and height on every side, clipped to an image
    of ``size`` (width, height), in whole pixels, never empty.

    >>> pad((10, 10, 20, 30), 0.1, (100, 100))
    (9, 8, 21, 32)
    >>> pad((0, 0, 50, 50), 0.5, (60, 60))
    (0, 0, 60, 60)
    """
    w, h = box[2] - box[0], box[3] - box[1]
    x0 = max(0, int(box[0] - padding * w))
    y0 = max(0, int(box[1] - padding * h))
    x1 = min(size[0], int(round(box[2] + padding * w + 0.4999)))
    y1 = min(size[1], int(round(box[3] + padding * h + 0.4999)))
    x0, y0 = min(x0, size[0] - 1), min(y0, size[1] - 1)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def normalised(box: Sequence[float], size: tuple[int, int]) -> list[float]:
    """``box`` in fractions of the image's width and height, rounded to 4 places.

    >>> normalised((10, 20, 50, 80), (100, 200))
    [0.1, 0.1, 0.5, 0.4]
    """
    w, h = size
    return [round(box[0] / w, 4), round(box[1] / h, 4), round(box[2] / w, 4), round(box[3] / h, 4)]


def relations(a: Sequence[float], b: Sequence[float]) -> list[str]:
    """The spatial relations of ``a`` to ``b`` (module docstring), most telling first."""
    out: list[str] = []
    a_area, b_area = area(a), area(b)
    shared = intersection(a, b)
    a_inside = a_area > 0 and shared / a_area >= INSIDE_SHARE and a_area <= b_area
    b_inside = b_area > 0 and shared / b_area >= INSIDE_SHARE and b_area <= a_area
    if a_inside:
        out.append("inside")
    elif shared > 0 and not b_inside:
        out.append("overlapping")
    if not (a_inside or b_inside):
        dx = (a[0] + a[2]) / 2 - (b[0] + b[2]) / 2
        dy = (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2
        if abs(dx) > abs(dy):
            out.append("left of" if dx < 0 else "right of")
        elif dy != 0:
            out.append("above" if dy < 0 else "below")
    if b_area > 0 and a_area >= LARGER_RATIO * b_area:
        out.append("larger than")
    return out
