"""The lab is only a provisioner: no product module outside ``cni_runbook.lab`` and the lab
provisioner (``cni_runbook.provision.lab``) imports it, lazily or not."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "lib" / "cni_runbook"
ALLOWED = {"lab", "provision/lab.py", "cli.py"}  # cli.py only registers the `lab` subcommand


def lab_imports(source: str, rel: Path) -> list[str]:
    """The imports in ``source`` (module ``rel`` inside the package) that name cni_runbook.lab."""
    found = []
    for node in ast.walk(ast.parse(source, str(rel))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name == "cni_runbook.lab" or a.name.startswith("cni_runbook.lab.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # resolve the relative import against the module's package
                base = list(rel.parent.parts)[: len(rel.parent.parts) - (node.level - 1)] if node.level > 1 else list(rel.parent.parts)
                module = ".".join(["cni_runbook", *base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names = [module] + [f"{module}.{a.name}" for a in node.names]
            if any(n == "cni_runbook.lab" or n.startswith("cni_runbook.lab.") for n in names):
                found.append(module + ":" + ",".join(a.name for a in node.names))
    return found


def allowed(path: Path) -> bool:
    rel = path.relative_to(PACKAGE).as_posix()
    return rel.split("/")[0] == "lab" or rel in ALLOWED


def test_no_product_module_imports_the_lab():
    offenders = {str(p.relative_to(PACKAGE)): lab_imports(p.read_text(), p.relative_to(PACKAGE))
                 for p in PACKAGE.rglob("*.py") if not allowed(p)}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_sees_relative_and_lazy_imports():
    """The detector itself: lazy, relative and absolute imports of the lab are found."""
    source = ("def f():\n    from ..lab.images import image_ref\n    import cni_runbook.lab.config\n"
              "    from .. import lab\n    from ..kube import client\n")
    assert lab_imports(source, Path("kube/client.py")) == [
        "cni_runbook.lab.images:image_ref", "cni_runbook.lab.config", "cni_runbook:lab"]
