"""Whole experiments from a recipe: one run (``pipeline``) or a grid of runs (``sweeps``).
"""
