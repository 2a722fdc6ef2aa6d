"""The README and the user guide cannot rot: their Python examples run, their command lines parse with the
CLI's own parser, their relative links resolve, and the README stays short.

A Python block is executed unless the line before its opening fence is ``<!-- no-test: REASON -->`` (for an
example that needs a GPU, a cluster or a long run).  Each block runs in its own interpreter in an empty
directory that holds only a link to the repository's ``tests/data`` (the molecules the examples use), so blocks
cannot depend on each other or on other files of a clone.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDE = os.path.join(ROOT, "docs", "guide")
README_LIMIT = 10_000
"""Characters: a README a chemist reads in five minutes (issue 22); openmm-ml's is about 4,000."""

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def documents():
    """README.md, every page of the user guide and the results index (paths relative to the root)."""
    pages = ["README.md", os.path.join("docs", "results", "README.md")]
    pages += sorted(os.path.join("docs", "guide", name) for name in os.listdir(GUIDE) if name.endswith(".md"))
    return pages


def blocks(page, language):
    """(line number, code) of every fenced block in ``language`` on ``page`` not marked no-test."""
    with open(os.path.join(ROOT, page)) as handle:
        text = handle.read()
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) != language:
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if before.startswith("<!-- no-test"):
            continue
        found.append((text.count("\n", 0, match.start()) + 1, match.group(2)))
    return found


def python_examples():
    return [pytest.param(page, code, id=f"{page}:{line}") for page in documents() for line, code in
            blocks(page, "python")]


def command_lines():
    """Every ``openmm-forecast ...`` invocation in a bash block, continuation lines joined."""
    found = []
    for page in documents():
        for line, code in blocks(page, "bash"):
            for command in code.replace("\\\n", " ").split("\n"):
                for part in re.split(r"&&|;", command):
                    words = shlex.split(part, comments=True)
                    if words[:2] == ["taskset", "-c"]:  # a prefix that pins the command to a core
                        words = words[3:]
                    if words and os.path.basename(words[0]) == "openmm-forecast":
                        found.append(pytest.param(words[1:], id=f"{page}:{line}:{' '.join(words[1:3])}"))
    return found


def test_the_readme_is_within_its_aim():
    with open(os.path.join(ROOT, "README.md")) as handle:
        assert len(handle.read()) <= README_LIMIT


@pytest.mark.parametrize("page", documents())
def test_relative_links_resolve(page):
    with open(os.path.join(ROOT, page)) as handle:
        text = handle.read()
    missing = [target for target in LINK.findall(text) if "://" not in target
               and not os.path.exists(os.path.normpath(os.path.join(ROOT, os.path.dirname(page), target)))]
    assert missing == []


def test_every_guide_page_is_in_the_index():
    with open(os.path.join(GUIDE, "index.md")) as handle:
        index = handle.read()
    pages = {name for name in os.listdir(GUIDE) if name.endswith(".md")} - {"index.md"}
    assert {page for page in pages if f"]({page})" not in index} == set()


@pytest.mark.parametrize("argv", command_lines())
def test_documented_command_lines_parse(argv):
    """Flags renamed or removed since the docs were written fail here (parsing only: nothing runs)."""
    from openmm_forecast.cli import build_parser

    try:
        arguments = build_parser().parse_args(argv)
    except SystemExit as error:  # argparse's way of refusing
        pytest.fail(f"openmm-forecast {' '.join(argv)}: refused by the parser (exit {error.code})")
    assert arguments.command is not None


@pytest.mark.parametrize("page, code", python_examples())
def test_python_examples_run(page, code, tmp_path):
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "data").symlink_to(os.path.join(ROOT, "tests", "data"))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"{page}: the example failed:\n{result.stderr[-3000:]}"
