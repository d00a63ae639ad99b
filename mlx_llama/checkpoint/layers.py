"""How many decoder layers a set of tensor names holds: checked against the config before any model is
built, so a config.json asking for a million layers fails at once instead of allocating them."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import CheckpointError

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_indices(names: Iterable[str]) -> set[int]:
    """The `layers.N.` indices that occur in tensor names."""
    return {int(m.group(1)) for m in map(_LAYER.search, names) if m}


def check_layer_count(names: Iterable[str], num_hidden_layers: int, where: str) -> None:
    """CheckpointError unless the weights hold exactly layers 0 .. num_hidden_layers - 1."""
    found = layer_indices(names)
    if found != set(range(num_hidden_layers)):
        missing = sorted(set(range(min(num_hidden_layers, max(found, default=-1) + 2))) - found)
        detail = (
            f"layer {missing[0]} is missing"
            if missing and missing[0] < num_hidden_layers
            else (f"there are layers up to {max(found)}" if found else "there are none")
        )
        raise CheckpointError(
            f"{where}: num_hidden_layers is {num_hidden_layers}, but the weights hold {len(found)} layers ({detail})"
        )
