"""The README's Python examples run as written (on the real bundled model)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.model
def test_readme_python_examples_run(smollm2, tmp_path, monkeypatch, capsys):
    import attribkit

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    real_load = attribkit.load
    monkeypatch.setattr(  # reuse the session language model; load others (the image model)
        attribkit,
        "load",
        lambda name="smollm2", **kw: smollm2 if name == "smollm2" else real_load(name, **kw),
    )
    namespace: dict = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert "favourite colour is teal" in out and "completeness error" in out
    assert (tmp_path / "colour.json").exists() and (tmp_path / "colour.html").exists()
    assert "tiger cat (224, 224)" in out and (tmp_path / "cat_gradcam.png").exists()
