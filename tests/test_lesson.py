"""docs/pytorch-to-jax.md is what `mnist_common.lesson` generates from the code now, so it cannot drift."""

from __future__ import annotations

import pytest

from mnist_common import lesson


def test_the_page_is_what_the_code_generates():
    assert lesson.PAGE.read_text() == lesson.page(), (
        "docs/pytorch-to-jax.md is stale: run python -m mnist_common.lesson"
    )


def test_every_section_shows_code_from_both_frameworks_and_every_tuned_form_its_ledger_rows():
    text = lesson.page()
    for section in lesson.LESSON + lesson.TUNED:
        part = text.split(f"\n### {section.title}\n", 1)[1].split("\n### ", 1)[0]
        shown = bool(section.torch_names) + bool(section.jax_names)
        assert part.count("```python") == shown and "**PyTorch**" in part and "**JAX**" in part, section.title
        for name in section.torch_names + section.jax_names:
            assert f"[`{name}`](../mnist_" in part, (section.title, name)
        assert part.count("\n| JAX | ") + part.count("\n| PyTorch | ") >= len(section.ledger), section.title
    assert all(section.ledger for section in lesson.TUNED)


def test_a_ledger_row_that_is_gone_is_one_line_naming_the_ledger():
    with pytest.raises(LookupError, match=r"RESULTS.md's tuning ledger has no JAX row 'no such form...'"):
        lesson.ledger_table((("JAX", "no such form"),), lesson.ledger_rows())


def test_a_name_the_code_no_longer_defines_is_one_line_naming_the_file():
    with pytest.raises(LookupError, match=r"mnist_jax/steps.py no longer defines \['no_such_step'\]"):
        lesson.definitions(lesson.ROOT / "mnist_jax" / "steps.py", ("train_step", "no_such_step"))


def test_check_fails_on_a_stale_page(tmp_path, monkeypatch):
    stale = tmp_path / "pytorch-to-jax.md"
    stale.write_text(lesson.page().replace("optimizer.step()", "optimizer.step(closure)", 1))
    monkeypatch.setattr(lesson, "PAGE", stale)
    with pytest.raises(SystemExit, match="pytorch-to-jax.md differs from the code"):
        lesson.main(["--check"])
