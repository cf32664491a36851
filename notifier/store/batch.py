"""A statement run over many rows, handed to the database driver directly (the ingest path).

SQLAlchemy's executemany builds a parameter dictionary for every row, then runs every value
through its type, generically: about 3 µs a row before the database sees it, and ingest writes
half a dozen rows per webhook. A :class:`Batch` compiles its statement once per dialect, looks
up each parameter's processor once (the functions SQLAlchemy itself would call: UTC times,
JSON) and gives the driver plain tuples. What reaches the database is the same statement with
the same values.

``INSERT … RETURNING`` over many rows becomes one multi-row ``VALUES`` on SQLite (its driver
returns nothing from executemany); on other databases it stays SQLAlchemy's, whose
"insertmanyvalues" does the same there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect
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
    positional: bool
    values: str | None  # an INSERT's "(?, ?, …)", to repeat for many rows

    def parameters(self, row: Mapping[str, Any]) -> Any:
        pairs = zip(self.names, self.processors, strict=True)
        if self.positional:
            return tuple(p(row[n]) if p else row[n] for n, p in pairs)
        return {n: p(row[n]) if p else row[n] for n, p in pairs}


class Batch:
    """``make(dialect_name)`` builds the statement; the rows' keys are its parameter names (an
    INSERT's columns), and every row has the same keys."""

    def __init__(self, make: Callable[[str], UpdateBase]) -> None:
        self._make = make
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled] = {}

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute the statement once per row, all in one driver call."""
        if rows:
            compiled = self._for(conn.dialect, rows[0])
            conn.exec_driver_sql(compiled.sql, [compiled.parameters(r) for r in rows])

    def returning(
        self, conn: Connection, rows: Sequence[Mapping[str, Any]]
    ) -> list[tuple[Any, ...]]:
        """An INSERT … RETURNING over all the rows: what it returned."""
        if not rows:
            return []
        if conn.dialect.name != "sqlite":
            return [tuple(r) for r in conn.execute(self._make(conn.dialect.name), list(rows))]
        compiled = self._for(conn.dialect, rows[0])
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

    def _for(self, dialect: Dialect, row: Mapping[str, Any]) -> _Compiled:
        key = (dialect.name, tuple(row))
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = _compile(self._make(dialect.name), dialect, key[1])
        return compiled


def _compile(statement: UpdateBase, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled:
    compiled = statement.compile(dialect=dialect, column_keys=list(keys), for_executemany=True)
    assert isinstance(compiled, SQLCompiler)
    names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
    missing = set(names) - set(keys)
    if missing:  # a value fixed in the statement would be fixed at its first compilation
        raise ValueError(f"parameters without a value in the rows: {sorted(missing)}")
    processors = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    single = getattr(compiled, "insert_single_values_expr", None)
    values = f"({single})" if single else None
    return _Compiled(compiled.string, names, processors, compiled.positional, values)
