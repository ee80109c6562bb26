"""README.md and docs/: the generated tables match the committed benchmark results, the README stays short,
it holds the commands CI runs, and every relative link points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.conditions import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
MAX_README_LINES = 250
#: [text](target) and ![alt](target), the target up to a space, a quote or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: A fenced code block: its links are examples, not links.
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


@pytest.mark.parametrize("name", report.GENERATED_FILES)
def test_generated_tables_are_what_the_committed_results_give(name):
    text = (REPO / name).read_text()
    assert report.BLOCK.search(text), f"{name} holds no generated block (<!-- results:NAME begin --> ... end -->)"
    _, stale = report.refresh(text, REPO)
    assert not stale, (
        f"{name}: {', '.join(stale)} differ from benchmarks/results/*.json; run `python -m benchmarks.report --readme`"
    )


def test_the_readme_shows_both_headline_tables():
    blocks = {(m["kind"], m["name"]) for m in report.BLOCK.finditer(README.read_text())}
    assert {("results", "cpu-2core"), ("results", "h200")} <= blocks


def test_a_stale_table_is_named_and_rewritten(tmp_path):
    text = README.read_text()
    edited = text.replace("| images/s at batch 128 [95% interval] |", "| images/s at batch 128 |", 1)
    assert edited != text
    fixed, stale = report.refresh(edited, REPO)
    assert stale == ["results:cpu-2core"]
    assert fixed == text


def test_check_exits_1_naming_the_stale_table(tmp_path, monkeypatch, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    for name in ("cpu-2core", "h200"):
        source = REPO / "benchmarks" / "results" / f"{name}.json"
        (tmp_path / "benchmarks" / "results" / source.name).write_text(source.read_text())
    (tmp_path / "README.md").write_text("# x\n\n<!-- results:h200 begin -->\nold\n<!-- results:h200 end -->\n")
    (tmp_path / "docs" / "benchmarks.md").write_text("# y\n")
    monkeypatch.setattr(report, "REPO", tmp_path)
    with pytest.raises(SystemExit) as exit_:
        report.main(["--readme", "--check"])
    assert "1 generated table(s) differ" in str(exit_.value.code)
    assert "stale: README.md: results:h200" in capsys.readouterr().err
    assert "\nold\n" in (tmp_path / "README.md").read_text()  # --check writes nothing
    report.main(["--readme"])
    assert "| 1 seed each, cuda, float32, as shipped |" in (tmp_path / "README.md").read_text()
    report.main(["--readme", "--check"])  # up to date now: no exit


def test_a_block_naming_missing_results_is_one_line(tmp_path):
    with pytest.raises(report.ReportError, match="no benchmarks/results/nowhere.json"):
        report.refresh("<!-- results:nowhere begin -->\n<!-- results:nowhere end -->\n", tmp_path)


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; keep it to {MAX_README_LINES}, move detail to docs/"
    )


def test_readme_holds_the_commands_ci_runs():
    """.ci/run runs the README's commands: each line after a `# README: ...` comment must be in the README."""
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    commands = [
        ci[i + 1].strip()
        for i, line in enumerate(ci[:-1])
        if line.startswith("# README: ") and not ci[i + 1].startswith("#")
    ]
    readme = README.read_text()
    assert commands, ".ci/run names no README command"
    for command in commands:
        if "gpu_run.sh" in command:  # the dry run is documented in docs/development.md, not on the first screen
            continue
        assert command in readme, f".ci/run runs `{command}` as the README's command, but the README does not hold it"


def test_readme_has_no_machine_paths_or_test_run_times():
    text = README.read_text()
    assert not re.search(r"(?<![\w.])/(work|root|home|tmp|mnt)/", text), "an absolute path of one machine in README.md"
    assert not re.search(r"\b\d+ (tests|minutes)\b", text), "test counts and run times rot: keep them out of README.md"


def links(path: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", path.read_text()))


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    names = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", FENCE.sub("", path.read_text()), re.M):
        names.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return names


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_point_at_files_that_exist(path):
    broken = []
    for target in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading with that anchor)")
    assert not broken, f"{path.relative_to(REPO)}: broken links: {', '.join(broken)}"


def test_docs_exist():
    names = {p.name for p in DOCS}
    assert {"usage.md", "design.md", "benchmarks.md", "reliability.md", "development.md"} <= names
    readme_links = set(links(README))
    for name in ("usage.md", "design.md", "benchmarks.md", "reliability.md", "development.md"):
        assert f"docs/{name}" in readme_links, f"README.md does not link docs/{name}"
