"""Tiny data sets made on the spot: nothing is downloaded."""

from __future__ import annotations

import numpy as np


def digits(n: int = 256, flat: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (no download), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images[:n] / 16.0).astype("float32")
    return (x.reshape(len(x), 64) if flat else x[..., None]), d.target[:n].astype("int32")


def token_texts(n: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Short synthetic 'reviews' whose label is whether a positive word occurs; words repeat a lot."""
    rng = np.random.default_rng(seed)
    words = np.array(["good", "bad", "film", "plot", "actor", "great", "dull", "the", "a", "was", "very", "not"])
    texts, labels = [], []
    for _ in range(n):
        chosen = rng.choice(words, size=rng.integers(4, 12))
        texts.append(" ".join(chosen))
        labels.append(int(("good" in chosen) or ("great" in chosen)))
    return np.array(texts), np.array(labels, dtype="int32")
