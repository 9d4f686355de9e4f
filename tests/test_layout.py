"""The package's shape: it installs one top-level package, so a third-party ``adapters`` package (the adapter
library for transformers has that name) is unaffected; the plug-in checkpoint format is read and written in one
module; the tree is ruff-clean."""
import configparser
import shutil
import subprocess
import sys

import pytest
from setuptools import find_namespace_packages

from tests.conftest import REPO


def test_only_iqp_plugin_is_installed_at_the_top_level():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    find = cfg["options.packages.find"]
    packages = find_namespace_packages(str(REPO), include=find["include"].split(), exclude=find["exclude"].split())
    assert {p.split(".")[0] for p in packages} == {"iqp_plugin"}, packages
    assert "iqp_plugin.report.assets" in packages and not any("__pycache__" in p for p in packages)
    assert "py_modules" not in cfg["options"]


def test_another_installed_adapters_package_is_unaffected(tmp_path):
    other = tmp_path / "site" / "adapters"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("WHO = 'the other adapters package'\n")
    code = ("import iqp_plugin\niqp_plugin.register()\nimport adapters\nimport iqp_plugin.adapters as ours\n"
            "print(adapters.WHO)\nprint(sorted(ours.ADAPTERS)[:1])\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == "the other adapters package" and proc.stdout.splitlines()[1] != "[]"


def test_the_plugin_checkpoint_format_is_written_and_read_in_one_module():
    """Only iqp_plugin/io/plugin_checkpoint.py names the keys that only the format has."""
    keys = ('"plugin_opt"', "'plugin_opt'", '"sha256"', "'sha256'")
    owners = {p.relative_to(REPO).as_posix() for p in (REPO / "iqp_plugin").rglob("*.py")
              if any(key in p.read_text() for key in keys)}
    assert owners == {"iqp_plugin/io/plugin_checkpoint.py"}, owners


def test_the_tree_is_ruff_clean():
    ruff = shutil.which("ruff") or str(REPO / ".venv" / "bin" / "ruff")
    if not shutil.which(ruff):
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    proc = subprocess.run([ruff, "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
