"""The README's Python block runs as written, and the commands it names exist."""
import re

from tests.conftest import REPO


def test_readme_python_block_runs_as_written(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)  # the block saves plugin.pth in the working folder
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip() == "pixel (1, 3, 64, 64)"
    assert (tmp_path / "plugin.pth").stat().st_size > 0
