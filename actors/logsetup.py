"""structlog set-up shared by every actor: JSON lines on stdout (console renderer on a TTY, or always
with ZWATCH_LOG_FORMAT=console).

Event names are stable (docs/operations.md lists them); figures go in fields, never in the
message text, so that operators can graph them.
"""
from __future__ import annotations

import logging
import os
import sys

import structlog

from zwatch import settings


def configure(actor: str, level: str | None = None, json: bool | None = None) -> structlog.BoundLogger:
    level_name = (level or settings.get("ZWATCH_LOG_LEVEL")).upper()
    tty = sys.stdout.isatty()
    if json is None:
        # `console`: readable lines even through a pipe (honcho, `zwatch up`), colors only on a TTY.
        fmt = settings.get("ZWATCH_LOG_FORMAT")
        json = fmt == "json" or (fmt == "auto" and not tty)
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=tty)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level_name, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    return structlog.get_logger().bind(actor=actor, pid=os.getpid())
