"""Keep the model's memory wired (resident) on Apple silicon while generating; a no-op elsewhere.

On a Mac, macOS may page out GPU buffers between steps of a model that fills much of the unified memory;
`mx.set_wired_limit` up to the recommended working set keeps them resident. Models larger than that set
are warned about once: they will run, but slowly, as the system swaps.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import mlx.core as mx
from mlx.utils import tree_flatten


def model_nbytes(model) -> int:
    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


def _metal() -> bool:
    return bool(mx.metal.is_available()) and mx.default_device().type == mx.gpu


@contextmanager
def wired_limit(model) -> Iterator[None]:
    """Raise the wired limit to the recommended working set for the duration, then restore it (Metal only)."""
    if not _metal():
        yield
        return
    limit = int(mx.device_info().get("max_recommended_working_set_size", 0))
    if not limit:
        yield
        return
    size = model_nbytes(model)
    if size > 0.9 * limit:
        warnings.warn(
            f"the model needs {size / 2**30:.1f} GiB, close to or above the {limit / 2**30:.1f} GiB "
            "this Mac recommends keeping resident: generation may be slow (swapping)",
            stacklevel=3,
        )
    previous = mx.set_wired_limit(limit)
    try:
        yield
    finally:
        mx.synchronize()
        mx.set_wired_limit(previous)
