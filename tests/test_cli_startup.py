"""The ``iqp`` launcher starts without torch: help and argument errors load no heavy module; the commands that
build models still find everything registered."""
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

HEAVY = ("torch", "torchvision", "basicsr", "pyiqa")


def launch(*argv: str) -> tuple[int, dict]:
    """Run ``iqp ARGV`` in a fresh interpreter; exit code and which heavy modules it had loaded at exit."""
    code = ("import atexit, json, sys\n"
            f"atexit.register(lambda: print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}})))\n"
            f"from iqp_plugin.cli import main\nmain({list(argv)!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [("--help",), ("score", "--help"), ("train", "--help"), ("export", "--bogus"),
                                  ("score", "--bogus"), ("restore", "-i", "x"), ("compare", "--help"), ("nonsense",)])
def test_help_and_argument_errors_load_no_torch(argv):
    code, loaded = launch(*argv)
    assert code in (0, 2)
    assert not any(loaded.values()), loaded


def test_score_loads_neither_basicsr_nor_pyiqa(tmp_path):
    """``iqp score --summary`` runs the scoring module: torch, but no BasicSR registration and no pyiqa."""
    csv = tmp_path / "s.csv"
    csv.write_text("imagename,niqe,score\na.png,5.0,1.0\nb.png,6.0,0.0\n")
    code, loaded = launch("score", "--summary", str(csv))
    assert code == 0 and loaded["torch"]
    assert not loaded["basicsr"] and not loaded["pyiqa"] and not loaded["torchvision"]


def test_plain_import_is_light_and_register_registers_everything():
    """``import iqp_plugin`` loads no torch; :func:`iqp_plugin.register` (or accessing ``IQPWrapper``) registers
    the project's archs, losses and models in BasicSR."""
    code = ("import sys, iqp_plugin\nassert 'torch' not in sys.modules\niqp_plugin.register()\n"
            "from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY\n"
            "print(all(n in r for r, n in [(ARCH_REGISTRY, 'IQPWrapper'), (LOSS_REGISTRY, 'QualityLoss'), "
            "(MODEL_REGISTRY, 'IQPModel'), (ARCH_REGISTRY, 'CodeFormer')]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == "True", proc.stderr[-2000:]


def test_python_m_iqp_plugin_cli_is_light_too():
    """``python -m iqp_plugin.cli`` (as the benchmarks call it) is as light as the ``iqp`` script."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "iqp_plugin.cli", "score", "--bogus"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert proc.returncode == 2 and "iqp_plugin.cli.parsers" in imported
    assert not imported & set(HEAVY), imported & set(HEAVY)
