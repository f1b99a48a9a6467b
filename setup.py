"""Build-time files of the wheel (everything else is in pyproject.toml).

``build_py`` also writes, as package data:

- ``edge/serving/protos/descriptors.binpb`` (+ ``.sha256`` of the .proto sources): the TF Serving
  descriptor set compiled with protoc (grpcio-tools, a build dependency only), so a device never
  needs a compiler or grpcio-tools at run time;
- ``edge/_data/``: the systemd units, the example config, man pages and shell completions generated
  from the programs' own argument parsers (standard-library modules; see packaging/generate.py).

For an editable install (PEP 660) setuptools runs build_py in editable mode and the files are written
next to the sources instead (they are in .gitignore).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # build_meta does not; the modules loaded below import edge.errors and edge.util


def _load(path: Path, name: str):  # one module of the project, without running its package's __init__
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class build_py_with_generated(build_py):
    def run(self) -> None:
        super().run()
        base = ROOT if self.editable_mode else Path(self.build_lib)
        self._descriptors(base / "edge" / "serving" / "protos")
        data = base / "edge" / "_data"
        shutil.copytree(ROOT / "systemd", data / "systemd", dirs_exist_ok=True)
        shutil.copytree(ROOT / "examples", data / "examples", dirs_exist_ok=True)
        self._man_and_completion(data)

    def _descriptors(self, out_dir: Path) -> None:
        compile_module = _load(ROOT / "edge" / "serving" / "protos" / "_compile.py", "_edge_protos_compile")
        out_dir.mkdir(parents=True, exist_ok=True)
        compile_module.write_packaged_set(out_dir)

    def _man_and_completion(self, data: Path) -> None:
        generate = _load(ROOT / "packaging" / "generate.py", "_edge_packaging_generate")
        generate.write_man_pages_and_completions(data, version=self.distribution.get_version())


setup(cmdclass={"build_py": build_py_with_generated})
