"""The label model on synthetic votes whose true accuracies we set."""

from __future__ import annotations

import numpy as np

from labelql.labelmodel import fit

# (label, P(fires | its own label), P(fires | the other label))
RULES = [
    (0, 0.6, 0.02),
    (0, 0.3, 0.05),
    (0, 0.5, 0.1),
    (1, 0.7, 0.03),
    (1, 0.4, 0.08),
    (1, 0.2, 0.01),
    (0, 0.8, 0.3),
    (1, 0.6, 0.2),
    (0, 0.02, 0.001),
    (1, 0.5, 0.05),
]


def simulate(n: int, seed: int, copies: int = 0) -> tuple[np.ndarray, np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.45).astype(int)
    votes = np.zeros((n, len(RULES) + copies), bool)
    for j, (lab, own, other) in enumerate(RULES):
        votes[:, j] = rng.random(n) < np.where(y == lab, own, other)
    for c in range(copies):  # near copies of rule 7: correlated errors
        flip = rng.random(n) < 0.02
        votes[:, len(RULES) + c] = votes[:, 7] ^ flip
    return votes, y, [r[0] for r in RULES] + [RULES[7][0]] * copies


def true_accuracy(votes: np.ndarray, y: np.ndarray, labels: list[int]) -> np.ndarray:
    return np.asarray(
        [(y[votes[:, j]] == labels[j]).mean() if votes[:, j].any() else np.nan for j in range(votes.shape[1])]
    )


def test_estimates_within_three_points_when_rules_are_independent() -> None:
    votes, y, labels = simulate(60_000, seed=1)
    model = fit(votes, labels, ("cat", "dog"))
    est, truth = model.rule_accuracy(), true_accuracy(votes, y, labels)
    enough = votes.sum(axis=0) >= 500
    assert enough.sum() >= 9
    assert np.max(np.abs(est[enough] - truth[enough])) < 0.03, np.c_[est, truth]
    post = model.posterior(votes)
    assert ((post.argmax(axis=1) == y)[votes.any(axis=1)]).mean() > 0.9


def test_correlated_rules_make_the_model_overconfident() -> None:
    """Documented failure: three near copies of a rule are counted as independent evidence."""
    votes, y, labels = simulate(60_000, seed=2, copies=3)
    model = fit(votes, labels, ("cat", "dog"))
    est, truth = model.rule_accuracy(), true_accuracy(votes, y, labels)
    copied = [7, 10, 11, 12]
    assert np.all(est[copied] > truth[copied] + 0.05), np.c_[est[copied], truth[copied]]
