"""The README's and docs' examples never rot: commands parse, make targets exist, links resolve.

Every `wtfs ...` line of a fenced example (and every `wtfs` a container line runs) is parsed by
the real parser, ``wtfs.cli.build_parser``. Synopsis lines may use ``[optional]``,
``(one | other)`` and ``NAME...``: every combination they stand for must parse. The man page
and the bash completion that `make install` generates are checked against the same parser.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import itertools
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wtfs.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = {"", "sh", "bash", "shell", "console"}
#: Commands that run another command: the `wtfs` token on their line starts the wtfs command.
WRAPPERS = {"sudo", "env", "docker", "podman", "bwrap", "systemd-run"}
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def shell_lines(path: Path) -> Iterator[str]:
    """The lines of a file's shell examples, continuations joined, prompts and comments removed."""
    text = path.read_text()
    for block in FENCE.finditer(text):
        if block.group(1).strip() not in SHELL_BLOCKS:
            continue
        for line in re.sub(r"\s*\\\n\s*", " ", block.group(2)).splitlines():
            line = line.strip().removeprefix("$ ").split(" #", 1)[0]
            yield re.split(r"\s{2,}", line)[0]  # synopsis lines end in a description after 2+ spaces


def wtfs_lines(path: Path) -> Iterator[str]:
    for line in shell_lines(path):
        words = line.split()
        if words and words[0] == "wtfs":
            yield line
        elif words and words[0] in WRAPPERS and "wtfs" in words:
            yield " ".join(words[words.index("wtfs") :])


def _tokens(line: str) -> list[str]:
    line = re.sub(r"(\w)\[,(\w+)\.\.\.\]", r"\1,\2", line).replace("...", "")  # OPT[,OPT...], PATH...
    return re.findall(r"[\[\]()|]|[^\s\[\]()|]+", line)


def _alternatives(tokens: list[str], pos: int, closer: str | None) -> tuple[list[list[str]], int]:
    """Variants of a synopsis from ``pos`` up to ``closer``: [a] is with or without, (a | b) one of."""
    variants: list[list[str]] = []
    current: list[list[str]] = [[]]
    while pos < len(tokens) and tokens[pos] != closer:
        token = tokens[pos]
        if token == "|":
            variants += current
            current = [[]]
            pos += 1
            continue
        if token in "[(":
            inner, pos = _alternatives(tokens, pos + 1, "]" if token == "[" else ")")
            options = [[], *inner] if token == "[" else inner
        else:
            options = [[token]]
        current = [head + tail for head, tail in itertools.product(current, options)]
        pos += 1
    return variants + current, pos


def variants(line: str) -> list[list[str]]:
    tokens = _tokens(line)
    if "[" not in tokens and "(" not in tokens:
        return [shlex.split(line)]
    found, _ = _alternatives(tokens, 0, None)
    return found


@functools.cache
def _parser() -> argparse.ArgumentParser:
    return build_parser()


def parses(argv: list[str]) -> str | None:
    """None if ``wtfs ARGV`` parses (as main() reads it), else what argparse said.

    A placeholder (``--grace S``) stands for a value of the option's type: it is tried as 1."""
    if len(argv) >= 2 and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv = ["mount", *argv]  # mount.fuse3's form: wtfs SPEC MOUNTPOINT -o OPTIONS
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            _parser().parse_args(argv)
    except SystemExit as exit:
        if exit.code == 0:
            return None
        typed = re.search(r"invalid \w+ value: '([A-Z][A-Z0-9_]*)'", err.getvalue())
        if typed and typed.group(1) in argv:
            return parses([("1" if arg == typed.group(1) else arg) for arg in argv])
        return err.getvalue().strip()
    return None


def make_targets() -> set[str]:
    targets: set[str] = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        rule = re.match(r"^([A-Za-z0-9_.\- ]+):(?!=)", line)
        if rule:
            targets.update(rule.group(1).split())
    return targets


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {_slug(h) for h in re.findall(r"^#+\s+(.*)$", text, re.MULTILINE)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_wtfs_command_lines_parse(doc: Path) -> None:
    failures = [
        f"{line!r} as {argv}: {error}"
        for line in wtfs_lines(doc)
        for argv in variants(line)
        if (error := parses(argv[1:])) is not None
    ]
    assert not failures, "\n".join(failures)


def test_the_docs_show_wtfs_commands() -> None:
    """The extraction works: the README's synopsis and the operations guide are seen."""
    assert len(list(wtfs_lines(ROOT / "README.md"))) >= 10
    assert any("wtfs mount -f" in line for line in wtfs_lines(ROOT / "docs" / "operations.md"))
    assert parses(["mount", "--no-such-option", "spec"]) is not None  # and parsing can fail


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_make_targets_exist(doc: Path) -> None:
    named: set[str] = set()
    for line in shell_lines(doc):
        words = line.split()
        if words and words[0] == "make":
            named.update(w for w in words[1:] if "=" not in w and not w.startswith("-"))
    named.update(re.findall(r"`make ([\w-]+)", doc.read_text()))
    assert named <= make_targets(), sorted(named - make_targets())


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", doc.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:, file:
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no such heading")
    assert not broken, broken


def _cli_docs(kind: str) -> str:
    """What ``python tools/cli_docs.py KIND`` prints (`make install`), made in-process."""
    spec = importlib.util.spec_from_file_location("cli_docs", ROOT / "tools" / "cli_docs.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules.setdefault("cli_docs", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)  # registered first: its dataclasses look themselves up
    return str(module.man() if kind == "man" else module.bash())


def _leaf_commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield words
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaf_commands(sub, (*words, name))


def test_man_page_lists_every_command() -> None:
    page = _cli_docs("man")
    assert page.startswith(".TH WTFS 1")
    for words in _leaf_commands(build_parser()):
        assert f'.SS "wtfs {" ".join(words)}"' in page, words
    assert "\\-\\-folder\\-id" in page  # options are listed, hyphens escaped for roff


def complete(script: str, line: str) -> list[str]:
    """What bash completes for ``line`` (the word under the cursor is the last, maybe empty)."""
    driver = (
        f"{script}\n"
        f"read -ra COMP_WORDS <<< {shlex.quote(line)}\n"
        f'[[ {shlex.quote(line)} == *" " ]] && COMP_WORDS+=("")\n'
        "COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _wtfs; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    result = subprocess.run(["bash", "-c", driver], capture_output=True, text=True, check=True)
    return sorted(result.stdout.split())


def test_bash_completion_follows_the_parser(tmp_path: Path) -> None:
    script = _cli_docs("bash")
    assert complete(script, "wtfs ") == sorted(COMMANDS)
    assert complete(script, "wtfs ca") == ["cache"]
    assert complete(script, "wtfs cache ") == ["evict", "gc", "ls"]
    assert complete(script, "wtfs run st") == ["start", "status"]
    assert complete(script, "wtfs cache gc --d") == ["--dry-run"]
    assert "--foreground" in complete(script, "wtfs mount /etc/spec.toml --")
    (tmp_path / "spec.toml").touch()
    assert complete(script, f"wtfs mount {tmp_path}/sp") == [f"{tmp_path}/spec.toml"]
