"""docs/structured-concurrency.md, run: every program on the page prints what the page
shows, and every exercise does what the page says it does.

The page's conventions, chosen so that it reads as plain Markdown:

* A ``python`` block followed by a line ``Output:`` and a ``text`` block is a program. It is
  run in a child process, with this checkout first on ``PYTHONPATH``, and must print exactly
  that, and nothing on stderr. The programs run on Trio's mock clock, so their output does
  not depend on the machine and a five-second timeout costs no wall time.
* A ``python`` block whose first line is ``# test_<name>.py`` is a test module, followed by
  ``Output (last line):``: pytest runs it, and the last line of its report must be that one
  (the time pytest prints is not compared).
* A ``python`` block after a line that ends with a link to a file under ``triodist/`` and a
  colon is an excerpt: its lines must be in that file, in that order (``...`` skips).
* An exercise starts at a paragraph beginning ``**Exercise`` and runs to the next exercise,
  program or heading. Its ``diff`` blocks are changes (``-`` lines out, ``+`` lines in, hunks
  apart by ``@@``): to the program above it, or, under a ``--- triodist/...`` header, to that
  file in a copy of the checkout. An ``Output:`` block there is what the program prints with
  the changes made so far (against the copy, once a file is changed). A ``sh`` block with
  ``python -m pytest tests/...`` is run in the copy, and must fail: the test the page names
  is the one that catches the change.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "structured-concurrency.md"

#: The page's sections, in the order the issue gives them; each must have its program, its
#: pointer into triodist and its exercise.
SECTIONS = 7

#: A program that takes longer than this (wall time) has stopped using the mock clock.
RUN_TIMEOUT = 60.0


# --- reading the page ---------------------------------------------------------------------


@dataclass
class Block:
    """A fenced block: its language, its text, the line it starts on, and the non-blank
    text line just before it (``Output:``, or a sentence ending in a link and a colon)."""

    lang: str
    body: str
    line: int
    before: str
    section: str


@dataclass
class Program:
    name: str
    source: str
    output: str
    block: Block

    @property
    def is_test_module(self) -> bool:
        return bool(re.match(r"# (test_\w+\.py)\n", self.source))


@dataclass
class Diff:
    """A change: ``target`` is None for the program, else a path in the checkout."""

    target: str | None
    hunks: list[tuple[str, str]]


@dataclass
class Exercise:
    name: str
    program: Program
    steps: list[Diff | Block] = field(default_factory=list)

    @property
    def slug(self) -> str:
        """Its section and its title, for the test's name: ``5-a-short-grace-period``."""
        words = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")
        return f"{self.program.name.split('.')[0]}-{words}"


@dataclass
class Marker:
    """A line outside the blocks that opens an exercise, or a heading (which ends one)."""

    line: str


def read(text: str) -> Iterator[Block | Marker]:
    """The page's blocks, and the lines that open an exercise or a heading, in order."""
    lines = text.splitlines(keepends=True)
    section = ""
    before = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"```(\w*)\s*$", line)
        if fence is None:
            if line.startswith("#"):
                section = line.lstrip("#").strip() if line.startswith("## ") else section
                yield Marker(line)
            elif line.startswith("**Exercise:"):
                yield Marker(line)
            if line.strip():
                before = line.strip()
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        yield Block(fence.group(1), "".join(body), start + 1, before, section)
        before = ""
        i += 1


def parse_diff(body: str) -> Diff:
    lines = body.splitlines(keepends=True)
    target = None
    if lines and lines[0].startswith("--- "):
        target = lines[0][4:].strip()
        assert lines[1].startswith("+++ ") and lines[1][4:].strip() == target, body
        lines = lines[2:]
    hunks: list[tuple[str, str]] = []
    old: list[str] = []
    new: list[str] = []
    for line in [*lines, "@@\n"]:
        if line.startswith("@@"):
            if old or new:
                hunks.append(("".join(old), "".join(new)))
            old, new = [], []
            continue
        mark, rest = line[:1], line[1:]
        assert mark in "-+ ", f"a diff line starts with -, + or a space: {line!r}"
        if mark in "- ":
            old.append(rest)
        if mark in "+ ":
            new.append(rest)
    return Diff(target, hunks)


def read_page() -> tuple[list[Program], list[Exercise], list[Block]]:
    found = list(read(PAGE.read_text()))
    programs: list[Program] = []
    exercises: list[Exercise] = []
    excerpts: list[Block] = []
    exercise: Exercise | None = None
    for index, block in enumerate(found):
        if isinstance(block, Marker):
            if block.line.startswith("#"):
                exercise = None
            else:
                assert programs, "an exercise changes a program shown before it"
                title = re.match(r"\*\*Exercise:?\s*(.*?)\*\*", block.line)
                name = (title.group(1) if title else block.line).strip().rstrip(".")
                exercise = Exercise(name, programs[-1])
                exercises.append(exercise)
            continue
        following = next((b for b in found[index + 1 :] if isinstance(b, Block)), None)
        if block.lang == "python":
            if re.search(r"\]\(\.\./triodist/[^)]+\):$", block.before):
                excerpts.append(block)
                continue
            assert following is not None and following.lang == "text", (
                f"line {block.line}: a program is followed by its output"
            )
            assert following.before in ("Output:", "Output (last line):"), following.before
            exercise = None
            number = block.section.split(".")[0]
            count = sum(p.block.section == block.section for p in programs) + 1
            programs.append(Program(f"{number}.{count}", block.body, following.body, block))
        elif block.lang == "diff":
            assert exercise is not None, f"line {block.line}: a change outside an exercise"
            exercise.steps.append(parse_diff(block.body))
        elif exercise is not None and (
            (block.lang == "text" and block.before.startswith("Output"))
            or (block.lang == "sh" and "pytest" in block.body)
        ):
            exercise.steps.append(block)
    return programs, exercises, excerpts


PROGRAMS, EXERCISES, EXCERPTS = read_page()


# --- running ------------------------------------------------------------------------------


def run_program(source: str, directory: Path, pythonpath: Path = ROOT) -> str:
    """Run a program (or a test module, with pytest) as a reader would; what it printed."""
    env = child_environment(pythonpath)
    module = re.match(r"# (test_\w+\.py)\n", source)
    if module:
        path = directory / module.group(1)
        path.write_text(source)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path.name]
    else:
        path = directory / "program.py"
        path.write_text(source)
        command = [sys.executable, path.name]
    result = subprocess.run(
        command, cwd=directory, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    if module:
        # pytest's report: its last line, without the time it took.
        last = result.stdout.strip().splitlines()[-1]
        return re.sub(r" in [0-9.]+s", "", last).strip("= ") + "\n"
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", result.stderr
    return result.stdout


def expected(program_output: str, *, test_module: bool) -> str:
    if test_module:
        return re.sub(r" in [0-9.]+s", "", program_output.strip()) + "\n"
    return program_output


def child_environment(pythonpath: Path | None = None) -> dict[str, str]:
    """The environment of a child process: the code it imports is ``pythonpath``'s, else
    that of its working directory (``python -m pytest`` puts it first on ``sys.path``)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def apply(text: str, diff: Diff, where: str) -> str:
    for old, new in diff.hunks:
        assert text.count(old) == 1, f"{where}: the lines to change are there once:\n{old}"
        text = text.replace(old, new)
    return text


def copy_checkout(destination: Path) -> Path:
    """What a changed file is tried in: the package, the tests and their settings."""
    ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache")
    shutil.copytree(ROOT / "triodist", destination / "triodist", ignore=ignore)
    shutil.copytree(ROOT / "tests", destination / "tests", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", destination)
    return destination


# --- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.name for p in PROGRAMS])
def test_the_program_prints_what_the_page_shows(program: Program, tmp_path: Path) -> None:
    # On the mock clock: its times are the same on every run, and its waits cost nothing.
    assert "MockClock(autojump_threshold=0)" in program.source or (
        program.is_test_module and "autojump_clock" in program.source
    )
    printed = run_program(program.source, tmp_path)
    assert printed == expected(program.output, test_module=program.is_test_module)


@pytest.mark.parametrize("exercise", EXERCISES, ids=[e.slug for e in EXERCISES])
def test_the_exercise_does_what_the_page_says(exercise: Exercise, tmp_path: Path) -> None:
    source = exercise.program.source
    checkout: Path | None = None
    checked = 0
    for step in exercise.steps:
        if isinstance(step, Diff) and step.target is None:
            source = apply(source, step, "the program")
        elif isinstance(step, Diff):
            assert step.target is not None
            if checkout is None:
                checkout = copy_checkout(tmp_path / "checkout")
            path = checkout / step.target
            path.write_text(apply(path.read_text(), step, step.target))
        elif step.lang == "text":
            printed = run_program(source, fresh_directory(tmp_path), checkout or ROOT)
            assert printed == expected(step.body, test_module=exercise.program.is_test_module)
            checked += 1
        else:
            assert checkout is not None, "a test is run against a changed file"
            command = shlex.split(step.body.strip())
            assert command[:3] == ["python", "-m", "pytest"], command
            result = subprocess.run(
                [sys.executable, *command[1:], "-q", "-p", "no:cacheprovider"],
                cwd=checkout,
                env=child_environment(),
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT * 3,
            )
            # 1: tests ran and failed (not 4 or 5: no such test, nothing collected).
            assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
            checked += 1
    assert checked, "an exercise shows what its change does"


def fresh_directory(tmp_path: Path) -> Path:
    number = len(list(tmp_path.glob("run-*")))
    directory = tmp_path / f"run-{number}"
    directory.mkdir()
    return directory


@pytest.mark.parametrize("excerpt", EXCERPTS, ids=[f"line {e.line}" for e in EXCERPTS])
def test_an_excerpt_is_what_the_file_says(excerpt: Block) -> None:
    link = re.search(r"\]\(\.\./(triodist/[^)#]+)(#[^)]*)?\):$", excerpt.before)
    assert link is not None
    source = [line.strip() for line in (ROOT / link.group(1)).read_text().splitlines()]
    at = 0
    for line in excerpt.body.splitlines():
        wanted = line.strip()
        if wanted in ("", "..."):
            continue
        assert wanted in source[at:], f"{link.group(1)} has no line {wanted!r} after line {at}"
        at = source.index(wanted, at) + 1


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces
    made hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_link_points_at_something_that_exists() -> None:
    text = PAGE.read_text()
    for label, target in re.findall(r"\[([^\]]+)\]\(([^)]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        file, _, anchor = target.partition("#")
        path = (PAGE.parent / file).resolve() if file else PAGE
        assert path.exists(), f"{target} ({label})"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path.read_text()), f"{target}: no such heading"
        # A link named after a class or a function: that name is defined in the file.
        name = re.fullmatch(r"`([A-Za-z_][\w.]*)`", label)
        if name and path.suffix == ".py" and "/" not in name.group(1):
            for part in name.group(1).split("."):
                assert re.search(rf"(def|class) {part}\b", path.read_text()), (
                    f"{target} defines no {part}"
                )


def test_every_section_has_its_program_its_pointer_and_its_exercise() -> None:
    text = PAGE.read_text()
    sections = re.findall(r"^## (\d)\. ", text, re.M)
    assert sections == [str(n) for n in range(1, SECTIONS + 1)]
    for number in range(1, SECTIONS + 1):
        body = text.split(f"\n## {number}. ", 1)[1].split("\n## ", 1)[0]
        assert any(p.name.startswith(f"{number}.") for p in PROGRAMS), number
        assert any(e.program.name.startswith(f"{number}.") for e in EXERCISES), number
        assert "](../triodist/" in body, f"section {number} points into triodist"
        assert "tests/test_" in body, f"section {number} names the test that shows it"
