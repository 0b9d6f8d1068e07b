"""Start QueryMeld Studio: `python launch.py [--checkpoint C] [--workspace DIR] [--host H] [--port P]`.

Binds 127.0.0.1 by default; a public Gradio share link is only made with --share.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from app.studio import Studio
from app.model_host import DEFAULT_CHECKPOINT, ModelHost
from app.ui import build_app, launch_kwargs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="QueryMeld Studio: segment, correct, export and fine-tune in a browser.")
    p.add_argument("--checkpoint", default=None,
                   help=f"model .safetensors (its .json beside it); default {DEFAULT_CHECKPOINT.name}, "
                        "or an untrained tiny model when that file does not exist yet")
    p.add_argument("--workspace", default="workspace",
                   help="folder holding your image folders; annotations autosave in <folder>/.qmn/ (default ./workspace)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link (off by default)")
    p.add_argument("--model-concurrency", type=int, default=1,
                   help="predictions run at the same time (default 1; raise on a GPU)")
    p.add_argument("--no-examples", action="store_true", help="do not write the examples gallery into the workspace")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        print(f"error: --checkpoint {args.checkpoint}: file not found", file=sys.stderr)
        return 2
    try:
        host = ModelHost(args.checkpoint, args.device)
    except ValueError as e:
        print(f"error: --checkpoint {args.checkpoint}: {e}", file=sys.stderr)
        return 2
    if host.untrained:
        print(f"warning: {host.note}", file=sys.stderr)
    studio = Studio(host, Path(args.workspace), make_examples=not args.no_examples)
    demo = build_app(studio, model_concurrency=args.model_concurrency)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_kwargs(studio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
