"""The README's code runs as written: the example of "Use an estimator in your own model"."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def section_code(heading: str) -> str:
    """The first ```python block after ``heading`` in the README."""
    text = README.read_text()
    start = text.index(heading)
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def test_use_an_estimator_in_your_own_model_runs_as_written():
    code = section_code("## Use an estimator in your own model")
    assert 15 <= len([line for line in code.splitlines() if line.strip()]) <= 30
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    loss = namespace["surrogate"] + namespace["kl"]
    assert namespace["surrogate"].shape == (64,) and torch.isfinite(loss).all()
    first = namespace["f"](torch.nn.functional.one_hot(torch.zeros(64, 20, dtype=torch.long), 10).float())
    assert first.shape == (64,)
    assert namespace["info"]["loss"].dim() == 0        # the estimator's diagnostics, without a replica axis
