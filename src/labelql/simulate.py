"""The demo's *simulated* data: 18,699 rows named ``cat_vs_dog_N`` whose 512-d unit vectors mimic the
geometry of CLIP on the guide's cats-vs-dogs set, and a simulated text encoder.

No pretrained CLIP can be had on the machines LabelQL is built on, so the demo simulates one, and says so.
Every vector is a mix of a few directions: the animal (cat / dog), a shared "photo" direction, one of three
sub-clusters per class (single animal, two animals, young animal: kitten / puppy), and noise. Most rows are
clear members of their class; a band of hard rows (blurry, animal turned away, behind a cage) lies between
the classes; a few are ambiguous. A small share of gold labels is wrong, as in the guide's ground truth.

The text encoder maps a prompt to a vector: a prompt that mentions a class word (cat, kitten, dog, puppy...)
lands near that class (and near its young sub-cluster for kitten / puppy), other prompts land elsewhere, so
any prompt can be tried in the REPL. Cosines sit in the ranges the guide's thresholds (0.61, 0.895) assume,
which real CLIP cosines do not (see docs/engine.md on moving to real CLIP).

The "model" is a deterministic function of (name, seed, key): rows can be embedded in any order, in part,
or again, and get the same vectors.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

DIM = 512
N_ROWS = 18_699
CAT_WORDS = ("cat", "cats", "kitten", "kittens", "kitty", "feline", "felines", "tabby")
DOG_WORDS = ("dog", "dogs", "puppy", "puppies", "pup", "canine", "canines", "hound", "doggy")
YOUNG_WORDS = ("kitten", "kittens", "kitty", "puppy", "puppies", "pup")
PAIR_WORDS = ("two", "pair", "couple", "several", "group")


@dataclass(frozen=True)
class RowTruth:
    key: str
    label: str  # the true class
    gold: str  # the gold label (a few are wrong, as in the guide's data)
    group: str  # single, pair, young
    difficulty: str  # easy, hard, ambiguous


# The guide's example policy names these rows as anchors: they are clear members of their class.
ANCHOR_ROWS = {
    3: ("dog", "single"),
    8: ("dog", "single"),
    12: ("cat", "single"),
    57: ("cat", "pair"),
    101: ("cat", "young"),
}


class CatsDogs:
    """The simulated data set and its encoders (see the module docstring)."""

    # Calibrated so the guide's policy gives a route table of the guide's shape (docs/engine.md).
    EASY = (0.50, 0.04, 0.20, 0.15, 0.22)  # own-class mean, its sd, cross-class, sub-cluster, noise
    HARD = (0.16, 0.14, 0.10)  # how far the hardest rows move: less own class, more other class, more noise
    PHOTO = 0.35
    PROMPT = (0.487, 0.617, 0.618)  # class, photo and elsewhere weights of a prompt that names a class

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        rng = np.random.default_rng(seed)
        basis, _ = np.linalg.qr(rng.standard_normal((DIM, 12)))
        self.u = {
            name: basis[:, i]
            for i, name in enumerate(
                [
                    "cat",
                    "dog",
                    "photo",
                    "cat_single",
                    "cat_pair",
                    "cat_young",
                    "dog_single",
                    "dog_pair",
                    "dog_young",
                    "other",
                    "blur",
                    "spare",
                ]
            )
        }
        self._basis = basis

    # -- rows --------------------------------------------------------------------------------------
    def truth(self, i: int) -> RowTruth:
        r = np.random.default_rng([self.seed, 1, i])
        label = "cat" if r.random() < 0.47 else "dog"
        g = r.random()
        if label == "cat":  # the guide saw a sub-cluster of photos with two cats; kittens form another
            group = "single" if g < 0.75 else ("pair" if g < 0.87 else "young")
        else:
            group = "single" if g < 0.92 else "young"
        d = r.random()
        difficulty = "easy" if d < 0.83 else ("hard" if d < 0.9985 else "ambiguous")
        gold = label if r.random() >= 0.0012 else ("dog" if label == "cat" else "cat")
        if i in ANCHOR_ROWS:
            label, group = ANCHOR_ROWS[i]
            gold, difficulty = label, "easy"
        return RowTruth(f"cat_vs_dog_{i}", label, gold, group, difficulty)

    def vector(self, i: int) -> np.ndarray[Any, Any]:
        t = self.truth(i)
        r = np.random.default_rng([self.seed, 2, i])
        other = "dog" if t.label == "cat" else "cat"
        mean, sd, cross_mean, sub_mean, noise = self.EASY
        own, cross, sub = r.normal(mean, sd), r.normal(cross_mean, 0.03), r.normal(sub_mean, 0.05)
        if t.difficulty == "hard":
            # A continuum from clear members towards the other class: blurry, turned away, behind a cage.
            d = r.random()
            own, cross, noise = own - self.HARD[0] * d, cross + self.HARD[1] * d, noise + self.HARD[2] * d
        elif t.difficulty == "ambiguous":
            own, cross, sub, noise = r.normal(0.33, 0.03), r.normal(0.33, 0.03), 0.05, 0.45
        v = (
            own * self.u[t.label]
            + cross * self.u[other]
            + self.PHOTO * self.u["photo"]
            + sub * self.u[f"{t.label}_{t.group}"]
        )
        n = r.standard_normal(DIM)
        n -= self._basis @ (self._basis.T @ n)  # noise outside the named directions
        v = v + noise * n / np.linalg.norm(n)
        return np.asarray(v / np.linalg.norm(v))

    def vectors(self, indices: list[int]) -> np.ndarray[Any, Any]:
        return np.stack([self.vector(i) for i in indices]) if indices else np.zeros((0, DIM))

    # -- text --------------------------------------------------------------------------------------
    def encode_text(self, prompt: str) -> np.ndarray[Any, Any]:
        words = re.findall(r"[a-z]+", prompt.lower())
        cat = sum(w in CAT_WORDS for w in words)
        dog = sum(w in DOG_WORDS for w in words)
        young = any(w in YOUNG_WORDS for w in words)
        pair = any(w in PAIR_WORDS for w in words)
        h = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "little")
        r = np.random.default_rng([self.seed, 3, h])
        jitter = r.standard_normal(DIM)
        jitter -= self._basis @ (self._basis.T @ jitter)
        jitter /= np.linalg.norm(jitter)
        if cat or dog:
            share_cat = cat / (cat + dog)
            k, p, o = self.PROMPT
            v = (
                k * (share_cat * self.u["cat"] + (1 - share_cat) * self.u["dog"])
                + p * self.u["photo"]
                + o * self.u["other"]
                + 0.04 * jitter
            )
            if young:
                v = v + 0.25 * (share_cat * self.u["cat_young"] + (1 - share_cat) * self.u["dog_young"])
            if pair:
                v = v + 0.25 * (share_cat * self.u["cat_pair"] + (1 - share_cat) * self.u["dog_pair"])
        else:
            v = 0.45 * self.u["photo"] + 0.5 * self.u["other"] + 0.74 * jitter
        return np.asarray(v / np.linalg.norm(v))


def index_of(key: str) -> int:
    m = re.fullmatch(r"cat_vs_dog_(\d+)", key)
    if not m:
        raise ValueError(f"{key!r} is not a simulated cats-and-dogs key")
    return int(m.group(1))
