"""Pure scoring functions: classification metrics and the localisation grade.

Shared by the trainer's experiments and the runtime's live evaluation so both grade alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from .intervals import inside_any


def binary_metrics(y_true: np.ndarray, prob_pos: np.ndarray, positive: int = 0, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, sensitivity and specificity with respect to class `positive`, and ROC AUC.

    For two classes the mean of the per-class one-vs-rest AUCs equals the AUC of either class.
    """
    y_true = np.asarray(y_true)
    is_pos = y_true == positive
    pred_pos = np.asarray(prob_pos) >= threshold
    tp = int(np.sum(pred_pos & is_pos))
    tn = int(np.sum(~pred_pos & ~is_pos))
    fp = int(np.sum(pred_pos & ~is_pos))
    fn = int(np.sum(~pred_pos & is_pos))
    return {
        "accuracy": (tp + tn) / max(len(y_true), 1),
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "auc": auc(is_pos, prob_pos),
    }


def auc(is_pos: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC, NaN when only one class is present (instead of raising)."""
    is_pos = np.asarray(is_pos, bool)
    if is_pos.all() or not is_pos.any():
        return float("nan")
    return float(roc_auc_score(is_pos, score))


def mean_std(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(np.nanmean(arr)), "std": float(np.nanstd(arr))}


@dataclass(frozen=True)
class GradeCounts:
    """Localisation grades over windows, and beat-level hit/suppression counts."""

    grade_i: int = 0
    grade_ii: int = 0
    grade_iii: int = 0
    abnormal_hit: int = 0
    abnormal_total: int = 0
    normal_inside: int = 0
    normal_total: int = 0

    def __add__(self, other: "GradeCounts") -> "GradeCounts":
        return GradeCounts(*(a + b for a, b in zip(self.astuple(), other.astuple())))

    def astuple(self) -> tuple[int, ...]:
        return (self.grade_i, self.grade_ii, self.grade_iii, self.abnormal_hit, self.abnormal_total,
                self.normal_inside, self.normal_total)

    @property
    def windows(self) -> int:
        return self.grade_i + self.grade_ii + self.grade_iii

    def summary(self) -> dict:
        n = max(self.windows, 1)
        return {
            "grade": {"I": self.grade_i / n, "II": self.grade_ii / n, "III": self.grade_iii / n},
            "abnormal_hit_rate": self.abnormal_hit / self.abnormal_total if self.abnormal_total else float("nan"),
            "normal_suppression_rate": 1 - self.normal_inside / self.normal_total if self.normal_total else float("nan"),
            "windows": self.windows,
        }


def grade_window(intervals, abnormal_pos: np.ndarray, normal_pos: np.ndarray, tol: int = 0) -> GradeCounts:
    """Grade one window: I = every abnormal R peak inside an interval and no normal one;
    II = every abnormal inside, some normal inside; III = otherwise (some abnormal beat missed)."""
    ab = inside_any(abnormal_pos, intervals, tol)
    no = inside_any(normal_pos, intervals, tol)
    all_hit = bool(ab.all())
    grade = (1, 0, 0) if all_hit and not no.any() else (0, 1, 0) if all_hit else (0, 0, 1)
    return GradeCounts(*grade, int(ab.sum()), len(ab), int(no.sum()), len(no))
