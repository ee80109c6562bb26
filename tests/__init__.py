"""Unit, parity and tool tests; `tests.numerics` holds what several of them measure with."""
