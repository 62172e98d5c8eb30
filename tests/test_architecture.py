"""The invariants ARCHITECTURE.md states, checked on the source so that they stay true."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "saywhy"


def _modules(folder: str = "") -> list[Path]:
    return sorted((SRC / folder).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


# The explainer's fitted internals: only explain/ may touch them; everyone else uses
# decision_function, predict_proba, head_weights_, grounding_alphas, ...
PRIVATE = re.compile(r"\.(_[a-z]\w*|weights_|bias_|prior_|statistics_|evidence_|filter_threshold_|filter_max_)\b")


def test_no_module_outside_explain_reads_an_explainers_private_state():
    offenders = []
    for path in _modules():
        if path.parent.name == "explain":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in re.finditer(r"explainer\w*\s*" + PRIVATE.pattern, line):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {match.group(0)}")
    assert offenders == []


def test_the_explainer_never_branches_on_its_attribute_model():
    assert "evidence_ is None" not in (SRC / "explain" / "explainer.py").read_text()


@pytest.mark.parametrize("layer, forbidden", [
    ("core", ("torch", "PIL", "saywhy.model", "saywhy.explain", "saywhy.apps", "saywhy.data", "saywhy.text",
              "saywhy.pipeline", "saywhy.cli")),
    ("explain", ("torch", "saywhy.model", "saywhy.apps", "saywhy.pipeline", "saywhy.cli", "saywhy.metrics")),
    ("model", ("saywhy.core", "saywhy.explain", "saywhy.apps", "saywhy.pipeline", "saywhy.cli")),
    ("text", ("torch", "saywhy.core", "saywhy.explain", "saywhy.model", "saywhy.apps", "saywhy.cli")),
    ("data", ("saywhy.core", "saywhy.explain", "saywhy.model", "saywhy.apps", "saywhy.pipeline", "saywhy.cli")),
    ("metrics", ("torch", "saywhy.apps", "saywhy.pipeline", "saywhy.cli", "saywhy.render")),
    ("apps", ("saywhy.cli", "saywhy.render")),
    ("render", ("saywhy.cli", "saywhy.pipeline", "saywhy.evaluate")),
])
def test_imports_flow_toward_the_core(layer, forbidden):
    offenders = [f"{path.relative_to(SRC)} imports {name}" for path in _modules(layer) for name in _imports(path)
                 if any(name == f or name.startswith(f + ".") for f in forbidden)]
    assert offenders == []


def test_only_model_hooks_registers_hooks():
    users = [str(p.relative_to(SRC)) for p in _modules() if "register_forward_hook" in p.read_text()
             or "register_full_backward_hook" in p.read_text()]
    assert set(users) <= {"model/hooks.py", "model/layers.py"}


def test_only_the_session_runs_the_network_for_explanations():
    """apps/, evaluate.py, render/ and cli/ go through ExplainerSession: no forward pass of their own."""
    runners = ("extract_activations", "activations_from_batches", "grad_cam_maps", "torch.autograd")
    offenders = [str(p.relative_to(SRC)) for folder in ("apps", "render", "cli") for p in _modules(folder)
                 if any(r in p.read_text() for r in runners)]
    offenders += ["evaluate.py"] if any(r in (SRC / "evaluate.py").read_text() for r in runners) else []
    assert offenders == []
