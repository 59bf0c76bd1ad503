"""A table of bad inputs and the exact diagnostic each must produce (first error, with its hint)."""

from __future__ import annotations

import pytest

from labelql.checker import check_text
from labelql.diagnostics import DiagnosticError

PRELUDE = """labels cat, dog
embedding clip = open_clip("ViT-B-32", "laion2b_s34b_b79k")
projection umap = umap(clip, seed=0)
clusters umap: cats = text("photo of a cat"), dogs = text("photo of a dog")
anchors dog_examples = "k1", "k2"
let high = text("photo of a cat") > 0.61
"""
LINE = PRELUDE.count("\n") + 1

CASES = [
    # (statement, "col: message", hint or None)
    ('dog IF text("a") > 0.5 -> dne', "27: unknown route 'dne'", "did you mean 'done'?"),
    (
        'dog IF text("a") > 0.5 -> manual',
        "27: unknown route 'manual'",
        "rows that no rule takes go to manual by themselves",
    ),
    ('bird IF text("a") > 0.5 -> done', "1: unknown label 'bird'", "labels: cat, dog"),
    ('dog IF txt("a") > 0.5 -> done', "8: unknown function 'txt'", "did you mean 'text'?"),
    (
        'dog IF text("a") = dogs -> done',
        "20: 'dogs' is a cluster name and can only be compared with cluster(umap)",
        "write cluster(umap) = dogs",
    ),
    (
        "dog IF cluster(umap) >= dogs -> done",
        "8: cluster(umap) is a cluster name: compare it with = or !=, not >=",
        None,
    ),
    (
        "dog IF cluster(umap) = doggos -> done",
        "24: 'doggos' is not a cluster of umap",
        "did you mean 'dogs'?",
    ),
    (
        'dog IF cluster(umap) = "dogs" -> done',
        "24: cluster names are written bare: dogs, not a string",
        "write cluster(umap) = dogs",
    ),
    ("dog IF cluster(tsne) = dogs -> done", "16: unknown projection 'tsne'", "projection names: umap"),
    (
        'dog IF text("a") > "0.6" -> done',
        "8: cannot compare a score (number) with a string",
        "write the number without quotes: 0.6",
    ),
    (
        'dog IF text("a") > -1.5 -> done',
        "20: threshold -1.5 is outside [-1, 1], where cosine similarities lie",
        "a similarity threshold is between -1 and 1, e.g. 0.61",
    ),
    (
        'dog IF text("a") BETWEEN 0.2 AND 2 -> done',
        "34: threshold 2 is outside [-1, 1], where cosine similarities lie",
        "a similarity threshold is between -1 and 1, e.g. 0.61",
    ),
    (
        "dog IF near(dog_examples) >= 1 -> done",
        "8: near() takes 2 or 3 arguments ([space,] anchors, threshold), not 1",
        None,
    ),
    (
        "dog IF near(dog_exmples, 0.9) >= 1 -> done",
        "13: unknown anchors set 'dog_exmples'",
        "did you mean 'dog_examples'?",
    ),
    (
        'dog IF text(umap, "a") > 0.5 -> done',
        "13: unknown embedding space 'umap'",
        "'umap' is a projection, not an embedding space",
    ),
    ("dog IF hihg -> done", "8: unknown name 'hihg'", "did you mean 'high'?"),
    (
        "dog IF dog_examples -> done",
        "8: 'dog_examples' is an anchors set, not a value",
        "use it in similar(...) or near(...)",
    ),
    (
        'dog IF text("a") -> done',
        "8: a rule's condition must be true or false, but this is a score (number)",
        'compare it, e.g. text("photo of a dog") > 0.6',
    ),
    (
        'dog IF high AND text("a") -> done',
        "17: each side of AND must be true or false, but this is a score (number)",
        'compare it, e.g. text("photo of a dog") > 0.6',
    ),
    (
        "dog IF added > now() - interval '7 dayz' -> done",
        "33: cannot read interval '7 dayz'",
        "write e.g. interval '7 days' or interval '12 hours'",
    ),
    ("dog IF added > 0.5 -> done", "8: cannot compare a time with a number", None),
    ('dog IF text("") > 0.5 -> done', "13: text()'s prompt is empty", None),
    ("dog IF text(photo) > 0.5 -> done", "13: text()'s prompt must be a string", 'write text("photo")'),
    (
        'dog IF text("a", "b", "c") > 0.5 -> done',
        '8: text() takes 1 or 2 arguments ([space,] "prompt"), not 3',
        None,
    ),
    (
        'dog IF meta("camera") = "x" AND similar("k9", "x") > 0.2 -> done',
        "41: similar()'s first argument must name an embedding space",
        None,
    ),
    (
        "let high = 1",
        "5: 'high' is already defined as a let at <p>:6:5",
        "spaces, projections, anchors, lets and slices share one namespace; rename one",
    ),
    ("labels bird, cat", "14: label 'cat' is declared twice", None),
    (
        'clusters umap: birds = text("bird")',
        "1: clusters for 'umap' are already declared at <p>:4:1",
        "name all of a projection's clusters in one statement",
    ),
    (
        "projection t = tsne(clip, perplexity=30, seed=1.5)",
        "47: tsne() parameter 'seed' must be a whole number, not 1.5",
        None,
    ),
    (
        'projection t = tsne(clip, metric="manhattan")',
        "34: tsne() parameter 'metric' must be one of cosine, euclidean",
        None,
    ),
    (
        'embedding e2 = open_clip("ViT-B-32")',
        "16: open_clip needs exactly one source of weights: a pretrained tag, "
        'checkpoint="path" or random_weights=true',
        None,
    ),
    (
        'embedding e2 = open_clip("ViT-B-32", random_weights=yes)',
        "53: open_clip parameter 'random_weights' must be true or false",
        None,
    ),
    (
        'embedding e2 = sentence_transformer("a", "b")',
        "16: sentence_transformer takes one argument: sentence_transformer(name)",
        None,
    ),
    ("dog IF text('a') > 0.5 && high -> done", "24: unexpected character '&'", "use AND"),
    ('dog IF text("a") > 0.5 high -> done', "24: unexpected name 'high'", None),
    ('dog IF text("a") > 0.5 -> done done', "32: unexpected name 'done'", "expected end of statement"),
    ('dog text("a") > 0.5 -> done', "5: unexpected name 'text'", "expected IF"),
    (
        "rule r1: dog IF high -> done\nrule r1: cat IF high -> done",
        "6: rule 'r1' is already defined at <p>:7:6",
        None,
    ),
]


@pytest.mark.parametrize(("stmt", "expected", "hint"), CASES, ids=[c[0][:40] for c in CASES])
def test_exact_message(stmt: str, expected: str, hint: str | None) -> None:
    with pytest.raises(DiagnosticError) as info:
        check_text(PRELUDE + stmt + "\n", "<p>")
    first = info.value.diagnostics[0]
    assert first.severity == "error"
    line = LINE + stmt.count("\n") if "rule r1" in stmt else LINE
    assert f"{first.span.line}:{first.span.col}: {first.message}" == f"{line}:{expected}"  # type: ignore[union-attr]
    assert first.hint == hint


def test_at_most_twenty_errors_are_reported() -> None:
    src = PRELUDE + "".join(f"bird{i} IF high -> done\n" for i in range(30))
    with pytest.raises(DiagnosticError) as info:
        check_text(src, "<p>")
    diags = info.value.diagnostics
    assert len(diags) == 21 and diags[-1].message == "too many errors (30); showing the first 20"
