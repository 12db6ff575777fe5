"""``python -m srqcli`` (what ``torchrun -m srqcli`` runs)."""

from srqcli.cli import main

main()
