"""The package's layers point one way: nothing imports from a layer above its own.

cli -> serving -> tasks -> training, decoding, data, viz, interop, ... -> models -> layers ->
attention, positional, masks, config. The test reads every module's imports (those inside functions too: a lazy
import is still an arrow; ``if TYPE_CHECKING:`` blocks are annotations, not arrows) and fails on any
that runs up, naming the file, the line and both layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "aiayn"

#: Bottom to top. A module belongs to the first layer with a matching name (its first dotted part).
LAYERS: list[tuple[str, set[str]]] = [
    (
        "core",
        {
            "errors",
            "config",
            "masks",
            "positional",
            "attention",
            "local_attention",
            "kept_weights",
            "dropout",
            "init",
            "logits",
        },
    ),
    ("layers", {"layers", "decoding_state"}),
    ("models", {"models"}),
    (
        "services",
        {"training", "decoding", "data", "viz", "interop", "metrics", "modeldir", "quantize"},
    ),
    ("tasks", {"tasks", "experiments"}),
    ("serving", {"serving"}),
    ("cli", {"cli", "bench", "__main__", "__init__"}),
]


def layer_of(module: str) -> int:
    """``"training.trainer"`` -> its layer's index."""
    head = module.split(".")[0]
    for index, (_, names) in enumerate(LAYERS):
        if head in names:
            return index
    raise AssertionError(f"module aiayn.{module} belongs to no layer: add it to LAYERS")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every import node, skipping ``if TYPE_CHECKING:`` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The aiayn modules an import names, relative to the package (``"training.trainer"``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
        return [n.removeprefix("aiayn.") for n in names if n.startswith("aiayn.")]
    if node.level == 0:
        if node.module == "aiayn":
            return [a.name for a in node.names]
        if node.module and node.module.startswith("aiayn."):
            return [node.module.removeprefix("aiayn.")]
        return []
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    if node.module:
        return [".".join([*base, node.module])]
    return [".".join([*base, a.name]) for a in node.names]  # from . import x


def upward_imports() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if module == "__init__" or module == "__main__":
            continue
        own = layer_of(module)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _imports(tree):
            for target in _targets(node, module, path.name == "__init__.py"):
                if target and layer_of(target) > own:
                    found.append(
                        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {module} "
                        f"({LAYERS[own][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
                    )
    return found


def test_no_module_imports_from_a_layer_above_its_own():
    assert upward_imports() == []


def test_the_checker_sees_an_upward_import():
    tree = ast.parse("def f():\n    from ..tasks.translation import Translator\n")
    (node,) = list(_imports(tree))
    (target,) = _targets(node, "training.trainer", False)
    assert target == "tasks.translation" and layer_of(target) > layer_of("training.trainer")
