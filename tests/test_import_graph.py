"""hfssl's modules import only downward: the graph of every import between hfssl modules (at module level, inside
functions and under `if TYPE_CHECKING:`) has no cycle, and no layer imports from a layer above it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hfssl"

# Lowest first; a module may import from its own layer and the layers before it.
LAYERS = [
    ("hfssl.distributed", "hfssl.optim"),
    ("hfssl.augmentations",),
    ("hfssl.data", "hfssl.collators", "hfssl.losses"),
    ("hfssl.models",),
    ("hfssl.export",),
    ("hfssl.trainers", "hfssl.evaluation"),
    ("hfssl.cli",),  # what the recipes share
    ("hfssl",),  # the package's __init__: exports only
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the hfssl modules it imports (the named submodule where `from package import submodule`)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names if alias.name.split(".")[0] == "hfssl")
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                if base.split(".")[0] != "hfssl":
                    continue
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.add(submodule if submodule in modules else base)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], path[len(path):] = 1, [node]
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer_of(module: str) -> int:
    matches = [(len(prefix), index) for index, layer in enumerate(LAYERS) for prefix in layer
               if module == prefix or module.startswith(prefix + ".")]  # fmt: skip
    assert matches, f"{module} belongs to no layer: add it to LAYERS in {__file__}"
    return max(matches)[1]


def test_the_import_graph_is_seen():
    graph = import_graph()
    assert "hfssl.trainers.ssl_trainer" in graph["hfssl.trainers.moco"]
    assert "hfssl.models.teacher" in graph["hfssl.trainers.ssl_trainer"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_hfssl_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layers_import_only_downward():
    upward = sorted(f"{module} -> {target}" for module, targets in import_graph().items() for target in targets
                    if layer_of(target) > layer_of(module))  # fmt: skip
    assert upward == [], "imports that run up the layers:\n" + "\n".join(upward)
