"""db: one read-only SQL query with bound parameters; rows as JSON-safe dicts."""

from __future__ import annotations

from ..sources import sql
from ..templates import render_value
from .base import NodeImpl, log


class DBNodeImpl(NodeImpl):
    calls_outside = True
    default_timeout = 5.0

    @property
    def statement_timeout_ms(self) -> int:
        """node timeout_seconds > source statement_timeout_ms (if set) > source timeout_seconds
        > statement_timeout_ms's default (5 s)."""
        if self.node.config.timeout_seconds is not None:
            return int(self.node.config.timeout_seconds * 1000)
        src = self.source
        if "statement_timeout_ms" not in src.model_fields_set and src.timeout_seconds is not None:
            return int(src.timeout_seconds * 1000)
        return src.statement_timeout_ms

    def run(self, state, ctx):
        cfg = self.node.config
        # Values travel as bound parameters only; the query text is never formatted.
        params = render_value(cfg.params, state)
        dsn = self.secret(self.source.dsn_env, ctx)
        rows, truncated = self.call_source(lambda: sql.run_readonly(
            self.source.id, dsn, cfg.query, params, max_rows=cfg.max_rows,
            timeout_ms=self.statement_timeout_ms))
        update: dict = {cfg.output_key: rows}
        if truncated:
            log.warning("db node '%s': result cut to max_rows=%d", self.node.id, cfg.max_rows)
            update["metadata"] = {f"{self.node.id}_truncated": True}
        return update
