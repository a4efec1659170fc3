"""chipletc.cli: the ``chipletc`` command, the top layer.

It sits in its own top-level folder, beside ``ir/``, ``compiler/``, ``backends/`` and
``models/``, because it is a client of all of them (it parses flags, loads models and
targets, runs the compiler and the simulator, and writes their outputs) and nothing
imports it back: the import direction is cli -> compiler -> backends -> ir.
"""
