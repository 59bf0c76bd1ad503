"""Estimated accuracy without gold: a Dawid-Skene style latent class model over the rules' votes.

Each rule is a labeling function that votes its label when it matches and abstains otherwise. The
model has a class prior pi_y and, for every rule j and class y, a firing rate theta_jy = P(rule j
matches | true label y). Assumption (the usual one, Dawid & Skene 1979; Snorkel's label model makes the
same): **rules match independently of each other given the true label**. EM fits pi and theta; then

- a rule's estimated accuracy is P(true label = its label | it matches)
  = pi_l theta_jl / sum_y pi_y theta_jy;
- a row's label probability is the posterior P(y | which rules matched).

Rows with the same pattern of matches share a posterior, so the fit runs on the distinct patterns (a few
hundred at most for ten rules), which is why a million rows fit in well under a second.

How it fails: when rules are *not* independent given the label (two rules that are near copies of each
other, or rules built on the same signal with nearby thresholds), their agreement is counted as
independent evidence, and the model grows overconfident: both rules' accuracies are overestimated
(tests/test_labelmodel.py measures this). Measured accuracy from an audit sample is the remedy:
``labelql sample`` then ``labelql gold import --source audit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

EPS = 1e-6


@dataclass
class LabelModel:
    labels: tuple[str, ...]
    rule_labels: tuple[int, ...]  # index into labels, per rule
    prior: np.ndarray[Any, Any]  # (K,)
    theta: np.ndarray[Any, Any]  # (J, K): P(rule j fires | y = k)
    iterations: int

    def rule_accuracy(self) -> np.ndarray[Any, Any]:
        """P(true label = rule's label | rule fires), per rule."""
        joint = self.theta * self.prior[None, :]
        fire = joint.sum(axis=1)
        own = joint[np.arange(len(self.rule_labels)), list(self.rule_labels)]
        return np.asarray(own / np.maximum(fire, EPS))

    def posterior(self, votes: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """(N, K) label probabilities for a (N, J) boolean vote matrix."""
        patterns, _, inverse = unique_patterns(votes)
        post = _posterior(patterns, self.prior, self.theta)
        return np.asarray(post[inverse])


def unique_patterns(
    votes: np.ndarray[Any, Any],
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Distinct vote patterns, how often each occurs, and each row's pattern number."""
    v = votes.astype(np.uint8)
    if v.shape[1] <= 62:
        # One integer per row: a 1-D unique is an order of magnitude faster than a row-wise one.
        codes = v.astype(np.int64) @ (np.int64(1) << np.arange(v.shape[1], dtype=np.int64))
        _, first, inverse, counts = np.unique(
            codes, return_index=True, return_inverse=True, return_counts=True
        )
        return v[first], counts, inverse.reshape(-1)
    patterns, inverse, counts = np.unique(v, axis=0, return_inverse=True, return_counts=True)
    return patterns, counts, inverse.reshape(-1)


def _posterior(
    patterns: np.ndarray[Any, Any], prior: np.ndarray[Any, Any], theta: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    lt, lf = np.log(np.clip(theta, EPS, 1 - EPS)), np.log(np.clip(1 - theta, EPS, 1 - EPS))
    b = patterns.astype(np.float64)
    log_lik = b @ lt + (1 - b) @ lf + np.log(np.clip(prior, EPS, 1))[None, :]
    log_lik -= log_lik.max(axis=1, keepdims=True)
    p = np.exp(log_lik)
    return np.asarray(p / p.sum(axis=1, keepdims=True))


def fit(
    votes: np.ndarray[Any, Any],
    rule_labels: list[int],
    labels: tuple[str, ...],
    max_iter: int = 200,
    tol: float = 1e-7,
) -> LabelModel:
    """Fit the model to a (N, J) boolean matrix: ``votes[i, j]`` is whether rule j matched row i."""
    j = votes.shape[1]
    k = len(labels)
    patterns, counts, _ = unique_patterns(votes)
    w = counts.astype(np.float64)
    # Start from "a rule fires mostly on its own label": breaks the label-switching symmetry.
    theta = np.full((j, k), 0.05)
    for r, lab in enumerate(rule_labels):
        theta[r, lab] = 0.5
    prior = np.full(k, 1.0 / k)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        post = _posterior(patterns, prior, theta)  # (P, K)
        weighted = post * w[:, None]
        mass = weighted.sum(axis=0)  # (K,)
        new_prior = mass / max(mass.sum(), EPS)
        new_theta = (patterns.astype(np.float64).T @ weighted) / np.maximum(mass[None, :], EPS)
        new_theta = np.clip(new_theta, EPS, 1 - EPS)
        delta = max(float(np.abs(new_theta - theta).max()), float(np.abs(new_prior - prior).max()))
        theta, prior = new_theta, new_prior
        if delta < tol:
            break
    return LabelModel(labels, tuple(rule_labels), prior, theta, it)
