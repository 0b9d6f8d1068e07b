"""The answer of every action: a sentence for the user, whether the action did what was asked, and a value.

Refusals are replies, not exceptions: an exception reaching Gradio puts every output of the event into a red
"Error" state, and a user action (a shortcut with nothing selected, a second roll back) must never do that.
Helpers deeper down raise ValueError with the sentence; `refusals_as_replies` converts it at the action.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator

USER_ERRORS = (ValueError, FileNotFoundError)


@dataclass(frozen=True)
class Reply:
    message: str = ""
    ok: bool = True
    value: Any = None


def refused(message: str) -> Reply:
    return Reply(message, ok=False)


def refusals_as_replies(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the ValueError / FileNotFoundError of an action (plain or generator) into a refused Reply."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Reply]:
            try:
                yield from fn(*args, **kwargs)
            except USER_ERRORS as e:
                yield refused(str(e))
        return generator

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Reply:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            return refused(str(e))
    return plain
