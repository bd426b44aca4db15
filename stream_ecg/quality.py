"""Signal-quality indices of one window: pure functions the interval rules gate on.

Why: an S call rests on the P wave and on small timing differences, which noise hides or fakes; a window whose
ECG does not look like ECG should not place one. Kurtosis is the cheapest such index (kSQI; Li, Clifford et al.
2008): clean ECG is a few tall, narrow QRS complexes on a flat line (kurtosis well above 5), while muscle noise,
motion artefact and baseline wander pull it toward a Gaussian's 3.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import kurtosis


def kurtosis_sqi(lead: np.ndarray) -> float:
    """Pearson kurtosis (normal = 3) of one lead of one window; NaN for a flat lead, which no gate passes.
    Scale-free, so the per-window z-score of the model input leaves it unchanged."""
    lead = np.asarray(lead, dtype=np.float64)
    if lead.size < 4 or not np.isfinite(lead).all() or np.ptp(lead) == 0.0:
        return float("nan")
    return float(kurtosis(lead, fisher=False, bias=True))
