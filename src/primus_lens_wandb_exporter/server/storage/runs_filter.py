"""The runs table's filter syntax: parsed into a small AST, compiled to parameterized SQL.

``q=config.lr>=0.001 tags:sweep framework:lightning summary.loss<0.5 name:~bert resnet``

Whitespace-separated terms, all of which must hold (AND).  A term is ``field op value``
or a plain word (a case-insensitive substring of the workload uid, run name or project).
Operators: ``:`` and ``=`` (equal; text case-insensitive), ``:~`` (contains), ``!=``,
``<``, ``<=``, ``>``, ``>=`` (numbers only).  A value may be double-quoted to hold
spaces or to compare a number as text (``config.seed:"42"``).  docs/protocol.md has the
full table.  Nothing the user typed reaches the SQL text: fields come from a fixed list,
JSON paths and values travel as parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

#: Most terms one filter may hold (each costs a few SQL parameters).
MAX_TERMS = 32
#: Text fields: the SQL expression each one reads (``w`` = workloads, ``r`` = the run row).
TEXT_FIELDS = {"project": "r.project", "name": "r.name", "state": "r.status", "group": "r.grp",
               "workload": "w.workload_uid", "entity": "r.entity"}
#: Every field a filter may name, besides ``config.<key>`` and ``summary.<key>``.
FIELDS = sorted(set(TEXT_FIELDS) | {"tags", "framework", "step"})
JSON_COLUMNS = {"config": "r.config", "summary": "r.summary"}

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
# field, operator, value; the field is anything up to the first operator character.
_TERM = re.compile(r'^(?P<key>[^:<>=!~\s"]+)(?P<op>:~|:|!=|<=|>=|=|<|>)(?P<value>.*)$', re.S)
_TOKEN = re.compile(r'(?:[^\s"]+|"[^"]*"|"[^"]*$)+')
ORDERING = ("<", "<=", ">", ">=")


class FilterError(ValueError):
    """A filter that does not parse; ``token`` is the term at fault."""

    def __init__(self, token: str, message: str):
        super().__init__(f"{message} (in {token!r})")
        self.token = token


@dataclass(frozen=True)
class Term:
    """One condition: ``field`` (``config``/``summary`` with ``path``, another field, or
    ``None`` for a plain word), ``op`` (``=``, ``~``, ``!=``, ``<``, ``<=``, ``>``, ``>=``)
    and ``value`` (a float, a bool, or text)."""

    field: Optional[str]
    path: Tuple[str, ...]
    op: str
    value: Union[float, bool, str]
    token: str


def parse_path(token: str, key: str) -> Tuple[str, Tuple[str, ...]]:
    """``config.a.b`` -> ``("config", ("a", "b"))``; a plain field -> ``(field, ())``."""
    head, _, rest = key.partition(".")
    if head in JSON_COLUMNS:
        path = tuple(rest.split(".")) if rest else ()
        if not path or any(not p for p in path):
            raise FilterError(token, f"{head}.<key> needs a key name after '{head}.'")
        if '"' in rest:  # keys are quoted in the SQL's JSON paths (SQLite): see SQLiteDialect._path
            raise FilterError(token, f"a {head} key may not contain '\"'")
        return head, path
    if rest or head not in FIELDS:
        raise FilterError(token, f"unknown field {key!r}: use config.<key>, summary.<key> or one of "
                                 + ", ".join(FIELDS))
    return head, ()


def _value(token: str, raw: str) -> Tuple[Union[float, bool, str], bool]:
    """The term's value and whether it was quoted (a quoted value is always text)."""
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"'):
            raise FilterError(token, "unterminated quote")
        return raw[1:-1], True
    if '"' in raw:
        raise FilterError(token, "a quote may only enclose the whole value")
    if _NUMBER.match(raw):
        return float(raw), False
    if raw in ("true", "false"):
        return raw == "true", False
    return raw, False


def parse(q: str) -> List[Term]:
    """The terms of filter ``q`` (AND-ed); raises :class:`FilterError` naming the bad token."""
    terms: List[Term] = []
    for token in _TOKEN.findall(q or ""):
        if len(terms) >= MAX_TERMS:
            raise FilterError(token, f"at most {MAX_TERMS} terms per filter")
        m = _TERM.match(token)
        if m is None:
            if any(c in token for c in ':<>=!~"'):
                raise FilterError(token, "cannot read this term: write field:value, field>=number, "
                                         "field:~text or a plain word")
            terms.append(Term(None, (), "~", token, token))
            continue
        field, path = parse_path(token, m["key"])
        op = {":": "=", ":~": "~"}.get(m["op"], m["op"])
        if m["value"] == "":
            raise FilterError(token, f"no value after {m['op']!r}")
        value, quoted = _value(token, m["value"])
        text_field = field not in ("config", "summary", "step")
        if (op == "~" or text_field) and not quoted:
            value = m["value"]  # contains, and text fields, take the value as typed
        if op in ORDERING and text_field:
            raise FilterError(token, f"{field} is text: use {field}:value, {field}:~text or {field}!=value")
        if op in ORDERING and not isinstance(value, float):
            raise FilterError(token, f"{m['op']} compares numbers: {m['value']!r} is not a number")
        if field == "step" and (op == "~" or not isinstance(value, float)):
            raise FilterError(token, "step compares numbers (step>=1000)")
        terms.append(Term(field, path, op, value, token))
    return terms


def like_pattern(text: str) -> str:
    """``%text%`` for ``LIKE ... ESCAPE '\\'`` with the wildcards of ``text`` escaped."""
    return "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class Dialect:
    """The JSON expressions that differ between the databases.  Each returns ``(sql, params)``;
    ``col`` is a fixed column expression (:meth:`col`), never user input."""

    #: Joined after the runs table's FROM (see :class:`PostgresDialect`).
    from_extra = ""

    def col(self, field: str) -> str:
        """The SQL of JSON column ``config`` or ``summary`` of the row's run."""
        return JSON_COLUMNS[field]

    def json_value(self, col: str, path: Tuple[str, ...]) -> Tuple[str, list]:
        """The JSON text of the value at ``path`` (NULL when absent)."""
        raise NotImplementedError

    def json_number(self, col: str, path: Tuple[str, ...]) -> Tuple[str, list]:
        """The value at ``path`` as a double when it is a JSON number, else NULL."""
        raise NotImplementedError

    def json_text(self, col: str, path: Tuple[str, ...]) -> Tuple[str, list]:
        """The value at ``path`` when it is a JSON string, else NULL."""
        raise NotImplementedError

    def has_tag(self, lowered_sql: str) -> str:
        """A condition: some tag of ``r.tags`` satisfies ``lowered_sql`` (about ``t``, the
        lowered tag)."""
        raise NotImplementedError


class SQLiteDialect(Dialect):
    @staticmethod
    def _path(path):
        # Keys are quoted, so a key may hold any character but '"' (refused by the parser).
        return "$" + "".join(f'."{p}"' for p in path)

    def json_value(self, col, path):
        return f"({col} -> ?)", [self._path(path)]

    def json_number(self, col, path):
        p = self._path(path)
        return f"(CASE WHEN json_type({col}, ?) IN ('integer', 'real') THEN json_extract({col}, ?) END)", [p, p]

    def json_text(self, col, path):
        p = self._path(path)
        return f"(CASE WHEN json_type({col}, ?) = 'text' THEN json_extract({col}, ?) END)", [p, p]

    def has_tag(self, cond):
        return f"EXISTS (SELECT 1 FROM (SELECT LOWER(value) AS t FROM json_each(r.tags)) WHERE {cond})"


class PostgresDialect(Dialect):
    # config and summary are TEXT: each reference would cast it to jsonb again (PostgreSQL
    # does not share the work between expressions), so each row's two are cast once, in a
    # LATERAL subquery that OFFSET 0 keeps the planner from inlining back into the references.
    from_extra = (" LEFT JOIN LATERAL (SELECT r.config::jsonb AS config, r.summary::jsonb AS summary "
                  "OFFSET 0) rj ON TRUE")

    def col(self, field):
        return "rj." + field

    def json_value(self, col, path):
        return f"(({col})::jsonb #> ?::text[])::text", [list(path)]

    def json_number(self, col, path):
        return (f"(CASE WHEN jsonb_typeof(({col})::jsonb #> ?::text[]) = 'number' "
                f"THEN (({col})::jsonb #>> ?::text[])::float8 END)"), [list(path), list(path)]

    def json_text(self, col, path):
        return (f"(CASE WHEN jsonb_typeof(({col})::jsonb #> ?::text[]) = 'string' "
                f"THEN ({col})::jsonb #>> ?::text[] END)"), [list(path), list(path)]

    def has_tag(self, cond):
        return (f"EXISTS (SELECT 1 FROM (SELECT LOWER(v) AS t FROM jsonb_array_elements_text("
                f"COALESCE(r.tags, '[]')::jsonb) AS e(v)) x WHERE {cond})")


#: The workload's last W&B history row (``_step``) over all its series.
LAST_STEP_SQL = "(SELECT MAX(s.max_row) FROM series s WHERE s.workload_uid = w.workload_uid)"


def compile_terms(terms: List[Term], d: Dialect) -> Tuple[str, list]:
    """The WHERE condition (``1=1`` when empty) and its parameters."""
    parts: List[str] = []
    params: list = []
    for t in terms:
        sql, p = _compile(t, d)
        parts.append(sql)
        params.extend(p)
    return (" AND ".join(parts) or "1=1"), params


def _text_cond(expr: str, op: str, value: str) -> Tuple[str, list]:
    if op == "~":
        return f"LOWER({expr}) LIKE ? ESCAPE '\\'", [like_pattern(value)]
    if op == "!=":
        return f"({expr} IS NULL OR LOWER({expr}) != ?)", [value.lower()]
    return f"LOWER({expr}) = ?", [value.lower()]


def _compile(t: Term, d: Dialect) -> Tuple[str, list]:
    op, value = t.op, t.value
    if t.field is None:
        pat = like_pattern(value)
        return ("(LOWER(w.workload_uid) LIKE ? ESCAPE '\\' OR LOWER(r.name) LIKE ? ESCAPE '\\' "
                "OR LOWER(r.project) LIKE ? ESCAPE '\\')"), [pat, pat, pat]
    if t.field in TEXT_FIELDS:
        return _text_cond(TEXT_FIELDS[t.field], op, value)
    if t.field == "framework":  # the detected wrapper or base framework
        a, pa = _text_cond("w.det_wrapper", "~" if op == "~" else "=", value)
        b, pb = _text_cond("w.det_base", "~" if op == "~" else "=", value)
        cond = f"({a} OR {b})"
        return (f"NOT COALESCE({cond}, 0 = 1)" if op == "!=" else cond), pa + pb
    if t.field == "tags":
        if op == "~":
            cond, p = d.has_tag("t LIKE ? ESCAPE '\\'"), [like_pattern(value)]
        else:
            cond, p = d.has_tag("t = ?"), [value.lower()]
        return (f"NOT {cond}" if op == "!=" else cond), p
    if t.field == "step":
        return f"{LAST_STEP_SQL} {'=' if op == '=' else op} ?", [value]
    col = d.col(t.field)
    if isinstance(value, bool):
        expr, p = d.json_value(col, t.path)
        cond, cp = f"{expr} = ?", p + ["true" if value else "false"]
    elif isinstance(value, float):
        expr, p = d.json_number(col, t.path)
        cond, cp = f"{expr} {'=' if op in ('=', '!=') else op} ?", p + [value]
    else:
        expr, p = d.json_text(col, t.path)
        cond, cp = _text_cond(expr, "~" if op == "~" else "=", value)
        cp = p + cp
    if op == "!=":  # a run without the key matches "!=" (it does not equal the value)
        return f"NOT COALESCE({cond}, 0 = 1)", cp
    return cond, cp
