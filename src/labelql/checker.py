"""Syntax tree -> checked policy (:mod:`labelql.policy`), or every error with its position.

The checker resolves names across a policy and its imports, types every expression, validates
functions, parameters and thresholds, orders ``let`` definitions, and warns about rules that can
never match, duplicate rules and unused definitions.  It reports all errors of a run at once (at
most :data:`MAX_ERRORS`) and raises :class:`DiagnosticError`; warnings ride on the result.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from labelql import ast as A
from labelql import policy as P
from labelql.diagnostics import Diagnostic, DiagnosticError, SourceMap, Span, did_you_mean
from labelql.parser import no_gc, parse_module, read_source

MAX_ERRORS = 20
METRICS = ("coverage", "accuracy", "rows", "errors")
BUILTINS = {"added": P.TIMESTAMP, "unlabeled": P.BOOL}
BOOLEANS = {"true": True, "false": False}
FUNCTIONS = ("text", "similar", "near", "cluster", "meta", "now")
PROVIDERS = ("open_clip", "sentence_transformer", "precomputed", "simulated")
PROJECTION_KINDS = ("umap", "tsne", "pca")
_INTERVAL = re.compile(
    r"^\s*(\d+(\.\d+)?\s*(microsecond|millisecond|second|minute|hour|day|week|month|year)s?\s*)+$", re.I
)


@dataclass(frozen=True)
class ParamSpec:
    """One named parameter: its kind (int, float, str, bool), allowed range or choices."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None


PROJECTION_PARAMS: dict[str, dict[str, ParamSpec]] = {
    "umap": {
        "neighbors": ParamSpec("int", 2, 500),
        "min_dist": ParamSpec("float", 0.0, 1.0),
        "seed": ParamSpec("int", 0, 2**31 - 1),
        "metric": ParamSpec("str", choices=("cosine", "euclidean")),
    },
    "tsne": {
        "perplexity": ParamSpec("float", 1.0, 500.0),
        "seed": ParamSpec("int", 0, 2**31 - 1),
        "metric": ParamSpec("str", choices=("cosine", "euclidean")),
        "exaggeration": ParamSpec("float", 1.0, 100.0),
    },
    "pca": {"seed": ParamSpec("int", 0, 2**31 - 1)},
}
CLUSTER_PARAMS = {
    "min_size": ParamSpec("int", 2, 1_000_000),
    "min_samples": ParamSpec("int", 1, 1_000_000),
    "margin": ParamSpec("float", 0.0, 2.0),
}
PROVIDER_PARAMS = {
    "open_clip": {
        "pretrained": ParamSpec("str"),
        "checkpoint": ParamSpec("str"),
        "random_weights": ParamSpec("bool"),
        "precision": ParamSpec("str", choices=("fp32", "bf16")),
    },
    "sentence_transformer": {},
    "precomputed": {},
    "simulated": {"seed": ParamSpec("int", 0, 2**31 - 1)},
}


# -- loading a policy and its imports ------------------------------------------------------------
@dataclass
class Loaded:
    """Every module of a policy, imports first, and the texts its diagnostics point into."""

    main: A.Module
    modules: list[A.Module]
    sources: SourceMap
    diagnostics: list[Diagnostic]
    text: str


def load(path: str | Path, text: str | None = None) -> Loaded:
    """Parse a policy file and, depth first, the files it imports (each once)."""
    main_name = str(path)
    sources = SourceMap()
    diags: list[Diagnostic] = []
    modules: list[A.Module] = []
    seen: set[Path] = set()

    def visit(name: str, src: str, stack: tuple[Path, ...]) -> A.Module:
        sources.add(name, src)
        module, d = parse_module(src, name)
        diags.extend(d)
        here = Path(name).resolve()
        for stmt in module.statements:
            if not isinstance(stmt, A.Import):
                continue
            target_name = str(Path(name).parent / stmt.path.value)
            target = Path(target_name).resolve()
            if target in stack or target == here:
                chain = " -> ".join(p.name for p in (*stack, here, target))
                diags.append(Diagnostic("error", f"import cycle: {chain}", stmt.span, code="import"))
                continue
            if target in seen:
                continue
            try:
                imported_text = read_source(target_name)
            except Exception as e:  # a LabelQLError with a plain message
                diags.append(
                    Diagnostic(
                        "error", f"cannot import {stmt.path.value!r}: {e}", stmt.path.span, code="import"
                    )
                )
                continue
            seen.add(target)
            visit(target_name, imported_text, (*stack, here))
        modules.append(module)
        return module

    src = text if text is not None else read_source(path)
    seen.add(Path(main_name).resolve())
    main = visit(main_name, src, ())
    return Loaded(main, modules, sources, diags, src)


def check_file(path: str | Path, text: str | None = None) -> P.CheckedPolicy:
    """Load, parse and check a policy; raise :class:`DiagnosticError` on any error."""
    return _checked(path, text)[1]


def _checked(path: str | Path, text: str | None = None) -> tuple[Checker, P.CheckedPolicy]:
    """The checker that checked the policy (it knows the policy's names), and the checked policy."""
    with no_gc():
        loaded = load(path, text)
        if any(d.severity == "error" for d in loaded.diagnostics):
            raise DiagnosticError(_capped(loaded.diagnostics), loaded.sources)
        checker = Checker(loaded)
        return checker, checker.check()


def expect_file(path: str | Path) -> Path:
    """Where a policy's separate expectations live: ``cats_dogs.lql`` -> ``cats_dogs.expect.lql``."""
    p = Path(path)
    return p.with_name(p.name.removesuffix(".lql") + ".expect.lql")


def check_with_expectations(path: str | Path) -> tuple[P.CheckedPolicy, list[P.Expectation], Path]:
    """A policy, its ``expect`` statements and those of its ``.expect.lql`` file (only ``expect``
    statements belong there), all checked against the policy."""
    checker, policy = _checked(path)
    loaded = checker.loaded
    side = expect_file(path)
    expectations = list(policy.expectations)
    if side.is_file():
        text = read_source(side)
        loaded.sources.add(str(side), text)
        module, diags = parse_module(text, str(side))
        checker.diags = [d for d in diags if d.severity == "error"]
        for s in module.statements:
            if not isinstance(s, A.Expect):
                checker.error(
                    f"only expect statements belong in {side.name}",
                    s.span,
                    hint=f"move this into {Path(path).name}",
                    code="expect",
                )
        stmts = [s for s in module.statements if isinstance(s, A.Expect)]
        expectations += checker.expectations(stmts, list(policy.rules))
        errors = [d for d in checker.diags if d.severity == "error"]
        if errors:
            raise DiagnosticError(_capped(sorted(errors, key=_order)), loaded.sources)
    return policy, expectations, side


def check_text(text: str, file: str = "<policy>") -> P.CheckedPolicy:
    return check_file(file, text)


def _capped(diags: list[Diagnostic]) -> list[Diagnostic]:
    errors = [d for d in diags if d.severity == "error"]
    if len(errors) <= MAX_ERRORS:
        return diags
    kept = errors[:MAX_ERRORS]
    return [
        *kept,
        Diagnostic("error", f"too many errors ({len(errors)}); showing the first {MAX_ERRORS}", code="limit"),
    ]


# -- the checker ---------------------------------------------------------------------------------
@dataclass
class _Def:
    kind: str
    name: str
    span: Span
    node: Any
    imported: bool


@dataclass
class _Ctx:
    """Where an expression is typed: for messages and for let-cycle tracking."""

    let_stack: tuple[str, ...] = ()
    uses: set[tuple[str, str]] = field(default_factory=set)


class Checker:
    """Checks the modules of one policy; use :func:`check_file` rather than this class directly."""

    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded
        self.diags: list[Diagnostic] = []
        self.defs: dict[str, _Def] = {}
        self.labels: dict[str, Span] = {}
        self.cluster_sets: dict[str, A.Clusters] = {}
        self.let_types: dict[str, str | None] = {}
        self.let_exprs: dict[str, P.TExpr | None] = {}
        self.let_order: list[str] = []
        self.uses: set[tuple[str, str]] = set()
        self.default_space: str | None = None
        self.spaces: dict[str, P.SpaceDef] = {}
        self.projections: dict[str, P.ProjectionDef] = {}

    # diagnostics
    def error(self, msg: str, span: Span | None, hint: str | None = None, code: str = "check") -> None:
        self.diags.append(Diagnostic("error", msg, span, hint, code))

    def warn(self, msg: str, span: Span | None, hint: str | None = None, code: str = "warning") -> None:
        self.diags.append(Diagnostic("warning", msg, span, hint, code))

    # driver
    def check(self) -> P.CheckedPolicy:
        main_file = self.loaded.main.file
        stmts = [(s, m.file != main_file) for m in self.loaded.modules for s in m.statements]
        self._collect(stmts, main_file)
        self._resolve_spaces()
        anchors = self._anchors()
        self._resolve_projections()
        cluster_sets = self._cluster_sets()
        lets = self._lets()
        rules = self._rules(stmts)
        slices = [self._slice(s) for s, _ in stmts if isinstance(s, A.Slice)]
        expectations = self.expectations(
            [s for s, imported in stmts if isinstance(s, A.Expect) and not imported], rules
        )
        if any(d.severity == "error" for d in self.diags):
            # Warnings are left out here: with errors around, most would be their echoes.
            errors = sorted((d for d in self.diags if d.severity == "error"), key=_order)
            raise DiagnosticError(_capped(errors), self.loaded.sources)
        self._warnings(rules, lets)
        warnings = sorted((d for d in self.diags if d.severity == "warning"), key=_order)
        return P.CheckedPolicy(
            path=main_file,
            source_hash=hashlib.sha256(self.loaded.text.encode()).hexdigest(),
            labels=tuple(self.labels),
            spaces=tuple(self.spaces.values()),
            default_space=self.default_space,
            projections=tuple(self.projections.values()),
            cluster_sets=tuple(cluster_sets),
            anchors=tuple(anchors),
            lets=tuple(lets),
            rules=tuple(rules),
            slices=tuple(s for s in slices if s is not None),
            imports=tuple(m.file for m in self.loaded.modules if m.file != main_file),
            expectations=tuple(expectations),
            warnings=tuple(warnings),
            sources=self.loaded.sources,
        )

    # -- definitions -----------------------------------------------------------------------------
    def _define(self, kind: str, name: A.Name, node: Any, imported: bool) -> None:
        prev = self.defs.get(name.value)
        if prev is not None:
            what = "the same" if prev.kind == kind else f"a different kind of ({prev.kind})"
            self.error(
                f"'{name.value}' is already defined as {'a ' + kind if prev.kind == kind else what} "
                f"at {prev.span}",
                name.span,
                hint="spaces, projections, anchors, lets and slices share one namespace; rename one",
                code="duplicate",
            )
            return
        self.defs[name.value] = _Def(kind, name.value, name.span, node, imported)

    def _collect(self, stmts: list[tuple[A.Statement, bool]], main_file: str) -> None:
        first_space: tuple[str, bool] | None = None
        for s, imported in stmts:
            if isinstance(s, A.Labels):
                for n in s.names:
                    if n.value in self.labels:
                        self.error(f"label '{n.value}' is declared twice", n.span, code="duplicate")
                    else:
                        self.labels[n.value] = n.span
            elif isinstance(s, A.Embedding):
                self._define("embedding", s.name, s, imported)
                if first_space is None or (first_space[1] and not imported):
                    first_space = (s.name.value, imported)
            elif isinstance(s, A.Projection):
                self._define("projection", s.name, s, imported)
            elif isinstance(s, A.Anchors):
                self._define("anchors", s.name, s, imported)
            elif isinstance(s, A.Let):
                self._define("let", s.name, s, imported)
            elif isinstance(s, A.Slice):
                self._define("slice", s.name, s, imported)
            elif isinstance(s, A.Clusters):
                prev = self.cluster_sets.get(s.projection.value)
                if prev is not None:
                    self.error(
                        f"clusters for '{s.projection.value}' are already declared at {prev.span}",
                        s.span,
                        hint="name all of a projection's clusters in one statement",
                        code="duplicate",
                    )
                else:
                    self.cluster_sets[s.projection.value] = s
            elif isinstance(s, A.Rule):
                if imported:
                    self.error(
                        "rules cannot be imported",
                        s.span,
                        hint="an imported file shares definitions; move this rule into the policy "
                        "that uses it",
                        code="import",
                    )
            elif isinstance(s, A.Import | A.Expect):
                pass
            else:  # pragma: no cover - the parser only builds the statements above
                raise TypeError(f"unhandled statement {type(s).__name__}")
        # The main file's first embedding is the default; else the first one imported.
        self.default_space = first_space[0] if first_space else None

    def _params(self, args: tuple[A.Arg, ...], specs: dict[str, ParamSpec], owner: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for a in args:
            if a.name is None:
                self.error(
                    f"{owner} takes named parameters here",
                    a.span,
                    hint=f"write name=value, e.g. {next(iter(specs), 'x')}=...",
                    code="arity",
                )
                continue
            key = a.name.value
            spec = specs.get(key)
            if spec is None:
                hint = did_you_mean(key, specs) or (
                    f"parameters: {', '.join(specs)}" if specs else f"{owner} takes no parameters"
                )
                self.error(f"unknown parameter '{key}' for {owner}", a.name.span, hint=hint, code="parameter")
                continue
            if key in out:
                self.error(f"parameter '{key}' given twice", a.name.span, code="parameter")
                continue
            value = self._param_value(a.value, spec, f"{owner} parameter '{key}'")
            if value is not None:
                out[key] = value
        return out

    def _param_value(self, node: A.Expr, spec: ParamSpec, what: str) -> Any:
        if spec.kind in ("int", "float"):
            if not isinstance(node, A.Number):
                self.error(f"{what} must be a number", node.span, code="type")
                return None
            v: Any = node.value
            if spec.kind == "int":
                if not float(v).is_integer():
                    self.error(f"{what} must be a whole number, not {node.text}", node.span, code="type")
                    return None
                v = int(v)
            if (spec.low is not None and v < spec.low) or (spec.high is not None and v > spec.high):
                self.error(
                    f"{what} must lie in [{_num(spec.low)}, {_num(spec.high)}], not {node.text}",
                    node.span,
                    code="range",
                )
                return None
            return v
        if spec.kind == "bool":
            if isinstance(node, A.Ident) and node.name.lower() in BOOLEANS:
                return BOOLEANS[node.name.lower()]
            self.error(f"{what} must be true or false", node.span, code="type")
            return None
        if not isinstance(node, A.String):
            hint = f'write it as a string: "{node.name}"' if isinstance(node, A.Ident) else None
            self.error(f"{what} must be a string", node.span, hint=hint, code="type")
            return None
        if spec.choices and node.value not in spec.choices:
            self.error(
                f"{what} must be one of {', '.join(spec.choices)}",
                node.span,
                hint=did_you_mean(node.value, spec.choices),
                code="parameter",
            )
            return None
        return node.value

    def _resolve_spaces(self) -> None:
        for d in self.defs.values():
            if d.kind != "embedding":
                continue
            s: A.Embedding = d.node
            call = s.provider
            prov = call.func.value
            if prov not in PROVIDERS:
                self.error(
                    f"unknown embedding provider '{prov}'",
                    call.func.span,
                    hint=did_you_mean(prov, PROVIDERS) or f"providers: {', '.join(PROVIDERS)}",
                    code="function",
                )
                continue
            positional = [a for a in call.args if a.name is None]
            named = tuple(a for a in call.args if a.name is not None)
            params: dict[str, Any] = {}
            if prov == "open_clip":
                if not 1 <= len(positional) <= 2:
                    self.error(
                        "open_clip(model, pretrained) takes a model name and a pretrained tag",
                        call.span,
                        hint='e.g. open_clip("ViT-B-32", "laion2b_s34b_b79k") or '
                        'open_clip("ViT-B-32", checkpoint="weights.pt")',
                        code="arity",
                    )
                    continue
                params["model"] = self._param_value(positional[0].value, ParamSpec("str"), "open_clip model")
                if len(positional) == 2:
                    params["pretrained"] = self._param_value(
                        positional[1].value, ParamSpec("str"), "open_clip pretrained tag"
                    )
                n_errors = len(self.diags)
                params.update(self._params(named, PROVIDER_PARAMS["open_clip"], "open_clip"))
                if len(self.diags) > n_errors:
                    continue
                chosen = [k for k in ("pretrained", "checkpoint", "random_weights") if params.get(k)]
                if len(chosen) != 1:
                    self.error(
                        "open_clip needs exactly one source of weights: a pretrained tag, "
                        'checkpoint="path" or random_weights=true',
                        call.span,
                        code="arity",
                    )
                    continue
            elif prov == "simulated":
                if len(positional) != 1:
                    self.error(
                        'simulated takes a data set name: simulated("cats_dogs", seed=0)',
                        call.span,
                        code="arity",
                    )
                    continue
                params["model"] = self._param_value(
                    positional[0].value, ParamSpec("str", choices=("cats_dogs",)), "simulated data set"
                )
                params.update(self._params(named, PROVIDER_PARAMS["simulated"], "simulated"))
            else:
                if len(positional) != 1 or named:
                    sig = (
                        "sentence_transformer(name)"
                        if prov == "sentence_transformer"
                        else 'precomputed("space")'
                    )
                    self.error(f"{prov} takes one argument: {sig}", call.span, code="arity")
                    continue
                params["model" if prov == "sentence_transformer" else "space"] = self._param_value(
                    positional[0].value, ParamSpec("str"), f"{prov} argument"
                )
            if any(v is None for v in params.values()):
                continue
            self.spaces[d.name] = P.SpaceDef(
                d.name, prov, tuple(sorted(params.items())), d.name == self.default_space, s.span
            )

    def _anchors(self) -> list[P.AnchorSet]:
        out = []
        for d in self.defs.values():
            if d.kind != "anchors":
                continue
            s: A.Anchors = d.node
            keys: list[str] = []
            for k in s.keys:
                if not k.value.strip():
                    self.error("an anchor key cannot be empty", k.span, code="value")
                elif k.value in keys:
                    self.warn(f"anchor key {k.value!r} is listed twice", k.span, code="duplicate")
                else:
                    keys.append(k.value)
            out.append(P.AnchorSet(d.name, tuple(keys), s.span))
        return out

    def _space_ref(self, node: A.Expr, ctx: _Ctx, what: str) -> str | None:
        if not isinstance(node, A.Ident):
            self.error(f"{what} must name an embedding space", node.span, code="type")
            return None
        return self._lookup(node.name, node.span, "embedding", ctx)

    def _lookup(self, name: str, span: Span, kind: str, ctx: _Ctx) -> str | None:
        d = self.defs.get(name)
        if d is None or d.kind != kind:
            pool = [x.name for x in self.defs.values() if x.kind == kind]
            hint = did_you_mean(name, pool)
            if d is not None:
                hint = f"'{name}' is {_article(d.kind)}, not {_article(kind)}"
            elif hint is None and pool:
                hint = f"{kind} names: {', '.join(sorted(pool)[:8])}"
            elif hint is None:
                hint = f"declare it: {_example(kind)}"
            self.error(f"unknown {_kind_text(kind)} '{name}'", span, hint=hint, code="name")
            return None
        ctx.uses.add((kind, name))
        self.uses.add((kind, name))
        return name

    def _default_space(self, span: Span, fn: str, ctx: _Ctx) -> str | None:
        if self.default_space is None:
            self.error(
                f"{fn}() needs an embedding space, and the policy declares none",
                span,
                hint='declare one: embedding clip = open_clip("ViT-B-32", "laion2b_s34b_b79k")',
                code="name",
            )
            return None
        self.uses.add(("embedding", self.default_space))
        return self.default_space

    def _resolve_projections(self) -> None:
        ctx = _Ctx()
        for d in self.defs.values():
            if d.kind != "projection":
                continue
            s: A.Projection = d.node
            kind = s.method.func.value
            if kind not in PROJECTION_KINDS:
                self.error(
                    f"unknown projection '{kind}'",
                    s.method.func.span,
                    hint=did_you_mean(kind, PROJECTION_KINDS) or "projections: umap, tsne, pca",
                    code="function",
                )
                continue
            positional = [a for a in s.method.args if a.name is None]
            named = tuple(a for a in s.method.args if a.name is not None)
            if len(positional) > 1:
                self.error(
                    f"{kind}() takes one space and named parameters",
                    positional[1].span,
                    hint=f"e.g. {kind}(clip, seed=0)",
                    code="arity",
                )
                continue
            space = (
                self._space_ref(positional[0].value, ctx, f"{kind}()'s first argument")
                if positional
                else self._default_space(s.method.span, kind, ctx)
            )
            params = self._params(named, PROJECTION_PARAMS[kind], f"{kind}()")
            if space is not None:
                self.projections[d.name] = P.ProjectionDef(
                    d.name, kind, space, tuple(sorted(params.items())), s.span
                )

    def _cluster_sets(self) -> list[P.ClusterSetDef]:
        out = []
        ctx = _Ctx()
        for proj, s in self.cluster_sets.items():
            if self._lookup(proj, s.projection.span, "projection", ctx) is None:
                continue
            params = self._params(s.params, CLUSTER_PARAMS, "clusters")
            specs: list[P.ClusterSpec] = []
            for c in s.clusters:
                if c.name.value in [x.name for x in specs]:
                    self.error(
                        f"cluster name '{c.name.value}' is given twice for '{proj}'",
                        c.name.span,
                        hint="one name already covers every cluster its prompt or anchors select",
                        code="duplicate",
                    )
                    continue
                spec = self._cluster_namer(c, proj, ctx)
                if spec is not None:
                    specs.append(spec)
            out.append(P.ClusterSetDef(proj, tuple(sorted(params.items())), tuple(specs), s.span))
        return out

    def _cluster_namer(self, c: A.ClusterDef, proj: str, ctx: _Ctx) -> P.ClusterSpec | None:
        fn = c.namer.func.value
        args = c.namer.args
        space = self.projections[proj].space if proj in self.projections else self.default_space
        if any(a.name is not None for a in args):
            self.error(f"{fn}() takes no named parameters here", c.namer.span, code="arity")
            return None
        if fn == "text":
            if len(args) == 2:
                space = self._space_ref(args[0].value, ctx, "text()'s first argument")
                args = args[1:]
            if len(args) != 1 or not isinstance(args[0].value, A.String):
                self.error('a cluster is named by text("prompt") or anchors(set)', c.namer.span, code="arity")
                return None
            if space is None:
                return None
            return P.ClusterSpec(c.name.value, "text", args[0].value.value, None, space, c.span)
        if fn == "anchors":
            if len(args) != 1 or not isinstance(args[0].value, A.Ident):
                self.error("anchors() takes the name of an anchors set", c.namer.span, code="arity")
                return None
            aname = self._lookup(args[0].value.name, args[0].span, "anchors", ctx)
            if aname is None or space is None:
                return None
            return P.ClusterSpec(c.name.value, "anchors", None, aname, space, c.span)
        self.error(
            f"unknown cluster namer '{fn}'",
            c.namer.func.span,
            hint=did_you_mean(fn, ("text", "anchors")) or 'use text("prompt") or anchors(set)',
            code="function",
        )
        return None

    # -- lets ------------------------------------------------------------------------------------
    def _lets(self) -> list[P.LetDef]:
        for d in self.defs.values():
            if d.kind == "let":
                self._let_type(d.name, _Ctx())
        out = []
        for name in self.let_order:
            expr = self.let_exprs.get(name)
            if expr is not None:
                out.append(P.LetDef(name, expr, self.defs[name].node.span))
        return out

    def _let_type(self, name: str, ctx: _Ctx) -> str | None:
        if name in self.let_types:
            return self.let_types[name]
        if name in ctx.let_stack:
            chain = " -> ".join((*ctx.let_stack[ctx.let_stack.index(name) :], name))
            self.error(
                f"let cycle: {chain}",
                self.defs[name].span,
                hint="a let cannot depend on itself, directly or through other lets",
                code="cycle",
            )
            for n in ctx.let_stack[ctx.let_stack.index(name) :]:
                self.let_types[n] = None
            return None
        node: A.Let = self.defs[name].node
        inner = _Ctx(let_stack=(*ctx.let_stack, name))
        expr = self.expr(node.expr, inner)
        if name in self.let_types:  # set to None while resolving a cycle through us
            return None
        self.let_types[name] = expr.type if expr is not None else None
        self.let_exprs[name] = expr
        self.let_order.append(name)
        return self.let_types[name]

    # -- rules and slices ------------------------------------------------------------------------
    def _rules(self, stmts: list[tuple[A.Statement, bool]]) -> list[P.RuleDef]:
        out: list[P.RuleDef] = []
        names: dict[str, Span] = {}
        for s, imported in stmts:
            if not isinstance(s, A.Rule) or imported:
                continue
            label = s.label.value
            if label not in self.labels:
                hint = did_you_mean(label, self.labels) or (
                    f"labels: {', '.join(self.labels)}"
                    if self.labels
                    else "declare labels first: labels cat, dog"
                )
                self.error(f"unknown label '{label}'", s.label.span, hint=hint, code="name")
            route = s.route.value.lower()
            if route not in P.ROUTES:
                hint = (
                    "rows that no rule takes go to manual by themselves"
                    if route == "manual"
                    else did_you_mean(route, P.ROUTES) or "a route is done or review"
                )
                self.error(f"unknown route '{s.route.value}'", s.route.span, hint=hint, code="name")
            if s.name is not None:
                rname = s.name.value
                if rname in names:
                    self.error(
                        f"rule '{rname}' is already defined at {names[rname]}", s.name.span, code="duplicate"
                    )
                names[rname] = s.name.span
            else:
                rname = f"{Path(s.span.file).name}:{s.span.line}"
            cond = self.condition(s.condition, _Ctx(), "a rule's condition")
            if cond is not None and label in self.labels and route in P.ROUTES:
                out.append(P.RuleDef(rname, label, route, cond, len(out), s.name is not None, s.span))
        return out

    def expectations(self, stmts: list[A.Expect], rules: list[P.RuleDef]) -> list[P.Expectation]:
        """Check ``expect`` statements against the policy's routes, labels and rule names."""
        from labelql.formatter import statement

        out = []
        rule_names = {r.name for r in rules if r.named}
        for s in stmts:
            text = " ".join(statement(s))
            if s.label is not None or s.route is not None:
                if not isinstance(s.expr, A.String):
                    self.error(
                        "a row expectation names the row by its key, as a string",
                        s.expr.span,
                        hint='expect "cat_vs_dog_12" -> cat done',
                        code="expect",
                    )
                    continue
                names = [n for n in (s.label, s.route) if n is not None]
                label = route = None
                if len(names) == 1 and names[0].value.lower() in (*P.ROUTES, "manual"):
                    route = names[0].value.lower()
                else:
                    label = names[0].value
                    if label not in self.labels:
                        hint = did_you_mean(label, self.labels) or f"labels: {', '.join(self.labels)}"
                        self.error(f"unknown label '{label}'", names[0].span, hint=hint, code="name")
                        continue
                    if len(names) > 1:
                        route = names[1].value.lower()
                        if route not in (*P.ROUTES, "manual"):
                            self.error(
                                f"unknown route '{names[1].value}'",
                                names[1].span,
                                hint="done, review or manual",
                                code="name",
                            )
                            continue
                out.append(P.Expectation(text, key=s.expr.value, label=label, route=route, span=s.span))
                continue
            e = s.expr
            if not (
                isinstance(e, A.Compare)
                and isinstance(e.left, A.Call)
                and isinstance(e.right, A.Number | A.Unary)
                and len(e.left.args) == 1
                and e.left.args[0].name is None
                and isinstance(e.left.args[0].value, A.Ident)
            ):
                self.error(
                    "an expectation compares a metric with a number",
                    e.span,
                    hint="e.g. expect coverage(done) >= 0.85, expect accuracy(review) > 0.98",
                    code="expect",
                )
                continue
            metric = e.left.func.value
            if metric not in METRICS:
                self.error(
                    f"unknown metric '{metric}'",
                    e.left.func.span,
                    hint=did_you_mean(metric, METRICS) or f"metrics: {', '.join(METRICS)}",
                    code="expect",
                )
                continue
            arg = e.left.args[0].value
            assert isinstance(arg, A.Ident)
            target = arg.name.lower() if arg.name.lower() in (*P.ROUTES, "manual") else arg.name
            if target not in (*P.ROUTES, "manual") and target not in rule_names:
                self.error(
                    f"'{arg.name}' is neither a route nor a named rule",
                    arg.span,
                    hint=did_you_mean(arg.name, [*P.ROUTES, "manual", *rule_names])
                    or "routes: done, review, manual; name a rule with `rule NAME: ...` to test it",
                    code="expect",
                )
                continue
            if metric == "errors" and target == "manual":
                self.error("manual rows have no label, so no errors", arg.span, code="expect")
                continue
            sign = -1.0 if isinstance(e.right, A.Unary) and e.right.op == "-" else 1.0
            number = e.right.operand if isinstance(e.right, A.Unary) else e.right
            if not isinstance(number, A.Number):
                self.error("an expectation compares with a number", e.right.span, code="expect")
                continue
            out.append(P.Expectation(text, metric, target, e.op, sign * number.value, span=s.span))
        return out

    def _slice(self, s: A.Slice) -> P.SliceDef | None:
        cond = self.condition(s.expr, _Ctx(), "a slice")
        return P.SliceDef(s.name.value, cond, s.span) if cond is not None else None

    def condition(self, node: A.Expr, ctx: _Ctx, what: str) -> P.TExpr | None:
        e = self.expr(node, ctx)
        if e is not None and e.type != P.BOOL:
            hint = 'compare it, e.g. text("photo of a dog") > 0.6' if e.type in P.NUMERIC else None
            self.error(
                f"{what} must be true or false, but this is {_type_text(e.type)}",
                node.span,
                hint=hint,
                code="type",
            )
            return None
        return e

    # -- expressions -----------------------------------------------------------------------------
    def expr(self, node: A.Expr, ctx: _Ctx) -> P.TExpr | None:
        """Type one expression; None when an error was reported (callers stay quiet then)."""
        handler = self._EXPR.get(type(node))
        if handler is None:  # pragma: no cover - every AST expression type has a handler
            raise TypeError(f"unhandled expression {type(node).__name__}")
        return handler(self, node, ctx)

    def _number(self, n: A.Number, ctx: _Ctx) -> P.TExpr:
        return P.Const(n.value, P.NUMBER, span=n.span)

    def _string(self, n: A.String, ctx: _Ctx) -> P.TExpr:
        return P.Const(n.value, P.STRING, span=n.span)

    def _interval(self, n: A.Interval, ctx: _Ctx) -> P.TExpr | None:
        if not _INTERVAL.match(n.text.value):
            self.error(
                f"cannot read interval {n.text.value!r}",
                n.text.span,
                hint="write e.g. interval '7 days' or interval '12 hours'",
                code="value",
            )
            return None
        return P.IntervalConst(n.text.value.strip(), span=n.span)

    def _ident(self, n: A.Ident, ctx: _Ctx) -> P.TExpr | None:
        name = n.name
        d = self.defs.get(name)
        if d is not None and d.kind == "let":
            ctx.uses.add(("let", name))
            self.uses.add(("let", name))
            t = self._let_type(name, ctx)
            return P.LetRef(name, t, span=n.span) if t is not None else None
        if name in BUILTINS:
            return P.Builtin(name, span=n.span)
        if name.lower() in BOOLEANS:
            return P.Const(BOOLEANS[name.lower()], P.BOOL, span=n.span)
        if d is not None:
            uses = {
                "anchors": "use it in similar(...) or near(...)",
                "embedding": "use it as text(space, ...)'s first argument",
                "projection": "use it as cluster(projection)",
                "slice": "a slice cannot be used inside a condition; copy its condition into a let",
            }
            self.error(
                f"'{name}' is {_article(d.kind)}, not a value", n.span, hint=uses.get(d.kind), code="type"
            )
            return None
        owners = [p for p, s in self.cluster_sets.items() if name in [c.name.value for c in s.clusters]]
        if owners:
            self.error(
                f"'{name}' is a cluster name and can only be compared with cluster({owners[0]})",
                n.span,
                hint=f"write cluster({owners[0]}) = {name}",
                code="type",
            )
            return None
        lets = [x.name for x in self.defs.values() if x.kind == "let"]
        hint = did_you_mean(name, [*lets, *BUILTINS, *FUNCTIONS])
        if hint and any(hint.endswith(f"'{f}'?") for f in FUNCTIONS):
            hint += " (functions are called with parentheses)"
        if name.lower() in ("null", "none"):
            hint = "cluster(p) = null is not supported; use NOT cluster(p) IN (...)"
        self.error(f"unknown name '{name}'", n.span, hint=hint, code="name")
        return None

    def _unary(self, n: A.Unary, ctx: _Ctx) -> P.TExpr | None:
        e = self.expr(n.operand, ctx)
        if e is None:
            return None
        if e.type not in P.NUMERIC:
            self.error(f"'{n.op}' needs a number, not {_type_text(e.type)}", n.span, code="type")
            return None
        return e if n.op == "+" else P.Neg(e, span=n.span)

    def _binop(self, n: A.BinOp, ctx: _Ctx) -> P.TExpr | None:
        left, right = self.expr(n.left, ctx), self.expr(n.right, ctx)
        if left is None or right is None:
            return None
        lt, rt = left.type, right.type
        result: str | None = None
        if lt in P.NUMERIC and rt in P.NUMERIC:
            result = P.FLOAT
        elif (n.op in "+-" and (lt, rt) == (P.TIMESTAMP, P.INTERVAL)) or (
            n.op == "+" and (lt, rt) == (P.INTERVAL, P.TIMESTAMP)
        ):
            result = P.TIMESTAMP
        elif n.op == "-" and lt == P.TIMESTAMP and rt == P.TIMESTAMP:
            result = P.INTERVAL
        elif P.ANY in (lt, rt) and {lt, rt} <= P.NUMERIC | {P.ANY}:
            result = P.FLOAT
        if result is None:
            self.error(f"cannot apply '{n.op}' to {_type_text(lt)} and {_type_text(rt)}", n.span, code="type")
            return None
        return P.Arith(n.op, left, right, result, span=n.span)

    def _logic(self, n: A.And | A.Or, ctx: _Ctx) -> P.TExpr | None:
        word = "AND" if isinstance(n, A.And) else "OR"
        parts = [self.condition(o, ctx, f"each side of {word}") for o in n.operands]
        if any(p is None for p in parts):
            return None
        ops = tuple(p for p in parts if p is not None)
        return P.AllOf(ops, span=n.span) if isinstance(n, A.And) else P.AnyOf(ops, span=n.span)

    def _not(self, n: A.Not, ctx: _Ctx) -> P.TExpr | None:
        e = self.condition(n.operand, ctx, "NOT's operand")
        return P.Negate(e, span=n.span) if e is not None else None

    def _cluster_side(self, proj_expr: P.ClusterOf, other: A.Expr) -> P.TExpr | None:
        proj = proj_expr.projection
        declared = (
            [c.name.value for c in self.cluster_sets[proj].clusters] if proj in self.cluster_sets else []
        )
        if isinstance(other, A.Ident):
            if other.name in declared:
                return P.ClusterName(proj, other.name, span=other.span)
            hint = did_you_mean(other.name, declared) or (
                f"clusters of {proj}: {', '.join(declared)}"
                if declared
                else f'declare them: clusters {proj}: {other.name} = text("...")'
            )
            self.error(f"'{other.name}' is not a cluster of {proj}", other.span, hint=hint, code="name")
            return None
        if isinstance(other, A.String):
            self.error(
                f"cluster names are written bare: {other.value}, not a string",
                other.span,
                hint=f"write cluster({proj}) = {other.value}",
                code="type",
            )
            return None
        self.error(
            f"cluster({proj}) can only be compared with one of its cluster names",
            other.span,
            hint=f"clusters of {proj}: {', '.join(declared)}" if declared else None,
            code="type",
        )
        return None

    def _compare(self, n: A.Compare, ctx: _Ctx) -> P.TExpr | None:
        left_node, right_node, op = n.left, n.right, n.op
        if _is_cluster_call(right_node) and not _is_cluster_call(left_node):
            left_node, right_node = right_node, left_node
        left = self.expr(left_node, ctx)
        if left is None:
            return None
        if isinstance(left, P.ClusterOf):
            if op not in ("=", "!="):
                self.error(
                    f"cluster({left.projection}) is a cluster name: compare it with = or !=, not {op}",
                    n.span,
                    code="type",
                )
                return None
            right = self._cluster_side(left, right_node)
            return P.Cmp(op, left, right, span=n.span) if right is not None else None
        right = self.expr(right_node, ctx)
        if right is None:
            return None
        if not self._comparable(left, right, op, n.span):
            return None
        self._check_cosine(left, right)
        self._check_cosine(right, left)
        return P.Cmp(op, left, right, span=n.span)

    def _comparable(self, left: P.TExpr, right: P.TExpr, op: str, span: Span) -> bool:
        lt, rt = left.type, right.type
        if P.ANY in (lt, rt):
            return True
        ok = (lt in P.NUMERIC and rt in P.NUMERIC) or lt == rt
        if ok and lt == P.BOOL and op not in ("=", "!="):
            ok = False
        if ok:
            return True
        hint = None
        for side in (left, right):
            if isinstance(side, P.Const) and side.kind == P.STRING and _looks_numeric(side.value):
                hint = f"write the number without quotes: {side.value}"
        self.error(f"cannot compare {_type_text(lt)} with {_type_text(rt)}", span, hint=hint, code="type")
        return False

    def _check_cosine(self, score: P.TExpr, bound: P.TExpr) -> None:
        if (
            isinstance(score, P.TextScore | P.SimilarScore)
            and isinstance(bound, P.Const)
            and bound.kind == P.NUMBER
        ) and not -1.0 <= bound.value <= 1.0:
            self.error(
                f"threshold {_num(bound.value)} is outside [-1, 1], where cosine similarities lie",
                bound.span,
                hint="a similarity threshold is between -1 and 1, e.g. 0.61",
                code="range",
            )

    def _between(self, n: A.Between, ctx: _Ctx) -> P.TExpr | None:
        operand, low, high = self.expr(n.operand, ctx), self.expr(n.low, ctx), self.expr(n.high, ctx)
        if operand is None or low is None or high is None:
            return None
        if operand.type in (P.CLUSTER, P.BOOL):
            self.error(
                f"BETWEEN needs a number or time, not {_type_text(operand.type)}", n.operand.span, code="type"
            )
            return None
        if not (
            self._comparable(operand, low, ">=", n.low.span)
            and self._comparable(operand, high, "<=", n.high.span)
        ):
            return None
        self._check_cosine(operand, low)
        self._check_cosine(operand, high)
        return P.Range(operand, low, high, n.negated, span=n.span)

    def _in(self, n: A.InList, ctx: _Ctx) -> P.TExpr | None:
        operand = self.expr(n.operand, ctx)
        if operand is None:
            return None
        items: list[P.TExpr | None]
        if isinstance(operand, P.ClusterOf):
            items = [self._cluster_side(operand, i) for i in n.items]
        else:
            items = [self.expr(i, ctx) for i in n.items]
            for item, node in zip(items, n.items, strict=True):
                if item is not None and not self._comparable(operand, item, "=", node.span):
                    return None
        if any(i is None for i in items):
            return None
        return P.Member(operand, tuple(i for i in items if i is not None), n.negated, span=n.span)

    def _call(self, n: A.Call, ctx: _Ctx) -> P.TExpr | None:
        fn = n.func.value
        if fn not in FUNCTIONS:
            if fn == "anchors":
                hint = "anchors(set) names clusters; in a condition use similar(set) or near(set, threshold)"
            elif fn in PROVIDERS or fn in PROJECTION_KINDS:
                hint = f"{fn}(...) belongs in an embedding or projection statement"
            else:
                hint = did_you_mean(fn, FUNCTIONS) or f"functions: {', '.join(FUNCTIONS)}"
            self.error(f"unknown function '{fn}'", n.func.span, hint=hint, code="function")
            return None
        named = [a for a in n.args if a.name is not None]
        if named:
            self.error(f"{fn}() takes no named parameters", named[0].span, code="arity")
            return None
        args = [a.value for a in n.args]
        return self._CALLS[fn](self, n, args, ctx)

    def _split_space(
        self, n: A.Call, args: list[A.Expr], arity: int, ctx: _Ctx
    ) -> tuple[str | None, list[A.Expr]]:
        """Functions take an optional leading space argument: strip and resolve it."""
        fn = n.func.value
        if len(args) == arity + 1:
            return self._space_ref(args[0], ctx, f"{fn}()'s first argument"), args[1:]
        return self._default_space(n.span, fn, ctx), args

    def _fn_text(self, n: A.Call, args: list[A.Expr], ctx: _Ctx) -> P.TExpr | None:
        if not 1 <= len(args) <= 2:
            self.error(
                f'text() takes 1 or 2 arguments ([space,] "prompt"), not {len(args)}', n.span, code="arity"
            )
            return None
        space, rest = self._split_space(n, args, 1, ctx)
        prompt = rest[0]
        if not isinstance(prompt, A.String):
            self.error(
                "text()'s prompt must be a string",
                prompt.span,
                hint=f'write text("{prompt.name}")' if isinstance(prompt, A.Ident) else None,
                code="type",
            )
            return None
        if not prompt.value.strip():
            self.error("text()'s prompt is empty", prompt.span, code="value")
            return None
        return P.TextScore(space, prompt.value, span=n.span) if space else None

    def _anchor_arg(
        self, node: A.Expr, fn: str, ctx: _Ctx, allow_key: bool
    ) -> tuple[str | None, tuple[str, ...]] | None:
        if isinstance(node, A.String) and allow_key:
            return None, (node.value,)
        if not isinstance(node, A.Ident):
            self.error(
                f"{fn}() needs an anchors set{' or a row key' if allow_key else ''}", node.span, code="type"
            )
            return None
        name = self._lookup(node.name, node.span, "anchors", ctx)
        if name is None:
            return None
        keys = tuple(dict.fromkeys(k.value for k in self.defs[name].node.keys))
        return name, keys

    def _fn_similar(self, n: A.Call, args: list[A.Expr], ctx: _Ctx) -> P.TExpr | None:
        if not 1 <= len(args) <= 2:
            self.error(
                f"similar() takes 1 or 2 arguments ([space,] anchors), not {len(args)}", n.span, code="arity"
            )
            return None
        space, rest = self._split_space(n, args, 1, ctx)
        anchors = self._anchor_arg(rest[0], "similar", ctx, allow_key=True)
        if anchors is None or space is None:
            return None
        return P.SimilarScore(space, anchors[0], anchors[1], span=n.span)

    def _fn_near(self, n: A.Call, args: list[A.Expr], ctx: _Ctx) -> P.TExpr | None:
        if not 2 <= len(args) <= 3:
            self.error(
                f"near() takes 2 or 3 arguments ([space,] anchors, threshold), not {len(args)}",
                n.span,
                code="arity",
            )
            return None
        space, rest = self._split_space(n, args, 2, ctx)
        anchors = self._anchor_arg(rest[0], "near", ctx, allow_key=False)
        thr = rest[1]
        if not isinstance(thr, A.Number):
            self.error("near()'s threshold must be a number", thr.span, code="type")
            return None
        if not -1.0 <= thr.value <= 1.0:
            self.error(
                f"threshold {thr.text} is outside [-1, 1], where cosine similarities lie",
                thr.span,
                hint="e.g. near(dog_examples, 0.895)",
                code="range",
            )
            return None
        if anchors is None or space is None or anchors[0] is None:
            return None
        return P.NearCount(space, anchors[0], anchors[1], thr.value, span=n.span)

    def _fn_cluster(self, n: A.Call, args: list[A.Expr], ctx: _Ctx) -> P.TExpr | None:
        if len(args) != 1 or not isinstance(args[0], A.Ident):
            self.error("cluster() takes the name of a projection, e.g. cluster(umap)", n.span, code="arity")
            return None
        proj = self._lookup(args[0].name, args[0].span, "projection", ctx)
        return P.ClusterOf(proj, span=n.span) if proj else None

    def _fn_meta(self, n: A.Call, args: list[A.Expr], ctx: _Ctx) -> P.TExpr | None:
        if len(args) != 1 or not isinstance(args[0], A.String):
            self.error('meta() takes one field name as a string, e.g. meta("camera")', n.span, code="arity")
            return None
        return P.MetaField(args[0].value, span=n.span)

    def _fn_now(self, n: A.Call, args: list[A.Expr], ctx: _Ctx) -> P.TExpr | None:
        if args:
            self.error("now() takes no arguments", n.span, code="arity")
            return None
        return P.Builtin("now", span=n.span)

    _CALLS: ClassVar[dict[str, Callable[[Checker, A.Call, list[A.Expr], _Ctx], P.TExpr | None]]] = {
        "text": _fn_text,
        "similar": _fn_similar,
        "near": _fn_near,
        "cluster": _fn_cluster,
        "meta": _fn_meta,
        "now": _fn_now,
    }
    _EXPR: ClassVar[dict[type, Callable[[Checker, Any, _Ctx], P.TExpr | None]]] = {
        A.Number: _number,
        A.String: _string,
        A.Interval: _interval,
        A.Ident: _ident,
        A.Unary: _unary,
        A.BinOp: _binop,
        A.And: _logic,
        A.Or: _logic,
        A.Not: _not,
        A.Compare: _compare,
        A.Between: _between,
        A.InList: _in,
        A.Call: _call,
    }

    # -- warnings --------------------------------------------------------------------------------
    def _warnings(self, rules: list[P.RuleDef], lets: list[P.LetDef]) -> None:
        let_map = {x.name: x.expr for x in lets}
        seen: dict[tuple[str, str, str], P.RuleDef] = {}
        for r in rules:
            why = never_matches(r.condition, let_map)
            if why:
                self.warn(f"rule {r.name} can never match: {why}", r.condition.span, code="never-matches")
            key = (r.label, r.route, canonical(r.condition))
            if key in seen:
                self.warn(
                    f"rule {r.name} duplicates rule {seen[key].name}",
                    r.span,
                    hint="delete one of them",
                    code="duplicate-rule",
                )
            else:
                seen[key] = r
        for d in self.defs.values():
            if d.imported or d.kind == "slice":
                continue
            if (d.kind, d.name) not in self.uses:
                self.warn(f"{_kind_text(d.kind)} '{d.name}' is never used", d.span, code="unused")
        labelled = {r.label for r in rules}
        for label, span in self.labels.items():
            if label not in labelled and span.file == self.loaded.main.file:
                self.warn(f"label '{label}' has no rule: its rows will all go to manual", span, code="unused")


def _order(d: Diagnostic) -> tuple[str, int, int]:
    return (d.span.file, d.span.line, d.span.col) if d.span else ("", 0, 0)


def _is_cluster_call(node: A.Expr) -> bool:
    return isinstance(node, A.Call) and node.func.value == "cluster"


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _num(v: float | None) -> str:
    if v is None:
        return "inf"
    return str(int(v)) if float(v).is_integer() else repr(v)


def _type_text(t: str) -> str:
    return {
        P.FLOAT: "a score (number)",
        P.INT: "a count (number)",
        P.NUMBER: "a number",
        P.BOOL: "a condition",
        P.STRING: "a string",
        P.CLUSTER: "a cluster name",
        P.TIMESTAMP: "a time",
        P.INTERVAL: "an interval",
        P.ANY: "a metadata value",
    }.get(t, t)


def _kind_text(kind: str) -> str:
    return {"embedding": "embedding space", "anchors": "anchors set"}.get(kind, kind)


def _article(kind: str) -> str:
    text = _kind_text(kind)
    return ("an " if text[0] in "aeiou" else "a ") + text


def _example(kind: str) -> str:
    return {
        "embedding": 'embedding clip = open_clip("ViT-B-32", "laion2b_s34b_b79k")',
        "projection": "projection umap = umap(clip, seed=0)",
        "anchors": 'anchors dog_examples = "key1", "key2"',
        "let": 'let high = text("photo of a dog") > 0.61',
    }.get(kind, kind)


# -- static analysis of conditions -------------------------------------------------------------
def canonical(e: P.TExpr) -> str:
    """A text form equal for conditions that differ only in the order of AND / OR operands."""
    if isinstance(e, P.AllOf | P.AnyOf):
        word = "AND" if isinstance(e, P.AllOf) else "OR"
        return f"{word}(" + ",".join(sorted(canonical(o) for o in e.operands)) + ")"
    if isinstance(e, P.Negate):
        return f"NOT({canonical(e.operand)})"
    return repr(e)


_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "!=": "!="}


@dataclass
class _Bounds:
    lo: float = -math.inf
    lo_incl: bool = True
    hi: float = math.inf
    hi_incl: bool = True
    eq: set[Any] = field(default_factory=set)
    ne: set[Any] = field(default_factory=set)

    def add(self, op: str, v: Any) -> None:
        if op == "=":
            self.eq.add(v)
            if isinstance(v, int | float):
                self.add(">=", v)
                self.add("<=", v)
        elif op == "!=":
            self.ne.add(v)
        elif op in (">", ">="):
            if v > self.lo or (v == self.lo and op == ">"):
                self.lo, self.lo_incl = v, op == ">="
        elif op in ("<", "<=") and (v < self.hi or (v == self.hi and op == "<")):
            self.hi, self.hi_incl = v, op == "<="

    def empty(self) -> bool:
        if len(self.eq) > 1 or (self.eq & self.ne):
            return True
        if self.lo > self.hi:
            return True
        return self.lo == self.hi and not (self.lo_incl and self.hi_incl)


def _atoms(e: P.TExpr, lets: dict[str, P.TExpr]) -> list[tuple[str, str, Any, P.TExpr]] | None:
    """(signal key, op, constant) for an atomic comparison of a signal with a constant."""
    if isinstance(e, P.LetRef) and e.name in lets:
        return _atoms(lets[e.name], lets)
    if isinstance(e, P.AllOf):
        out = []
        for o in e.operands:
            out.extend(_atoms(o, lets) or [])
        return out
    if isinstance(e, P.Cmp):
        left, right, op = e.left, e.right, e.op
        if isinstance(left, P.Const | P.ClusterName) and isinstance(right, P.SIGNALS):
            left, right, op = right, left, _FLIP[op]
        if isinstance(left, P.SIGNALS) and isinstance(right, P.Const | P.ClusterName):
            value = right.name if isinstance(right, P.ClusterName) else right.value
            return [(repr(left), op, value, left)]
    if (
        isinstance(e, P.Range)
        and not e.negated
        and isinstance(e.operand, P.SIGNALS)
        and isinstance(e.low, P.Const)
        and isinstance(e.high, P.Const)
    ):
        k = repr(e.operand)
        return [(k, ">=", e.low.value, e.operand), (k, "<=", e.high.value, e.operand)]
    return None


def never_matches(e: P.TExpr, lets: dict[str, P.TExpr]) -> str | None:
    """Why a condition can never be true (contradictory bounds on one signal), or None."""
    if isinstance(e, P.LetRef) and e.name in lets:
        return never_matches(lets[e.name], lets)
    if isinstance(e, P.AnyOf):
        reasons = [never_matches(o, lets) for o in e.operands]
        return reasons[0] if all(reasons) else None
    if isinstance(e, P.AllOf):
        for o in e.operands:
            r = never_matches(o, lets)
            if r:
                return r
    atoms = _atoms(e, lets) or []
    bounds: dict[str, _Bounds] = {}
    shown: dict[str, list[str]] = {}
    signal: dict[str, P.TExpr] = {}
    for key, op, value, sig in atoms:
        b = bounds.setdefault(key, _Bounds())
        if isinstance(sig, P.NearCount):
            b.add(">=", 0)
            b.add("<=", len(sig.keys))
        b.add(op, value)
        shown.setdefault(key, []).append(f"{op} {_num(value) if isinstance(value, float) else value}")
        signal[key] = sig
        if b.empty():
            return f"{_signal_text(sig)} cannot be {' and '.join(shown[key])}"
    return None


def _signal_text(s: P.TExpr) -> str:
    if isinstance(s, P.NearCount):
        return f"{P.text_of(s)} (at most {len(s.keys)} anchors)"
    return P.text_of(s)
