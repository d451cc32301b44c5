"""The ``--where`` language of ``factcap filter``: a small, safe expression over named values.

An expression is Python syntax, parsed with :func:`ast.parse` and checked node by node
against an explicit whitelist; nothing is ever passed to ``eval``. What it may hold:

* names of values (:func:`compile_where` is told which names exist and whether each is a
  number or text), numbers, quoted text, ``True`` / ``False``;
* comparisons ``== != < <= > >=``, chained too (``0.2 <= clip_score < 0.5``), and
  ``in`` / ``not in`` against a list of constants (``status in ('ok', 'error')``) or, for
  text, a substring (``'dog' in caption``);
* arithmetic ``+ - * / // %`` and unary ``-`` / ``+`` on numbers (no ``**``);
* ``and``, ``or``, ``not`` over conditions (a comparison, ``any``/``all``, or another of
  these: a bare number or text is not a condition);
* ``any(COND)`` and ``all(COND)``, one condition each, not nested: ``COND`` is evaluated
  once per caption of the record (see :mod:`factcap.curation.filter` for which names change
  per caption).

Refused, each with a :class:`~factcap.errors.UsageError` that names the part and its
column: calls of anything but ``any``/``all``, attribute access (``status.__class__``),
subscripts (``x[0]``), lambdas, comprehensions, conditional expressions, f-strings, ``**``,
walrus, dunder names (``__import__``), ``None``, unknown names (with the closest known name),
and comparisons of a number with text.

Missing values follow SQL's three-valued logic: a name whose value a record lacks (an error
record has no scores; an image without ``image_size`` has no ``width``) is *unknown*, and so
is arithmetic with it, a division by zero, and a comparison with it. ``not`` unknown is
unknown; ``False and`` unknown is false, ``True or`` unknown is true. A record is kept only
when the whole expression is true, so an unknown result rejects it (and is counted).
``any`` is true when some caption makes its condition true, ``all`` when every one does;
both are false for a record with no captions.

>>> where = compile_where("n_refuted <= 1 and status == 'ok'", {"n_refuted": NUM, "status": STR})
>>> where.evaluate(Values({"n_refuted": 0, "status": "ok"}))
True
>>> where.evaluate(Values({"n_refuted": None, "status": "ok"})) is None  # unknown
True
>>> [c.text for c in where.conditions]
['n_refuted <= 1', "status == 'ok'"]
>>> compile_where("open(1)", {})
Traceback (most recent call last):
...
factcap.errors.UsageError: --where: calls are not allowed (only any(...) and all(...)): 'open(1)' at column 1
"""

from __future__ import annotations

import ast
import difflib
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from factcap.errors import UsageError

NUM = "number"
STR = "text"
BOOL = "condition"
_LIST = "list of "

#: The longest expression accepted (deeply nested input would only exhaust the parser).
MAX_LENGTH = 4000

Value = Any  # a number, a str, a bool, a tuple (constant list), or None (unknown)
Evaluator = Callable[["Values"], Value]


@dataclass
class Values:
    """What the names mean for one record: ``record`` values, and ``captions``: one mapping
    per caption (``any``/``all`` go through them), ``caption`` the default caption's (the one
    plain per-caption names refer to). Names not found in the caption mapping come from
    ``record``; a name found nowhere is unknown (None)."""

    record: Mapping[str, Value]
    captions: Sequence[Mapping[str, Value]] = ()
    caption: Mapping[str, Value] = field(default_factory=dict)

    def lookup(self, name: str) -> Value:
        if name in self.caption:
            return self.caption[name]
        return self.record.get(name)

    def per_caption(self) -> Iterable[Values]:
        for caption in self.captions:
            yield Values(self.record, (), caption)


@dataclass(frozen=True)
class Condition:
    """One comparison or ``any``/``all`` of the expression (not inside another one), with its
    source text, for the per-condition counts."""

    text: str
    column: int
    evaluate: Evaluator


@dataclass(frozen=True)
class Where:
    """A compiled ``--where`` expression."""

    text: str
    names: tuple[str, ...]
    """The names it uses, in order of first use."""
    conditions: tuple[Condition, ...]
    _root: Evaluator

    def evaluate(self, values: Values) -> bool | None:
        """True, False, or None when a missing value leaves it unknown."""
        result = self._root(values)
        return None if result is None else bool(result)


_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_ORDER: dict[type, Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_SYMBOL = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}
#: Friendly names of refused node types.
_REFUSED = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "subscripts are not allowed",
    ast.Lambda: "lambdas are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions and generators are not allowed",
    ast.IfExp: "conditional expressions (x if c else y) are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.NamedExpr: "assignment (:=) is not allowed",
    ast.Starred: "* unpacking is not allowed",
    ast.Dict: "dict displays are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
    ast.Slice: "slices are not allowed",
}


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kleene_and(values: Iterable[Callable[[], Value]]) -> Value:
    unknown = False
    for get in values:
        value = get()
        if value is None:
            unknown = True
        elif not value:
            return False
    return None if unknown else True


def _kleene_or(values: Iterable[Callable[[], Value]]) -> Value:
    unknown = False
    for get in values:
        value = get()
        if value is None:
            unknown = True
        elif value:
            return True
    return None if unknown else False


class _Compiler:
    """Checks one parsed expression against the whitelist and builds its evaluator."""

    def __init__(self, text: str, names: Mapping[str, str], hint: str, shift: int = 0):
        self.text = text
        self.shift = shift  # leading blanks stripped off before parsing
        self.known = dict(names)
        self.hint = hint
        self.used: dict[str, None] = {}
        self.conditions: list[Condition] = []
        self.inside_any = False

    # -- errors ---------------------------------------------------------------------------
    def where(self, node: ast.AST) -> str:
        line, col = getattr(node, "lineno", 1), getattr(node, "col_offset", 0) + 1
        if line == 1:
            return f"at column {col + self.shift}"
        return f"at line {line}, column {col}"

    def segment(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.text, node) or type(node).__name__

    def fail(self, node: ast.AST, what: str) -> UsageError:
        return UsageError(f"--where: {what}: {self.segment(node)!r} {self.where(node)}")

    # -- compiling ------------------------------------------------------------------------
    def compile(self, node: ast.AST) -> tuple[Evaluator, str]:
        """The evaluator of ``node`` and its type (NUM, STR, BOOL or a list type)."""
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return self.constants(node)
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BoolOp):
            return self.boolean(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        for kind, what in _REFUSED.items():
            if isinstance(node, kind):
                raise self.fail(node, what)
        raise self.fail(node, f"{type(node).__name__} is not allowed here")

    def leaf(self, node: ast.AST, get: Evaluator) -> None:
        """Count ``node`` as one condition (an operand of and/or, or the whole expression,
        that is not itself an and/or), unless it sits inside any/all."""
        if not self.inside_any and not isinstance(node, ast.BoolOp):
            column = node.col_offset + 1 + (self.shift if node.lineno == 1 else 0)
            self.conditions.append(Condition(self.segment(node), column, get))

    def constant(self, node: ast.Constant) -> tuple[Evaluator, str]:
        value = node.value
        if isinstance(value, bool):
            return (lambda v: value), BOOL
        if _num(value):
            if isinstance(value, float) and not math.isfinite(value):
                raise self.fail(node, "numbers must be finite")
            return (lambda v: value), NUM
        if isinstance(value, str):
            return (lambda v: value), STR
        if value is None:
            raise self.fail(
                node,
                "None is not a value here (a missing value already makes its comparison "
                "unknown, which rejects the record)",
            )
        raise self.fail(node, f"constants of type {type(value).__name__} are not allowed")

    def name(self, node: ast.Name) -> tuple[Evaluator, str]:
        name = node.id
        if name.startswith("__"):
            raise self.fail(node, "dunder names are not allowed")
        if name in ("any", "all"):
            raise self.fail(node, f"{name} must be called: {name}(CONDITION)")
        if name not in self.known:
            close = difflib.get_close_matches(name, list(self.known), n=3, cutoff=0.6)
            guess = f"; did you mean {' or '.join(close)}?" if close else ""
            known = ", ".join(sorted(self.known))
            raise UsageError(
                f"--where: unknown name {name!r} {self.where(node)}{guess} (known names: "
                f"{known}; text values need quotes, e.g. status == 'ok'{self.hint})"
            )
        self.used[name] = None
        kind = self.known[name]
        return (lambda v: _typed(v.lookup(name), kind)), kind

    def constants(self, node: ast.Tuple | ast.List | ast.Set) -> tuple[Evaluator, str]:
        values: list[Any] = []
        kinds = set()
        for element in node.elts:
            if not isinstance(element, ast.Constant) or isinstance(element.value, bool):
                raise self.fail(element, "a list may only hold numbers or quoted text")
            get, kind = self.constant(element)
            values.append(get(Values({})))
            kinds.add(kind)
        if len(kinds) > 1:
            raise self.fail(node, "a list may not mix numbers and text")
        items = tuple(values)
        return (lambda v: items), _LIST + (kinds.pop() if kinds else NUM)

    def binary(self, node: ast.BinOp) -> tuple[Evaluator, str]:
        op = _BINARY.get(type(node.op))
        if op is None:
            symbol = "**" if isinstance(node.op, ast.Pow) else type(node.op).__name__
            raise self.fail(node, f"the operator {symbol} is not allowed (+ - * / // % are)")
        left, lt = self.compile(node.left)
        right, rt = self.compile(node.right)
        for side, kind in ((node.left, lt), (node.right, rt)):
            if kind != NUM:
                raise self.fail(side, f"arithmetic needs numbers, this is {kind}")

        def run(v: Values) -> Value:
            a, b = left(v), right(v)
            if a is None or b is None:
                return None
            try:
                result = op(a, b)
            except (ZeroDivisionError, OverflowError):
                return None
            return result if not isinstance(result, float) or math.isfinite(result) else None

        return run, NUM

    def unary(self, node: ast.UnaryOp) -> tuple[Evaluator, str]:
        inner, kind = self.compile(node.operand)
        if isinstance(node.op, ast.Not):
            self.need_condition(node.operand, kind, "not")
            return (lambda v: None if (x := inner(v)) is None else not x), BOOL
        if isinstance(node.op, (ast.USub, ast.UAdd)):
            if kind != NUM:
                raise self.fail(node.operand, f"a sign needs a number, this is {kind}")
            sign = -1 if isinstance(node.op, ast.USub) else 1
            return (lambda v: None if (x := inner(v)) is None else sign * x), NUM
        raise self.fail(node, "the operator ~ is not allowed")

    def need_condition(self, node: ast.AST, kind: str, where: str) -> None:
        if kind != BOOL:
            raise self.fail(
                node,
                f"{where} needs a condition (a comparison such as x > 0.3, or any/all), "
                f"this is {kind}",
            )

    def boolean(self, node: ast.BoolOp) -> tuple[Evaluator, str]:
        parts = []
        for operand in node.values:
            get, kind = self.compile(operand)
            self.need_condition(operand, kind, "and" if isinstance(node.op, ast.And) else "or")
            self.leaf(operand, get)
            parts.append(get)
        combine = _kleene_and if isinstance(node.op, ast.And) else _kleene_or
        return (lambda v: combine((lambda g=g: g(v)) for g in parts)), BOOL

    def compare(self, node: ast.Compare) -> tuple[Evaluator, str]:
        operands = [node.left, *node.comparators]
        built = [self.compile(o) for o in operands]
        pairs = []
        for index, op in enumerate(node.ops):
            (left, lt), (right, rt) = built[index], built[index + 1]
            check = self.pair(node, op, operands[index], lt, operands[index + 1], rt)
            pairs.append((check, left, right))

        def run(v: Values) -> Value:
            return _kleene_and((lambda p=p: _apply(p, v)) for p in pairs)

        return run, BOOL

    def pair(
        self, node: ast.AST, op: ast.cmpop, left: ast.AST, lt: str, right: ast.AST, rt: str
    ) -> Callable[[Any, Any], bool]:
        symbol = _SYMBOL.get(type(op))
        if symbol is None:
            raise self.fail(node, "'is' is not allowed: compare with == or !=")
        text = f"{self.segment(left)} {symbol} {self.segment(right)}"
        if isinstance(op, (ast.In, ast.NotIn)):
            if rt == STR and lt == STR:
                test: Callable[[Any, Any], bool] = lambda a, b: a in b  # noqa: E731
            elif rt.startswith(_LIST) and lt == rt[len(_LIST) :]:
                test = lambda a, b: a in b  # noqa: E731
            else:
                raise UsageError(
                    f"--where: {text!r} {self.where(left)}: 'in' needs text in text, or a "
                    f"value in a list of the same kind ({lt} in {rt})"
                )
            return test if isinstance(op, ast.In) else (lambda a, b: a not in b)
        for side, kind in ((left, lt), (right, rt)):
            if kind.startswith(_LIST):
                raise self.fail(side, f"a list can only follow 'in' ({text})")
            if kind == BOOL:
                raise self.fail(side, f"a condition cannot be compared with {symbol}")
        if lt != rt:
            raise UsageError(
                f"--where: {text!r} {self.where(left)} compares {lt} with {rt}"
                + (" (quote text: 'ok')" if STR in (lt, rt) else "")
            )
        if isinstance(op, ast.Eq):
            return operator.eq
        if isinstance(op, ast.NotEq):
            return operator.ne
        return _ORDER[type(op)]

    def call(self, node: ast.Call) -> tuple[Evaluator, str]:
        func = node.func
        if not isinstance(func, ast.Name) or func.id not in ("any", "all"):
            raise self.fail(node, "calls are not allowed (only any(...) and all(...))")
        if node.keywords or len(node.args) != 1:
            raise self.fail(node, f"{func.id}() takes exactly one condition")
        if self.inside_any:
            raise self.fail(node, "any/all cannot be nested")
        self.inside_any = True
        try:
            inner, kind = self.compile(node.args[0])
        finally:
            self.inside_any = False
        self.need_condition(node.args[0], kind, f"{func.id}()")
        combine = _kleene_or if func.id == "any" else _kleene_and

        def run(v: Values) -> Value:
            if not v.captions:
                return False
            return combine((lambda c=c: inner(c)) for c in v.per_caption())

        return run, BOOL


def _typed(value: Any, kind: str) -> Value:
    """A record's value as the kind its name has, or None (unknown) when it is not one."""
    if kind == NUM:
        return (
            value
            if _num(value) and (not isinstance(value, float) or math.isfinite(value))
            else None
        )
    if kind == STR:
        return value if isinstance(value, str) else None
    return value


def _apply(pair: tuple[Callable[[Any, Any], bool], Evaluator, Evaluator], v: Values) -> Value:
    test, left, right = pair
    a, b = left(v), right(v)
    if a is None or b is None:
        return None
    return test(a, b)


def compile_where(text: str, names: Mapping[str, str], hint: str = "") -> Where:
    """Check ``text`` (see the module docstring) and compile it.

    ``names`` maps each known name to :data:`NUM` or :data:`STR`; ``hint`` is appended to
    the unknown-name message (e.g. where score names come from).

    Raises:
        UsageError: a syntax error, anything outside the whitelist, an unknown name, a
            comparison of a number with text, or an expression that is not a condition;
            the message names the offending part and its column.
    """
    if not text.strip():
        raise UsageError("--where: the expression is empty")
    if len(text) > MAX_LENGTH:
        raise UsageError(f"--where: the expression is longer than {MAX_LENGTH} characters")
    body = text.strip()
    shift = len(text) - len(text.lstrip())
    try:
        tree = ast.parse(body, mode="eval")
    except SyntaxError as err:
        if err.offset and (err.lineno or 1) == 1 and err.offset <= len(body):
            where = f" at column {err.offset + shift}"
        else:
            where = " at its end" if (err.lineno or 1) == 1 else f" at line {err.lineno}"
        raise UsageError(f"--where: not a valid expression{where}: {err.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise UsageError("--where: the expression is nested too deeply") from None
    compiler = _Compiler(body, names, hint, shift)
    try:
        root, kind = compiler.compile(tree.body)
    except RecursionError:
        raise UsageError("--where: the expression is nested too deeply") from None
    compiler.need_condition(tree.body, kind, "the expression")
    compiler.leaf(tree.body, root)
    return Where(body, tuple(compiler.used), tuple(compiler.conditions), root)
