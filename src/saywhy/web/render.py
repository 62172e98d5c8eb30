"""The Jinja2 environment both the app and the report render with (templates/ and static/ of this package)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATES, STATIC = HERE / "templates", HERE / "static"
VIEWS = ("explain", "browse", "classes", "search", "debug", "evaluation")


@lru_cache(maxsize=1)
def environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    return Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(template: str, **context) -> str:
    """``template`` filled with ``context``; every page gets the navigation and its kind ("app" or "report")."""
    context.setdefault("kind", "app")
    context.setdefault("inline", False)
    context.setdefault("error", None)
    context.setdefault("csp", None)
    context.setdefault("nav", [(name.capitalize(), f"/{name}") for name in VIEWS])
    context.setdefault("current", None)
    context.setdefault("explainer_name", "")
    if context["inline"]:
        context.setdefault("css", (STATIC / "style.css").read_text())
        context.setdefault("js", (STATIC / "app.js").read_text())
    return environment().get_template(template).render(**context)
