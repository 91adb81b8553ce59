"""The README's Python snippets run as written (the first two blocks of the "Python API" section)."""

from __future__ import annotations

import re

from conftest import REPO_ROOT

from bertkit.heads import HEADS


def _python_blocks() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_encoder_and_model_snippet_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_python_blocks()[0], "README.md[0]", "exec"), scope)  # noqa: S102
    assert scope["out"]["logits"].shape[0] == 2
    assert (tmp_path / "my_model" / "model_metadata.json").is_file()


def test_custom_head_snippet_runs() -> None:
    scope: dict = {}
    try:
        exec(compile(_python_blocks()[1], "README.md[1]", "exec"), scope)  # noqa: S102
        model = scope["model"]
        assert model.head.registry_name == "my_mse_head"
    finally:
        if "my_mse_head" in HEADS:
            HEADS.unregister("my_mse_head")
