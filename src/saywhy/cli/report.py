"""``saywhy report``: the web app's views as one self-contained HTML file (images embedded, nothing fetched)."""
from __future__ import annotations

import argparse
from pathlib import Path

from saywhy.cli.common import add_command, add_dataset_options, add_session_options, dataset_and_session, int_at_least


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "report",
                    help="explanations, classes, searches, failures and evaluation as one self-contained HTML file")
    add_dataset_options(p, "the explainer's own")
    p.add_argument("--out", type=Path, default=Path("saywhy-report.html"),
                   help="the HTML file to write (default ./saywhy-report.html); only a saywhy report is ever replaced")
    p.add_argument("--images", type=int_at_least(1), default=24, help="test images explained (default 24, failures first)")
    p.add_argument("--classes", type=int_at_least(1), default=60, help="classes described, in order (default 60)")
    p.add_argument("--searches", type=int_at_least(0), default=10, help="attribute searches shown (default 10)")
    p.add_argument("--failures", type=int_at_least(1), default=30, help="misclassified images listed (default 30)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="which test images are drawn")
    p.add_argument("--eval", type=Path, metavar="PATH",
                   help="a 'saywhy evaluate' result (NAME_eval.json) or its folder (default ./benchmarks/results)")
    add_session_options(p)


def run(args: argparse.Namespace) -> None:
    from saywhy.web.report import build_report, check_report_target, write_report

    check_report_target(args.out)  # before any work
    dataset, session, _ = dataset_and_session(args)
    html, counts = build_report(session, dataset, n_images=args.images, n_classes=args.classes,
                                n_searches=args.searches, n_failures=args.failures, seed=args.seed,
                                eval_path=args.eval, title=str(dataset.root))
    out = write_report(html, args.out)
    print(f"explained {counts['explained']} of {counts['test_images']} test images; {counts['classes']} of "
          f"{counts['all_classes']} classes; {counts['searches']} searches; {counts['failures_shown']} of "
          f"{counts['failures']} failures")
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB)")
