"""A synthetic survival cohort from real spots, with a planted link between the spots and survival."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._frame import previous_names

if TYPE_CHECKING:
    from anndata import AnnData


@previous_names
def planted_cohort(
    table: AnnData,
    marked: np.ndarray,
    n_patients: int,
    *,
    spots: int = 60,
    strength: float = 6.0,
    censoring: float = 2.0,
    random_state: int = 0,
) -> tuple[list[AnnData], np.ndarray, np.ndarray, np.ndarray]:
    """Patients made of real spots, whose hazard grows with their share of ``marked`` spots.

    Patient ``i`` gets a fraction ``f_i ~ U(0, 1)`` of its ``spots`` spots drawn from the ``marked`` rows of ``table``
    and the rest from the other rows (without replacement); its death time is exponential with hazard
    ``exp(strength * (f_i - 0.5))`` and it is censored at an exponential time of mean ``censoring``. A survival model
    that reads the spots can recover the ranking; ``fraction`` is the oracle (its C-index is the ceiling).

    Parameters
    ----------
    table
        Spots to draw from (with ``obsm`` embeddings and anything else the model needs; ``uns`` is kept).
    marked
        Boolean mask (or row indices) of the spots that carry risk.
    n_patients
        Cohort size.
    spots
        Spots per patient (at most the number of marked and of unmarked spots).
    strength
        Log hazard ratio between a fully marked and an unmarked patient.
    censoring
        Mean of the exponential censoring time.
    random_state
        Random seed.

    Returns
    -------
    Slides (AnnData subsets of ``table``), observed times, events (1 = death observed) and the planted fractions.

    Examples
    --------
    >>> import numpy as np
    >>> import storm as st
    >>> table = st.datasets.demo()["table"]
    >>> slides, time, event, fraction = planted_cohort(table, np.arange(151) < 75, 10, spots=20)
    >>> len(slides), slides[0].n_obs, sorted(set(event.tolist())) <= [0, 1]
    (10, 20, True)
    """
    mask = np.zeros(table.n_obs, dtype=bool)
    mask[np.asarray(marked)] = True
    high, low = np.flatnonzero(mask), np.flatnonzero(~mask)
    if spots > min(len(high), len(low)):
        raise ValueError(
            f"`spots={spots}` is more than the {len(high)} marked or {len(low)} other spots; lower `spots`."
        )
    rng = np.random.default_rng(random_state)
    fraction = rng.uniform(0, 1, n_patients)
    slides = []
    for f in fraction:
        k = int(round(spots * f))
        rows = np.concatenate([rng.choice(high, k, replace=False), rng.choice(low, spots - k, replace=False)])
        slides.append(table[np.sort(rows)].copy())
    death = rng.exponential(1 / np.exp(strength * (fraction - 0.5)))
    censor = rng.exponential(censoring, n_patients)
    return slides, np.minimum(death, censor), (death <= censor).astype(int), fraction
