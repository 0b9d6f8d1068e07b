"""Wiring helpers shared by the tabs: no event may end in Gradio's red "Error" state.

Actions already answer refusals with a Reply; `guarded` catches what is left (a bug), logs it, shows a warning
toast and leaves every output as it was, and `toast` shows a refused Reply's sentence as a warning.
"""
from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable, Sequence

import gradio as gr

from app.actions.reply import Reply

log = logging.getLogger("qmn.app")


def toast(reply: Reply) -> Reply:
    if not reply.ok and reply.message:
        gr.Warning(reply.message)
    return reply


def unchanged(outputs: int) -> Any:
    return gr.skip() if outputs == 1 else tuple(gr.skip() for _ in range(outputs))


def _unexpected(error: Exception, outputs: int) -> Any:
    log.exception("unexpected error in an event handler")
    gr.Warning(f"Unexpected error ({type(error).__name__}): {error}. Nothing was changed; the log has details.")
    return unchanged(outputs)


def guarded(fn: Callable[..., Any], outputs: int) -> Callable[..., Any]:
    """`fn` (plain, coroutine or generator) with any exception turned into a toast and unchanged outputs."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def coroutine(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - logged, shown, outputs kept
                return _unexpected(e, outputs)
        return coroutine

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - logged, shown, outputs kept
                yield _unexpected(e, outputs)
        return generator

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - logged, shown, outputs kept
            return _unexpected(e, outputs)
    return plain


def on(triggers: Any, fn: Callable[..., Any], inputs: Sequence[Any], outputs: Sequence[Any], **kwargs: Any) -> Any:
    """gr.on with `fn` guarded; returns the event (for cancels=)."""
    triggers = triggers if isinstance(triggers, list) else [triggers]
    return gr.on(triggers, guarded(fn, len(outputs)), list(inputs), list(outputs), **kwargs)
