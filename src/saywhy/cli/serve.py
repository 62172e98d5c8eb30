"""``saywhy serve``: explain, contrast, classes, search, debug and evaluation as a local web app."""
from __future__ import annotations

import argparse
from pathlib import Path

from saywhy.cli.common import add_command, add_dataset_options, add_session_options, dataset_and_session, float_in, int_at_least, note

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def port(text: str) -> int:
    value = int_at_least(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be at most 65535, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "serve", help="a local web app: explain, why not, classes, search, debug, evaluation")
    add_dataset_options(p, "the explainer's own")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=port, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--max-upload-mb", type=float_in(0, 1024, low_open=True), default=10.0,
                   help="largest upload accepted, in MB (default 10; the pixel limit is $SAYWHY_MAX_PIXELS)")
    p.add_argument("--eval", type=Path, metavar="PATH",
                   help="a 'saywhy evaluate' result (NAME_eval.json) or its folder (default ./benchmarks/results)")
    add_session_options(p)


def run(args: argparse.Namespace) -> None:
    import uvicorn

    from saywhy.web.app import create_app
    from saywhy.web.media import MediaStore
    from saywhy.web.views import Site

    dataset, session, _ = dataset_and_session(args)
    site = Site(session, dataset, MediaStore(), eval_path=args.eval)
    note(f"classifying the {len(site.test)} test images once (browse, classes and search use them)")
    site.test_activations()
    if args.host not in LOOPBACK:
        note(f"listening on {args.host}: anyone who can reach this machine on port {args.port} can use the app "
             "and upload images to it")
    app = create_app(site, int(args.max_upload_mb * 2**20))
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"saywhy: serving {len(dataset.records)} images at http://{host}:{args.port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
