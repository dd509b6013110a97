"""Compiled CPU kernels (numba) for the ranking losses; see :mod:`rsdet.losses._kernel`.

Importing this module imports numba; :mod:`rsdet.losses._kernel` does that lazily and falls back to
the torch code when it fails.  The kernels compute exactly what the torch path computes (same
tie semantics, float64 accumulation) and release the GIL, so :mod:`rsdet.losses._compiled` runs
their blocks on several threads; docs/losses.md ("Compiled CPU kernels") describes them.

* :mod:`rsdet.losses._numba_entries`: the N entries — positives, binning, backward's gather;
* :mod:`rsdet.losses._numba_positives`: the P positives — sorts, windows, N_FP, AP/aLRP/RS terms,
  gradient tables;
* :mod:`rsdet.losses._numba_sorting`: RS's sorting terms (Fenwick dominance sums by label blocks).
"""

from __future__ import annotations

from rsdet.losses._numba_entries import (bin_block, bin_outputs, count_positives,  # noqa: F401
                                         fill_positives, gather_block, grid_table,
                                         merge_bins, split_positives)
from rsdet.losses._numba_positives import (alrp_terms, ap_terms, false_positives,  # noqa: F401
                                           finish_tables, gradient_l1, gradient_tables,
                                           n_false_positives, positive_ranks,
                                           positive_windows, relation_sums, rs_terms,
                                           scale_tables, sort_keys, stable_argsort)
from rsdet.losses._numba_sorting import (block_starts, sorting_prepare, spread_block,  # noqa: F401
                                         spread_finish, sums_block, sums_finish)
