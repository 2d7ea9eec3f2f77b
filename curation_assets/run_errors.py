"""What `curation run` says when a Dagster step fails: the cause in one line, tracebacks on request.

Dagster wraps a step's exception in its own errors and prints the whole chain (twice: the
step failure and the run failure). The user needs the project's own message (which names the
source, file and record) and the root cause under it (`EOF inside string starting at row 2`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import dagster as dg


@dataclass(frozen=True)
class StepFailure:
    step: str  # the asset's key (tiny/bad_src), or the step key when it is no asset's
    cause: str  # one line
    traceback: str  # Dagster's rendering of the whole chain


def _chain(error: Any) -> list[Any]:
    """The error, what caused it, what caused that, ... (explicit causes first, else the context)."""
    chain = []
    while error is not None and len(chain) < 50:
        chain.append(error)
        error = error.cause or error.context
    return chain


def _body(error: Any) -> str:
    """The message without the `module.Class: ` Dagster puts in front, on one line."""
    message = " ".join(error.message.split())
    name = error.cls_name or ""
    head, sep, rest = message.partition(": ")
    return rest if sep and name and (head == name or head.endswith("." + name)) else message


def _text(error: Any) -> str:
    return f"{error.cls_name}: {_body(error)}" if error.cls_name else _body(error)


def failure_cause(error: Any) -> str:
    """The first error that is not Dagster's own wrapping and, when it does not already say it,
    the root cause: "IngestError: source 'x': cannot read F (cause: ParserError: EOF inside ...)"."""
    chain = [e for e in _chain(error) if not (e.cls_name or "").startswith("Dagster")] or _chain(error)
    outer, root = chain[0], chain[-1]
    text = _text(outer)
    if root is not outer and _body(root) and _body(root) not in text:
        text += f" (cause: {_text(root)})"
    return text


def step_failures(result: Any, definitions: dg.Definitions) -> list[StepFailure]:
    """The failed steps of an in-process run, named by their asset keys."""
    by_step = {
        "__".join(key.path): key.to_user_string()
        for asset in (definitions.assets or [])
        if isinstance(asset, dg.AssetsDefinition)
        for key in asset.keys
    }
    failures = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        error = event.step_failure_data.error
        step = by_step.get(event.step_key or "", event.step_key or "?")
        if error is None:
            failures.append(StepFailure(step, event.message or "failed", ""))
        else:
            failures.append(StepFailure(step, failure_cause(error), error.to_string()))
    return failures


class _DropTracebacks(logging.Filter):
    """Cut the error chain Dagster appends to a failure event's console line (kept in the run log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(record, "dagster_meta", None)
        event = meta.get("dagster_event") if isinstance(meta, dict) else None
        data = getattr(event, "event_specific_data", None)
        error = getattr(data, "error", None)
        if error is not None and isinstance(record.msg, str):
            shown = getattr(data, "error_display_string", None) or error.to_string()
            suffix = f"\n\n{shown}"
            if record.msg.endswith(suffix):
                record.msg = record.msg[: -len(suffix)] + f" ({failure_cause(error)})"
        return True


def brief_console_logger(*, tracebacks: bool) -> dg.LoggerDefinition:
    """Dagster's colored console logger, without the tracebacks unless `tracebacks`."""

    def console(init_context: Any) -> logging.Logger:
        logger = dg.colored_console_logger.logger_fn(init_context)
        if not tracebacks:
            logger.addFilter(_DropTracebacks())
        return logger

    # what @dg.logger builds, written out: the decorator is typed as returning a definition or a decorator
    return dg.LoggerDefinition(
        console,
        config_schema=dg.colored_console_logger.config_schema,
        description="The colored console logger; failures in one line unless --verbose.",
    )
