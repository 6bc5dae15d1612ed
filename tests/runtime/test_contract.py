"""The boundary DESIGN.md promises: the runtime never imports torch, transformers, onnx or the toolchain."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import edge_ser

HEAVY = ("torch", "transformers", "onnx", "onnxscript", "nncf", "edge_ser_export", "export", "opensmile", "scipy")
RUNTIME = Path(edge_ser.__file__).parent


def test_importing_every_runtime_module_pulls_in_nothing_heavy():
    code = f"""
import importlib, pkgutil, sys
import edge_ser
for m in pkgutil.walk_packages(edge_ser.__path__, "edge_ser."):
    if m.name != "edge_ser.__main__":
        importlib.import_module(m.name)
heavy = sorted({{n.split(".")[0] for n in sys.modules}} & set({HEAVY!r}))
assert not heavy, heavy
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_runtime_source_never_names_the_toolchain():
    for path in RUNTIME.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in HEAVY for n in names), (path, names)


def test_export_without_the_toolchain_names_the_extra(tmp_path):
    """As in a runtime-only install: torch cannot be imported."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
        "sys.meta_path.insert(0, NoTorch())\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    (tmp_path / "data").mkdir()
    r = subprocess.run([sys.executable, "-m", "edge_ser", "export", "--data", str(tmp_path / "data"), "--out",
                        str(tmp_path / "b")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: edge-ser export needs the export toolchain")
    assert "pip install edge-ser[export]" in r.stderr
