"""``saywhy describe CLASS...``: what the network looks for in a class (eq. 7-8); ``--list`` lists the classes;
``--synonyms`` prints the merged word groups (the format ``saywhy fit --synonyms FILE`` reads)."""
from __future__ import annotations

import argparse
import json

from saywhy.cli.common import add_command, add_session_options, class_ref, load_explainer


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "describe", help="class-level description (eq. 7-8)")
    p.add_argument("classes", nargs="*", type=class_ref, metavar="CLASS",
                   help="class names or indices (0-based, as --list prints them)")
    p.add_argument("--list", action="store_true", help="list the classes with their indices")
    p.add_argument("--synonyms", action="store_true",
                   help="print the synonym groups merged into one attribute, one group per line, the written word first")
    p.add_argument("--json", action="store_true")
    add_session_options(p)


def run(args: argparse.Namespace) -> None:
    explainer = load_explainer(args)
    if args.synonyms:
        groups = explainer.synonyms_
        if args.json:
            print(json.dumps(groups.to_dict()))
        else:
            print(f"# {len(groups.groups)} synonym group(s), from {groups.source}")
            print(groups.to_text(), end="")
        return
    if args.list or not args.classes:
        for i in range(len(explainer.class_names_)):
            print(f"{i:4d}  {explainer.readable_name(i)}")
        return
    for name in args.classes:
        description = explainer.describe(name)
        if args.json:
            print(json.dumps(description.to_dict()))
        else:
            print(description.sentence)
