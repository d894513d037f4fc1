"""Differential testing of netc by generated networks (tests/test_generated.py): a Hypothesis strategy that
draws random valid `.net` programs (strategy.py, over the vocabulary of ops.py and windows.py), and the check
that every compiled backend agrees with the reference on them (check.py)."""
