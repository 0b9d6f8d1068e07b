"""The one prompt rule, used by the API (`Predictor.predict`), the CLI (`qmn.predict --prompts`) and the app.

- A list (or tuple) is taken item by item: each item is one prompt, commas and all.
- A string is split at new lines and at ';' always, and also at commas unless the task is "referring"
  (a referring phrase such as "the dog, left of the car" keeps its commas; give several phrases on
  separate lines or separated by ';').
- Whitespace is collapsed, empty and repeated prompts are dropped (first occurrence kept), a prompt longer
  than MAX_PROMPT_CHARS is cut there, and more than MAX_PROMPTS prompts is an error.
"""
from __future__ import annotations

import re
from typing import Sequence

MAX_PROMPT_CHARS = 1000  # the text encoder reads 256 tokens at most anyway
MAX_PROMPTS = 256


def parse_prompts(prompts: str | Sequence[str] | None, task: str = "") -> list[str]:
    """'person, dog ,, sky' -> ['person', 'dog', 'sky']; 'the dog, left of the car' (referring) -> one phrase."""
    if prompts is None:
        items: list[str] = []
    elif isinstance(prompts, str):
        items = re.split(r"[\n;]" if task == "referring" else r"[\n;,]", prompts)
    else:
        items = [str(p) for p in prompts]
    cleaned = [" ".join(p.split())[:MAX_PROMPT_CHARS] for p in items]
    cleaned = list(dict.fromkeys(p for p in cleaned if p))
    if len(cleaned) > MAX_PROMPTS:
        raise ValueError(f"too many prompts ({len(cleaned)}); at most {MAX_PROMPTS}")
    return cleaned
