"""``srq search-bits``: learn (or pick by sensitivity) each layer's weight bit-width under a
budget the user states (docs/method.md §6; docs/search-bits.md).

Public API::

    parse_budget(text) -> BudgetSpec                      # "avg-bits=3.0" | "size=1.5MB" | "bops=1.2G"
    parse_pins(text) -> dict[str, int]                    # "conv1=8,fc=8"
    CostModel.build(model, budget, input_shape, min_bits, max_bits, pins)
    GatedSRQQuantizer, install_gates(model, ...), gated_quantizers(model)
    LagrangeMultiplier, expected_cost(cost, quantizers)
    readout(quantizers) -> dict[str, int];  repair(cost, alloc, quantizers) -> Allocation
    solve_mckp(costs, values, lo, hi)                     # exact multiple-choice knapsack
    layer_sensitivity(...)                                # Fisher-weighted quantization error
    write_allocation(path, ...), read_allocation(path)
    run_search(recipe, search_cfg, out, ...) -> SearchResult   # in srqcli.search.workflow
"""

from srqcli.search.budget import BudgetSpec, CostModel, parse_budget, parse_pins
from srqcli.search.gated import GatedSRQQuantizer, gated_quantizers, install_gates
from srqcli.search.knapsack import solve_mckp
from srqcli.search.readout import Allocation, readout, repair
from srqcli.search.regularizer import LagrangeMultiplier, expected_cost

__all__ = [
    "Allocation", "BudgetSpec", "CostModel", "GatedSRQQuantizer", "LagrangeMultiplier",
    "expected_cost", "gated_quantizers", "install_gates", "parse_budget", "parse_pins",
    "readout", "repair", "solve_mckp",
]
