"""Type hints for the heavy objects the nodes pass around, without importing their libraries.

Type checkers see the real classes. At run time the names are `Any`: Kedro reads node
signatures (`typing.get_type_hints`) when it builds a run, and importing anndata or
torch_geometric there would slow every `kedro` command; they load on first use instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["AnnData", "HeteroData"]

if TYPE_CHECKING:
    from anndata import AnnData
    from torch_geometric.data import HeteroData
else:
    AnnData = HeteroData = Any
