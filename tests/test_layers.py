"""The package's layering, read from the source: every import points down (or stays in its layer), and the
pure core never imports Ray, so that its logic is unit-tested without a cluster."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "patchray"

# Bottom to top. A module may import from its own layer and the layers below it.
LAYERS = [
    # the pure core: config, patches, nets, shards, metrics, plots, device helpers; no Ray
    {"config", "accel", "locks", "patches", "models", "shards", "metrics", "report", "probe", "tracking"},
    # Ray's edge: Data (its tasks, its scheduler's pause, its stream), the adapter over its private state, logging
    {"ray_compat", "console", "data_tasks", "data_scheduler", "pipeline"},
    {"train"},                               # Ray Train: the training jobs
    {"tune", "bench", "experiments"},        # jobs built on training
    {"cli"},                                 # every job's command line
]
PURE = LAYERS[0]


def _unit(module: str) -> str:
    """The top-level part of patchray a dotted module name belongs to (``patchray.train.runner`` -> train)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "patchray"


def _imports(path: Path, package_dir: Path = PACKAGE) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, lazy ones inside functions included."""
    own = ".".join(path.relative_to(package_dir.parent).with_suffix("").parts)
    package = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # `from patchray import config` imports the module patchray.config
            found += [(f"{name}.{alias.name}" if name == "patchray" else name, node.lineno) for alias in node.names]
    return found


def _layer(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise AssertionError(f"patchray.{unit} is in no layer of tests/test_layers.py: place it")


def violations(package_dir: Path = PACKAGE) -> tuple[list[str], list[str]]:
    """Imports from a layer above, and Ray imports in the pure core, as ``file:line imports name``."""
    upward, ray_in_core = [], []
    for path in package_dir.rglob("*.py"):
        unit = _unit(".".join(path.relative_to(package_dir.parent).with_suffix("").parts))
        if unit == "__init__":
            continue
        for name, line in _imports(path, package_dir):
            where = f"{path.relative_to(package_dir.parent)}:{line}"
            if name.startswith("patchray.") and _layer(_unit(name)) > _layer(unit):
                upward.append(f"{where} imports {name}")
            if unit in PURE and (name == "ray" or name.startswith("ray.")):
                ray_in_core.append(f"{where} imports {name}")
    return upward, ray_in_core


def test_every_import_points_down_and_the_core_never_imports_ray():
    assert len(list(PACKAGE.rglob("*.py"))) > 50  # the walk finds the package
    upward, ray_in_core = violations()
    assert not upward, upward
    assert not ray_in_core, ray_in_core


def test_an_upward_import_and_ray_in_the_core_are_caught_even_inside_a_function(tmp_path):
    core = tmp_path / "patchray" / "patches"
    core.mkdir(parents=True)
    (core / "bad.py").write_text("import numpy\n\n\ndef f():\n    import ray\n"
                                 "    from patchray.train.runner import fit\n    return fit\n")
    (core / "good.py").write_text("from .grid import PatchGrid\nfrom patchray import config\n")
    upward, ray_in_core = violations(tmp_path / "patchray")
    assert upward == ["patchray/patches/bad.py:6 imports patchray.train.runner"]
    assert ray_in_core == ["patchray/patches/bad.py:5 imports ray"]
