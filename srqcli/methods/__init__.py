"""Baseline quantizers for ``srq quantize --method`` (docs/method.md §8), one module each.

Each module documents its method and source paper in its docstring and holds both the pure
math (a function of tensors, unit-tested against the paper's formula) and the
:class:`~srqcli.nn.quantizer.Quantizer` subclass that model surgery attaches.
:mod:`srqcli.methods.registry` maps a method name to its quantizers.
"""
