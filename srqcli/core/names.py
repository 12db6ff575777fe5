"""The names recipes may use for SRQ's options (import-light: the recipe validator, and so
``srq --help``, read them without loading torch)."""

from __future__ import annotations

#: How ``π_m`` enters SRQ's backward (:mod:`srqcli.core.srq`).
PI_MODES = ("detach", "diff", "centred")
#: DropBits variants (:mod:`srqcli.core.dropbits`); ``none`` (off) is the recipe's own spelling.
VARIANTS = ("top", "lsb", "mask")
