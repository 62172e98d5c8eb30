"""The invariants ARCHITECTURE.md states, checked on the source so that they stay true."""
from __future__ import annotations

import ast
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
# decision_function, predict_proba, head_weights_, grounding_alphas, readable_scores, ...
INTERNALS = {"weights_", "bias_", "prior_", "statistics_", "evidence_", "filter_threshold_", "filter_max_",
             "attribute_model_", "cooccurrence_", "class_mean_pooled_", "pdf_"}
# torch's own: a tensor's in-place version counter, how model/memo.py and the session notice changed weights/inputs
TORCH_PRIVATE = {"_version"}


def _attribute_reads(path: Path) -> list[tuple[int, str, str]]:
    """(line, receiver, attribute) of every ``receiver.attribute`` read in a module, receivers that
    are imported modules (``argparse._SubParsersAction``) left out."""
    tree = ast.parse(path.read_text())
    modules = {(alias.asname or alias.name).split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            receiver = ast.unparse(node.value)
            if receiver.split(".")[0] not in modules:
                reads.append((node.lineno, receiver, node.attr))
    return reads


def test_no_module_outside_explain_reads_an_explainers_private_state():
    offenders = []
    for path in _modules():
        if path.parent.name == "explain":
            continue
        for line, receiver, attribute in _attribute_reads(path):
            private = attribute.startswith("_") and not attribute.startswith("__") and receiver not in ("self", "cls") \
                and attribute not in TORCH_PRIVATE
            if private or attribute in INTERNALS:
                offenders.append(f"{path.relative_to(SRC)}:{line}: {receiver}.{attribute}")
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
