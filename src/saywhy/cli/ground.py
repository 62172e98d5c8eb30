"""``saywhy ground IMAGE -a "red crown" ...``: where in the image is each attribute (eq. 9).

Writes one PNG with a panel per attribute and prints each attribute's peak.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from saywhy.cli.common import add_device_options, add_attribute_option, add_command, add_session_options, box, load_session
from saywhy.cli.fit import SIGMAS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "ground", help="heatmaps of where attributes are in an image (eq. 9)")
    p.add_argument("image", type=Path)
    add_attribute_option(p)
    p.add_argument("--out", type=Path, help="overlay PNG to write (default: IMAGE_ground.png in the current folder)")
    p.add_argument("--sigma", default="minmax", choices=SIGMAS, help="sigma of eq. 9 over positions (default minmax)")
    p.add_argument("--json", action="store_true", help="print the peaks as JSON")
    p.add_argument("--box", type=box, metavar="X,Y,W,H", help="ground in this region of the image only, in pixels")
    add_session_options(p)
    add_device_options(p)


def run(args: argparse.Namespace) -> None:
    from saywhy.apps.grounding import ground
    from saywhy.data.images import open_image
    from saywhy.render.overlay import overlay_figure

    session = load_session(args)
    grounding = ground(session, args.image, args.attribute, sigma=args.sigma, box=args.box)
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
