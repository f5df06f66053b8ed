"""Patterns adapted from public Keras code, one small function each (see ../harness.py)."""
