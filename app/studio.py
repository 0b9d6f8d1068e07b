"""The app's shared context: the served model, the workspace root, fine-tune jobs, the examples, and the secret
that lets a browser's saved session (gr.BrowserState) survive a server restart."""
from __future__ import annotations

import secrets
from pathlib import Path

from app.examples import prepare_examples
from app.finetune import FineTuneRegistry
from app.model_host import ModelHost
from qmn.io_utils import atomic_write_bytes


class Studio:
    def __init__(self, host: ModelHost, root: Path, make_examples: bool = True):
        self.host = host
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.finetunes = FineTuneRegistry()
        self.examples_dir = self.root / "examples"
        self.examples: list[tuple[str, str]] = prepare_examples(self.examples_dir) if make_examples else []

    def browser_secret(self) -> str:
        """A random key kept in `<root>/.qmn/browser_secret`: it encrypts what the browser stores (folder, image,
        prompts), and being fixed, a restart still reads it back."""
        path = self.root / ".qmn" / "browser_secret"
        if not path.is_file():
            atomic_write_bytes(path, secrets.token_hex(32).encode())
        return path.read_text().strip()
