"""``saywhy ground IMAGE --attribute "red crown" ...``: where in the image is each attribute (eq. 9).

Thin, like the rest of the CLI: parse, call :func:`saywhy.apps.grounding.ground`, write
one PNG with a panel per attribute, print each attribute's peak. Wired into
``saywhy/cli.py`` by ``register(subparsers)`` and ``COMMANDS["ground"] = run_ground``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from saywhy.cli_common import add_session_options, load_session


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``ground`` sub-command to ``saywhy``'s sub-parsers."""
    p = subparsers.add_parser("ground", help="heatmaps of where attributes are in an image (eq. 9)")
    p.add_argument("image", type=Path)
    p.add_argument("--attribute", "-a", action="append", required=True,
                   help='an "adjective noun" attribute from the explainer\'s vocabulary; repeat for several')
    p.add_argument("--out", type=Path, help="overlay PNG to write (default: IMAGE_ground.png in the current folder)")
    p.add_argument("--sigma", default="minmax", help="sigma of eq. 9 over positions: minmax, l1, softmax, identity (default minmax)")
    p.add_argument("--json", action="store_true", help="print the peaks as JSON")
    add_session_options(p)
    return p


def run_ground(args: argparse.Namespace) -> None:
    """Ground every ``--attribute`` in ``args.image`` and write the overlay."""
    from saywhy.apps.grounding import ground
    from saywhy.data.images import open_image
    from saywhy.render.overlay import overlay_figure

    session = load_session(args)
    grounding = ground(session, args.image, args.attribute, sigma=args.sigma)
    peaks = grounding.peaks()
    out = args.out or Path(f"{Path(args.image).stem}_ground.png")
    overlay_figure(open_image(args.image), [grounding.upsampled(i) for i in range(len(args.attribute))],
                   args.attribute, out, peaks=[tuple(p) for p in peaks])
    predicted = session.explainer.readable_name(grounding.predicted)
    if args.json:
        print(json.dumps({"image": str(args.image), "overlay": str(out), "predicted": predicted,
                          "peaks": {t: [float(x), float(y)] for t, (x, y) in zip(args.attribute, peaks)}}))
        return
    for attribute, (x, y) in zip(args.attribute, peaks):
        print(f"{attribute}: peak at x={x:.0f}, y={y:.0f}")
    print(f"{out} (predicted: {predicted})")
