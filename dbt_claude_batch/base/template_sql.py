"""Prompt templates compiled into one DuckDB expression that renders what Jinja renders, byte for byte.

Supported, over columns of text, integer, boolean, date and decimal (scale up to 6) types and lists of
them: literal text; ``{{ expr }}``; ``~``; ``{% if %}`` / ``{% elif %}`` / ``{% else %}`` over column
truthiness, ``is none`` / ``is not none``, ``==`` / ``!=`` against a string or integer literal, ``in`` a
list of such literals, ``and`` / ``or`` / ``not``; ``{% for x in list_column %}`` (no ``loop``, no
``else``); and the filters ``upper``, ``lower``, ``trim``, ``default``, ``replace``, ``truncate``,
``length``, ``join`` and ``tojson``. Anything else makes `compile_template` return None: Python renders.

Row values are data: they are column references in the SQL, never parsed. A NULL column is Jinja's
`_Null` (empty text under every filter, yet ``is none``), an element of a list is Python's None.

Where SQL and Python agree only for part of the values (case mapping and JSON escaping beyond ASCII,
dates outside years 1-9999, a filter over a NULL list element that Python would turn into 'None'),
the expression carries a *guard*: a row outside it renders as NULL, which makes the run take the
row-by-row pass (see run/sql_spool.py), so no row is ever sent with text Jinja would not give.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import jinja2.nodes as nodes

from dbt_claude_batch.base.identifiers import literal, quote

# Every character Python's str.strip() removes (str.isspace); SQL trims the same ones (a unit test
# compares them over every code point).
WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
               "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_TRUNCATE_LEEWAY = 5  # Jinja's default policy "truncate.leeway"
_JSON_ESCAPES = {ch: "\\u%04x" % ord(ch) for ch in "<>&'"}  # what Jinja's tojson escapes after json.dumps

_TEXT = {"VARCHAR", "TEXT", "STRING"}
_INTEGER = {"BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER", "USMALLINT",
            "UTINYINT", "UHUGEINT"}
# Python prints a Decimal with an exponent when its scale is over 6 (0E-7, 1E-7); DuckDB never does.
_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")


class Unsupported(Exception):
    """A construct this compiler cannot prove identical to Jinja."""


@dataclass(frozen=True)
class _Expr:
    sql: str
    kind: str  # str | int | bool | date | decimal | list
    elem: str | None = None  # the element kind of a list
    column: bool = True  # NULL is a NULL column (Jinja's _Null, ''), not a list element's None


def kind_of(duckdb_type: str) -> tuple[str, str | None] | None:
    """(kind, element kind) of a DuckDB type this compiler renders exactly, else None."""
    t = duckdb_type.upper().strip()
    if t.endswith("[]"):
        inner = kind_of(t[:-2])
        return ("list", inner[0]) if inner and inner[0] != "list" else None
    if t in _TEXT:
        return "str", None
    if t in _INTEGER:
        return "int", None
    if t in ("BOOLEAN", "BOOL"):
        return "bool", None
    if t == "DATE":
        return "date", None
    m = _DECIMAL.fullmatch(t)
    if m and int(m.group(2)) <= 6:
        return "decimal", None
    return None


@dataclass
class _Context:
    scope: dict[str, _Expr]
    guards: list[str] = field(default_factory=list)
    depth: int = 0


def compile_template(ast: nodes.Template, column_types: dict[str, str]) -> str | None:
    """A DuckDB VARCHAR expression rendering `ast` over the row's columns as Jinja does (NULL for a row
    outside the guards), or None when the template uses anything this compiler does not support."""
    scope = {}
    for name, t in column_types.items():
        k = kind_of(t)
        if k is not None:
            scope[name] = _Expr(quote(name), k[0], k[1])
    ctx = _Context(scope)
    try:
        body = _body(ast.body, ctx)
    except Unsupported:
        return None
    if ctx.guards:
        return f"(case when {' and '.join(ctx.guards)} then {body} end)"
    return body


def _body(items: list[nodes.Node], ctx: _Context) -> str:
    parts = []
    for node in items:
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                if isinstance(child, nodes.TemplateData):
                    parts.append(literal(child.data))
                else:
                    parts.append(_output(child, ctx))
        elif isinstance(node, nodes.If):
            parts.append(_if(node, ctx))
        elif isinstance(node, nodes.For):
            parts.append(_for(node, ctx))
        else:
            raise Unsupported(type(node).__name__)
    return "(" + " || ".join(parts or ["''"]) + ")"


def _output(node: nodes.Node, ctx: _Context) -> str:
    """What ``{{ node }}`` prints: finalize turns None (and a NULL column) into ''."""
    if isinstance(node, nodes.Filter) and node.name == "tojson":
        return _tojson(node, ctx)
    e = _expr(node, ctx)
    return f"coalesce({_text_of(e, ctx, nullable=True)}, '')"


def _if(node: nodes.If, ctx: _Context) -> str:
    branches = [node, *node.elif_]
    whens = " ".join(f"when {_test(b.test, ctx)} then {_body(b.body, ctx)}" for b in branches)
    return f"(case {whens} else {_body(node.else_, ctx)} end)"


def _for(node: nodes.For, ctx: _Context) -> str:
    if node.else_ or node.test is not None or node.recursive or not isinstance(node.target, nodes.Name):
        raise Unsupported("for")
    source = _expr(node.iter, ctx)
    if source.kind != "list" or not source.column:
        raise Unsupported("for over a non-list")
    var = f"__cb_v{ctx.depth}"
    inner = _Context({**ctx.scope, node.target.name: _Expr(var, source.elem or "", column=False)},
                     depth=ctx.depth + 1)
    inner.scope.pop("loop", None)
    body = _body(node.body, inner)
    if inner.guards:
        ctx.guards.append(f"coalesce(list_bool_and(list_transform({source.sql}, lambda {var}: "
                          f"{' and '.join(inner.guards)})), true)")
    return f"coalesce(array_to_string(list_transform({source.sql}, lambda {var}: {body}), ''), '')"


def _expr(node: nodes.Node, ctx: _Context) -> _Expr:
    if isinstance(node, nodes.Name) and node.ctx == "load":
        if node.name not in ctx.scope:
            raise Unsupported(f"name {node.name}")
        return ctx.scope[node.name]
    if isinstance(node, nodes.Const):
        if isinstance(node.value, str):
            return _Expr(literal(node.value), "str")
        if isinstance(node.value, int) and not isinstance(node.value, bool):
            return _Expr(str(int(node.value)), "int")
        raise Unsupported("constant")
    if isinstance(node, nodes.Concat):
        return _Expr("(" + " || ".join(_text_of(_expr(n, ctx), ctx) for n in node.nodes) + ")", "str")
    if isinstance(node, nodes.Filter):
        return _filter(node, ctx)
    raise Unsupported(type(node).__name__)


def _text_of(e: _Expr, ctx: _Context, nullable: bool = False) -> str:
    """`str(value)` as Jinja's filters and `~` see it: a NULL column is ''. A list element's None would
    be 'None' there, so outside a bare ``{{ x }}`` (`nullable`) it is guarded out."""
    if not e.column and not nullable:
        ctx.guards.append(f"{e.sql} is not null")
    if e.kind == "str":
        text = e.sql
    elif e.kind in ("int", "decimal"):
        text = f"cast({e.sql} as varchar)"
    elif e.kind == "bool":
        text = f"(case when {e.sql} then 'True' when not {e.sql} then 'False' end)"
    elif e.kind == "date":
        ctx.guards.append(f"({e.sql} is null or year({e.sql}) between 1 and 9999)")
        text = f"cast({e.sql} as varchar)"
    else:
        raise Unsupported(f"text of {e.kind}")
    return f"coalesce({text}, '')" if e.column else text


def _truthy(e: _Expr) -> str:
    if e.kind == "str":
        return f"coalesce({e.sql}, '') <> ''"
    if e.kind in ("int", "decimal"):
        return f"coalesce({e.sql} <> 0, false)"
    if e.kind == "bool":
        return f"coalesce({e.sql}, false)"
    if e.kind == "date":
        return f"({e.sql} is not null)"
    if e.kind == "list":
        return f"coalesce(len({e.sql}), 0) > 0"
    raise Unsupported(f"truth of {e.kind}")


def _test(node: nodes.Node, ctx: _Context) -> str:
    if isinstance(node, nodes.And):
        return f"(({_test(node.left, ctx)}) and ({_test(node.right, ctx)}))"
    if isinstance(node, nodes.Or):
        return f"(({_test(node.left, ctx)}) or ({_test(node.right, ctx)}))"
    if isinstance(node, nodes.Not):
        return f"(not ({_test(node.node, ctx)}))"
    if isinstance(node, nodes.Test):
        if node.name != "none" or node.args or node.kwargs or node.dyn_args or node.dyn_kwargs:
            raise Unsupported(f"test {node.name}")
        e = _expr(node.node, ctx)
        # A filter's result is never None; a column or an element is when NULL.
        return f"({e.sql} is null)" if isinstance(node.node, nodes.Name) else "false"
    if isinstance(node, nodes.Compare):
        if len(node.ops) != 1:
            raise Unsupported("chained comparison")
        op = node.ops[0]
        e = _expr(node.expr, ctx)
        if op.op == "ne" and e.column and e.kind != "str":
            raise Unsupported("!= on a number column")  # Python: a NULL's `!=` a number is not a bool
        if op.op in ("eq", "ne"):
            same = _equals(e, op.expr)
        elif op.op in ("in", "notin") and isinstance(op.expr, (nodes.List, nodes.Tuple)):
            same = "(" + " or ".join([_equals(e, item) for item in op.expr.items] or ["false"]) + ")"
        elif op.op in ("in", "notin") and isinstance(op.expr, nodes.Const) and isinstance(op.expr.value, (list, tuple)):
            # the same list, folded into one constant by Jinja's optimizer (jinja2.meta runs it on the tree)
            same = "(" + " or ".join([_equals(e, nodes.Const(v)) for v in op.expr.value] or ["false"]) + ")"
        else:
            raise Unsupported(f"comparison {op.op}")
        return same if op.op in ("eq", "in") else f"(not {same})"
    return _truthy(_expr(node, ctx))


def _equals(e: _Expr, other: nodes.Node) -> str:
    """`e == constant` as Python has it: never NULL. A NULL column is '' (so it equals ''), an
    element's None equals nothing here; text never equals a number."""
    if not isinstance(other, nodes.Const) or isinstance(other.value, bool):
        raise Unsupported("comparison with a non-constant")
    value = other.value
    if e.kind == "str" and isinstance(value, str):
        if e.column:
            return f"(coalesce({e.sql}, '') = {literal(value)})"
        return f"coalesce({e.sql} = {literal(value)}, false)"
    if e.kind in ("int", "decimal") and isinstance(value, int):
        return f"coalesce({e.sql} = {int(value)}, false)"
    raise Unsupported("comparison of these types")


def _args(node: nodes.Filter, names: list[str]) -> dict:
    """The filter's constant arguments by parameter name."""
    if node.dyn_args or node.dyn_kwargs or len(node.args) > len(names):
        raise Unsupported("filter arguments")
    got = {}
    for name, arg in zip(names, node.args):
        got[name] = arg
    for kw in node.kwargs:
        if kw.key not in names or kw.key in got:
            raise Unsupported("filter keyword")
        got[kw.key] = kw.value
    out = {}
    for name, arg in got.items():
        if not isinstance(arg, nodes.Const):
            raise Unsupported("non-constant filter argument")
        out[name] = arg.value
    return out


def _string(value, name: str) -> str:
    if not isinstance(value, str):
        raise Unsupported(f"{name} must be a string")
    return value


def _int(value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise Unsupported(f"{name} must be an integer")
    return value


def _filter(node: nodes.Filter, ctx: _Context) -> _Expr:
    e = _expr(node.node, ctx)
    name = node.name
    if name in ("upper", "lower"):
        _args(node, [])
        text = _text_of(e, ctx)
        # Python maps case over all of Unicode (ß -> SS), DuckDB by simple mapping: ASCII only.
        ctx.guards.append(f"regexp_full_match({text}, '[\\x01-\\x7f]*')")
        return _Expr(f"{name}({text})", "str")
    if name == "trim":
        chars = _string(_args(node, ["chars"]).get("chars", WHITESPACE), "chars") or None
        if chars is None:
            raise Unsupported("trim('')")
        return _Expr(f"trim({_text_of(e, ctx)}, {literal(chars)})", "str")
    if name in ("default", "d"):
        args = _args(node, ["default_value", "boolean"])
        boolean = args.get("boolean", False)
        if not isinstance(boolean, bool):
            raise Unsupported("default's boolean")
        if not boolean:
            return e  # a column is never undefined
        if e.kind != "str" or not e.column:
            raise Unsupported("default over a non-text value")
        fallback = _string(args.get("default_value", ""), "default_value")
        return _Expr(f"(case when {_truthy(e)} then {e.sql} else {literal(fallback)} end)", "str")
    if name == "replace":
        args = _args(node, ["old", "new"])
        old, new = _string(args.get("old"), "old"), _string(args.get("new"), "new")
        if not old:
            raise Unsupported("replace of ''")  # Python inserts `new` between every character
        return _Expr(f"replace({_text_of(e, ctx)}, {literal(old)}, {literal(new)})", "str")
    if name == "truncate":
        return _truncate(node, e, ctx)
    if name in ("length", "count"):
        _args(node, [])
        if e.kind == "str":
            return _Expr(f"length({_text_of(e, ctx)})", "int")
        if e.kind == "list" and e.column:
            return _Expr(f"coalesce(len({e.sql}), 0)", "int")
        raise Unsupported("length of this type")
    if name == "join":
        sep = _string(_args(node, ["d"]).get("d", ""), "d")
        if e.kind != "list" or not e.column:
            raise Unsupported("join over a non-list")
        item = _Expr(f"__cb_j{ctx.depth}", e.elem or "", column=False)
        inner = _Context({}, depth=ctx.depth)
        text = _text_of(item, inner, nullable=True)
        if inner.guards:
            ctx.guards.append(f"coalesce(list_bool_and(list_transform({e.sql}, lambda {item.sql}: "
                              f"{' and '.join(inner.guards)})), true)")
        # str(None) is 'None' in Python's join
        return _Expr(f"coalesce(array_to_string(list_transform({e.sql}, lambda {item.sql}: "
                     f"coalesce({text}, 'None')), {literal(sep)}), '')", "str")
    raise Unsupported(f"filter {name}")


def _truncate(node: nodes.Filter, e: _Expr, ctx: _Context) -> _Expr:
    args = _args(node, ["length", "killwords", "end", "leeway"])
    length = _int(args.get("length", 255), "length")
    killwords = args.get("killwords", False)
    end = _string(args.get("end", "..."), "end")
    leeway = args.get("leeway", None)
    leeway = _TRUNCATE_LEEWAY if leeway is None else _int(leeway, "leeway")
    if not isinstance(killwords, bool) or length < len(end) or leeway < 0 or e.kind != "str":
        raise Unsupported("truncate arguments")  # Jinja would raise, or len() a non-text
    text = _text_of(e, ctx)
    head = f"substr({text}, 1, {length - len(end)})"
    if not killwords:
        head = f"regexp_replace({head}, ' [^ ]*$', '')"  # rsplit(' ', 1)[0]
    return _Expr(f"(case when length({text}) <= {length + leeway} then {text} else {head} || {literal(end)} end)",
                 "str")


def _tojson(node: nodes.Filter, ctx: _Context) -> str:
    """``{{ x | tojson }}``: json.dumps (ASCII only, sorted keys) with <, >, & and ' escaped."""
    _args(node, [])  # no indent
    e = _expr(node.node, ctx)
    if e.kind == "str":
        ctx.guards.append(f"regexp_full_match(coalesce({e.sql}, ''), '[\\x20-\\x7e]*')")
        text = f"to_json({e.sql})::varchar"
        for ch in "<>&'":
            text = f"replace({text}, {literal(ch)}, {literal(_JSON_ESCAPES[ch])})"
    elif e.kind == "int":
        text = f"cast({e.sql} as varchar)"
    elif e.kind == "bool":
        text = f"(case when {e.sql} then 'true' when not {e.sql} then 'false' end)"
    else:
        raise Unsupported(f"tojson of {e.kind}")
    return f"coalesce({text}, 'null')"
