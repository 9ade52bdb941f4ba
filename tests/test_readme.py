"""README.md runs as written: every ```python block executes on its own (fresh namespace, a
scratch working folder) and prints what it computed; docs/bad-input.md is current."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import bad_input_doc

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.bad_input(
    "README code blocks (ask/tell without `import torch`, snntorch fragment, silent `train()`)",
    "every block runs as written and prints its result",
)
@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs_as_written(index, tmp_path, monkeypatch, capsys):
    code = BLOCKS[index]
    if "import snntorch" in code:
        pytest.importorskip("snntorch")
    monkeypatch.chdir(tmp_path)  # nothing a block writes lands in the repository
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip(), "a README block should show what it computed"


def test_bad_input_doc_is_current():
    committed = bad_input_doc.DOC.read_text() if bad_input_doc.DOC.exists() else ""
    assert committed == bad_input_doc.render(), "run: python tests/bad_input_doc.py"
    assert committed.count("\n| ") >= 20  # the hardening tests are all listed


def test_bad_input_doc_reads_markers_and_aliases(tmp_path):
    (tmp_path / "test_example.py").write_text(
        "import pytest\n"
        "bad_input = pytest.mark.bad_input\n"
        "@pytest.mark.bad_input('a | b', 'refused')\n"
        "def test_one(): pass\n"
        "@bad_input('c', 'fine')\n"
        "@pytest.mark.slow\n"
        "def test_two(): pass\n"
        "def test_three(): pass\n"
    )
    text = bad_input_doc.render(tmp_path)
    assert text.endswith(
        "| a \\| b | refused | `test_example.py::test_one` |\n"
        "| c | fine | `test_example.py::test_two` |\n"
    )
