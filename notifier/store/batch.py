"""Statements handed to the database driver directly (the ingest path): a :class:`Batch` writes
many rows, a :class:`Query` reads them.

SQLAlchemy's executemany builds a parameter dictionary for every row, then runs every value
through its type, generically: about 3 µs a row before the database sees it, and ingest writes
half a dozen rows per webhook. On SQLite, where that Python is most of the cost, a
:class:`Batch` compiles its statement once, looks up each parameter's processor once (the
functions SQLAlchemy itself would call: UTC times, JSON) and gives the driver plain tuples;
``INSERT … RETURNING`` over many rows becomes one multi-row ``VALUES`` (sqlite3 returns nothing
from executemany). What reaches the database is the same statement with the same values.

A :class:`Query` does the same for a SELECT: SQLAlchemy's result machinery (a row object per
row, its processors called through it, the expanding ``IN`` list compiled on every execution)
took a third of reading a batch's shipments. It compiles once, writes an ``IN`` list as
"?, ?, …" for the values given, and converts only the columns that have a processor.

On PostgreSQL the statement goes through SQLAlchemy as before: there the network round trips
dominate, psycopg batches them itself, and handing it SQLAlchemy's compiled text directly
measured slower.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.sql import Select
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase

#: SQLite's limit on parameters in one statement (SQLITE_MAX_VARIABLE_NUMBER since 3.32).
_SQLITE_PARAMETERS = 32_766

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # the parameters in the order the driver takes them
    processors: tuple[Processor, ...]
    values: str | None  # an INSERT's "(?, ?, …)", to repeat for many rows
    # A row's values in the driver's order, taken in one C call; then only the columns with a
    # processor (times, JSON) are converted: most columns take their value as it is.
    _pick: Callable[[Mapping[str, Any]], tuple[Any, ...]] = field(init=False, repr=False)
    _converted: tuple[tuple[int, Callable[[Any], Any]], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pick = itemgetter(*self.names)
        object.__setattr__(self, "_pick", _one(pick) if len(self.names) == 1 else pick)
        converted = tuple((i, p) for i, p in enumerate(self.processors) if p is not None)
        object.__setattr__(self, "_converted", converted)

    def parameters(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        values = self._pick(row)
        if not self._converted:
            return values
        converted = list(values)
        for i, process in self._converted:
            converted[i] = process(converted[i])
        return tuple(converted)


class Batch:
    """``make(dialect_name)`` builds the statement; the rows' keys are its parameter names (an
    INSERT's columns), and every row has the same keys."""

    def __init__(self, make: Callable[[str], UpdateBase]) -> None:
        self._make = make
        self._statements: dict[str, UpdateBase] = {}
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled] = {}

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute the statement once per row, all in one driver call."""
        if not rows:
            return
        compiled = self._for(conn.dialect, rows[0])
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(compiled.sql, [compiled.parameters(r) for r in rows])
        else:
            conn.execute(self._statement(conn.dialect.name), list(rows))

    def returning(
        self, conn: Connection, rows: Sequence[Mapping[str, Any]]
    ) -> list[tuple[Any, ...]]:
        """An INSERT … RETURNING over all the rows: what it returned."""
        if not rows:
            return []
        compiled = self._for(conn.dialect, rows[0])
        if conn.dialect.name != "sqlite":
            statement = self._statement(conn.dialect.name)
            return [tuple(r) for r in conn.execute(statement, list(rows))]
        assert compiled.values is not None, "returning() is for INSERT statements"
        per_statement = max(1, _SQLITE_PARAMETERS // len(compiled.names))
        returned: list[tuple[Any, ...]] = []
        for first in range(0, len(rows), per_statement):
            chunk = rows[first : first + per_statement]
            values = ", ".join([compiled.values] * len(chunk))
            sql = compiled.sql.replace(compiled.values, values, 1)
            flat = [v for r in chunk for v in compiled.parameters(r)]
            returned += [tuple(r) for r in conn.exec_driver_sql(sql, tuple(flat))]
        return returned

    def _statement(self, dialect: str) -> UpdateBase:
        if dialect not in self._statements:
            self._statements[dialect] = self._make(dialect)
        return self._statements[dialect]

    def _for(self, dialect: Dialect, row: Mapping[str, Any]) -> _Compiled:
        """Compiled once per dialect and set of keys; a parameter the rows lack is an error,
        on every database."""
        key = (dialect.name, tuple(row))
        compiled = self._compiled.get(key)
        if compiled is None:
            statement = self._statement(dialect.name)
            compiled = self._compiled[key] = _compile(statement, dialect, key[1])
        return compiled


def _one(pick: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    """itemgetter of one name gives the value itself, not a 1-tuple."""
    return lambda row: (pick(row),)


def _compile(statement: UpdateBase, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled:
    compiled = statement.compile(dialect=dialect, column_keys=list(keys), for_executemany=True)
    assert isinstance(compiled, SQLCompiler)
    # SQLite's qmark style is positional; other databases only have their names checked.
    names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
    missing = set(names) - set(keys)
    if missing:  # the driver gets the rows' values, and only those
        raise ValueError(f"parameters without a value in the rows: {sorted(missing)}")
    processors = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    single = getattr(compiled, "insert_single_values_expr", None)
    values = f"({single})" if single else None
    return _Compiled(compiled.string, names, processors, values)


_REQUIRED = object()  # a parameter the statement has no value of its own for


@dataclass(frozen=True)
class _CompiledQuery:
    sql: str
    binds: tuple[tuple[str, bool, Any, Processor], ...]  # name, expanding, own value, processor
    converted: tuple[tuple[int, Callable[[Any], Any]], ...]  # columns with a result processor


class Query:
    """A SELECT whose rows come back as plain tuples, in the statement's column order. Its
    bound parameters are given by name; an expanding one takes a list, which must not be
    empty on SQLite (SQLAlchemy's stand-in for an empty ``IN`` is used there instead)."""

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._compiled: dict[Dialect, _CompiledQuery] = {}

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        if conn.dialect.name != "sqlite" or any(
            isinstance(v, list | tuple) and not v for v in params.values()
        ):
            return [tuple(r) for r in conn.execute(self.statement, dict(params))]
        compiled = self._compiled.get(conn.dialect)
        if compiled is None:
            compiled = self._compiled[conn.dialect] = _compile_query(self.statement, conn.dialect)
        sql, parameters = compiled.sql, list[Any]()
        for name, expanding, own, process in compiled.binds:
            value = params.get(name, own)
            if value is _REQUIRED:
                raise ValueError(f"no value for the parameter {name!r}")
            if expanding:
                marker = f"__[POSTCOMPILE_{name}]"
                sql = sql.replace(marker, ", ".join("?" * len(value)), 1)
                parameters += map(process, value) if process else value
            else:
                parameters.append(process(value) if process else value)
        rows = conn.exec_driver_sql(sql, tuple(parameters)).fetchall()
        if not compiled.converted:
            return [tuple(r) for r in rows]
        converted = []
        for row in rows:
            values = list(row)
            for i, process in compiled.converted:
                values[i] = process(values[i])
            converted.append(tuple(values))
        return converted


def _compile_query(statement: Select[Any], dialect: Dialect) -> _CompiledQuery:
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler) and compiled.positional
    binds = tuple(
        (name, bind.expanding, _REQUIRED if bind.required else bind.effective_value,
         bind.type.dialect_impl(dialect).bind_processor(dialect))
        for name, bind in ((name, compiled.binds[name]) for name in compiled.positiontup or ())
    )  # fmt: skip
    processors = [
        column.type.dialect_impl(dialect).result_processor(dialect, None)
        for column in statement.selected_columns
    ]
    converted = tuple((i, p) for i, p in enumerate(processors) if p is not None)
    return _CompiledQuery(compiled.string, binds, converted)
