"""Training-time augmentation of encoded reviews: random windows of a review's own tokens.

Used by the training loop (a share of each batch, chosen by (seed, epoch, step)) and by the NB-SVM
view fitted on cropped reviews (:mod:`model_lib.assemble`), so both see the same kind of crops.
"""

from __future__ import annotations

import numpy as np

CROP_TOKENS = (4, 64)  # shortest and longest window of a cropped review


def cropped(x: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Return ``x`` (a batch of 'pre'-padded id rows) with ``share`` of its rows, chosen by ``rng``,
    replaced by a random window of their own tokens, padded in front again.

    Window lengths are log-uniform over CROP_TOKENS, so one-line texts are as common as paragraphs.
    ``x`` itself is returned when ``share`` is 0; otherwise a copy.
    """
    if share <= 0:
        return x
    x = x.copy()
    chosen = np.flatnonzero(rng.random(len(x)) < share)
    lengths = np.exp(rng.uniform(np.log(CROP_TOKENS[0]), np.log(CROP_TOKENS[1] + 1), len(chosen))).astype(int)
    starts = rng.random(len(chosen))
    for row, length, start in zip(chosen, lengths, starts):
        tokens = x[row][x[row] != 0]
        length = min(int(length), len(tokens))
        first = int(start * (len(tokens) - length + 1))
        x[row] = 0
        if length:
            x[row, -length:] = tokens[first : first + length]
    return x


__all__ = ["CROP_TOKENS", "cropped"]
