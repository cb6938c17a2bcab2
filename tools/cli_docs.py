"""wtfs(1) and its bash completion, generated from the real argparse parser at install time.

`make install` runs ``python tools/cli_docs.py man`` and ``... bash`` with the installed
package, so the man page and the completion list exactly the commands and options that
``wtfs`` accepts; nothing is written by hand that could drift. The prose that argparse does
not hold (exit status, files, where the full docs are) is here, short.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from wtfs import __version__
from wtfs.cli import EXIT_FAILED, EXIT_UNCHANGED, EXIT_USAGE, build_parser


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]  # ("version", "create")
    help: str
    parser: argparse.ArgumentParser


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return []


def commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = (), help: str = "") -> Iterator[Command]:
    """Every command and command group, depth first (the top level first)."""
    yield Command(words, help, parser)
    for name, sub_help, sub in _subcommands(parser):
        yield from commands(sub, (*words, name), sub_help)


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)]


# -- man page ---------------------------------------------------------------------------------


def _roff(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines())


def _label(action: argparse.Action) -> str:
    if not action.option_strings:
        return str(action.metavar or action.dest).upper() if action.metavar is None else str(action.metavar)
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    value = action.metavar or action.dest.upper()
    return ", ".join(f"{option} {value}" for option in action.option_strings)


def man() -> str:
    parser = build_parser()
    lines = [
        f'.TH WTFS 1 "" "wtfs {__version__}" "User Commands"',
        ".SH NAME",
        "wtfs \\- " + _roff(parser.description or ""),
        ".SH SYNOPSIS",
    ]
    leaves = [c for c in commands(parser) if c.words and not _subcommands(c.parser)]
    for command in leaves:
        usage = command.parser.format_usage().removeprefix("usage: ").strip()
        lines += [".HP", _roff(" ".join(usage.split()))]
    lines += [".HP", "wtfs \\-\\-version"]
    lines += [
        ".SH DESCRIPTION",
        "wtfs serves one research session as a POSIX tree: data/ (the data set, read\\-only, each",
        "file a locked copy in the host cache), workspace/ (read\\-write), versions/ (snapshots)",
        "and runs/ (recorded runs). The spec keys, \\-o options, errnos and the operations guide",
        "are in the docs/ directory of the source (spec.md, usage.md, errors.md, operations.md).",
        ".SH COMMANDS",
    ]
    for command in leaves:
        lines += [f'.SS "wtfs {" ".join(command.words)}"', _roff(command.help)]
        for action in _options(command.parser):
            if isinstance(action, argparse._HelpAction):
                continue
            text = action.help or ""
            if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text:
                text = f"{text} (default: {action.default})".strip()
            lines += [".TP", f".B {_roff(_label(action))}", _roff(text) if text else ""]
    lines += [
        ".SH EXIT STATUS",
        ".TP\n0\nsuccess",
        f".TP\n{EXIT_FAILED}\nthe command failed (one line on standard error says why)",
        f".TP\n{EXIT_USAGE}\na usage or spec error",
        f".TP\n{EXIT_UNCHANGED}\nwtfs version create: nothing changed since the latest version",
        ".SH SEE ALSO",
        ".BR mount.fuse3 (8),",
        ".BR fusermount3 (1),",
        ".BR systemd.mount (5)",
    ]
    return "\n".join(line for line in lines if line != "") + "\n"


# -- bash completion --------------------------------------------------------------------------

BASH = """\
# bash completion for wtfs, generated from its argparse parser (tools/cli_docs.py).
_wtfs() {
    local cur=${COMP_WORDS[COMP_CWORD]} path="" word i cmds opts
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        case "$path:$word" in
%(advance)s
        esac
    done
    case "$path" in
%(table)s
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    elif [[ -n $cmds ]]; then
        COMPREPLY=($(compgen -W "$cmds" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -o filenames -F _wtfs wtfs
"""


def bash() -> str:
    advance, table = [], []
    for command in commands(build_parser()):
        path = " ".join(command.words)
        subs = [name for name, _, _ in _subcommands(command.parser)]
        for name in subs:
            advance.append(f'            "{path}:{name}") path="{(path + " " + name).strip()}" ;;')
        opts = " ".join(option for action in _options(command.parser) for option in action.option_strings)
        table.append(f'        "{path}") cmds="{" ".join(subs)}" opts="{opts}" ;;')
    return BASH % {"advance": "\n".join(advance), "table": "\n".join(table)}


if __name__ == "__main__":
    if sys.argv[1:] not in (["man"], ["bash"]):
        sys.exit("usage: cli_docs.py man|bash")
    sys.stdout.write(man() if sys.argv[1] == "man" else bash())
