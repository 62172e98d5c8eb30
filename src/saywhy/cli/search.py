"""``saywhy search -a ATTRIBUTE...``: rank images by the probability that they show attributes (Figure 6)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from saywhy.cli.common import add_device_options, add_command, add_attribute_option, add_session_options, int_at_least, load_session
from saywhy.errors import SaywhyError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "search",
                    help="rank images by the probability that they show attributes (Figure 6)")
    add_attribute_option(p)
    p.add_argument("--images", type=Path,
                   help="folder of images to search (default: the test images of the explainer's dataset)")
    p.add_argument("--top", type=int_at_least(1), default=20, help="how many ranked images to print (default 20)")
    p.add_argument("--out", type=Path, help="also write a contact sheet of the top images (PNG or JPEG)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_session_options(p)
    add_device_options(p)


def run(args: argparse.Namespace) -> None:
    from saywhy.data.inputs import list_images
    from saywhy.search import query_indices, ranked_by, search_images

    session = load_session(args)
    query_indices(session.explainer, args.attribute)  # an unknown attribute fails before any image is read
    if args.images:
        items = list_images(args.images)
    else:
        from saywhy.data.cub import read_cub

        root = session.explainer.metadata_.get("dataset_root")
        if not root or not Path(root).is_dir():
            raise SaywhyError("the explainer's dataset is not at hand: pass --images DIR")
        items = read_cub(root).split(train=False)
    result = search_images(session, items, args.attribute, top=args.top)
    if args.out:
        from saywhy.render.contact_sheet import contact_sheet

        contact_sheet([(h.path, f"{h.rank}. {' '.join(f'{p:.0%}' for p in h.probabilities.values())}"
                                f"{' *' if h.in_explanation else ''}\n{h.predicted_class}")
                       for h in result.hits], args.out, title=" + ".join(result.query))
    if args.json:
        print(json.dumps(result.to_dict()))
        return
    unreadable = f", {result.n_unreadable} unreadable skipped" if result.n_unreadable else ""
    score = session.explainer.score_name.split(":")[0]
    print(f"query: {' + '.join(result.query)}; ranked by the sum of {ranked_by(session.explainer)} over the attributes; "
          f"each hit shows {score} per attribute; * = all cited in its explanation "
          f"({result.n_in_explanation} of {result.n_images} images{unreadable})")
    for hit in result.hits:
        scores = ", ".join(f"{t} {p:.0%}" if p >= 0.005 else f"{t} {p:.2g}" for t, p in hit.probabilities.items())
        print(f"{hit.rank:4d}  {scores}  {'*' if hit.in_explanation else ' '}  {hit.path}  ({hit.predicted_class})")
    if args.out:
        print(f"contact sheet: {args.out}")
