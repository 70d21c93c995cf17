"""Command-line parsing for every `lenvm` command: TRL's ``TrlParser`` over documented dataclasses (docs/cli.md)."""

from __future__ import annotations

import re
import sys

CONFIG_HELP = (
    "Every option is also a key of a YAML file given with --config FILE.yaml (options given as well "
    "override it; an `env:` mapping sets environment variables). Dashed spellings such as "
    "--max-new-tokens are accepted too."
)
LEGACY_FLAGS = {"--no-chat-template": "--no_use_chat_template", "--no_chat_template": "--no_use_chat_template"}
_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def make_parser(dataclass_types, prog: str, description: str | None = None):
    """``TrlParser(dataclass_types)`` with our program name, description and a note on ``--config``."""
    from trl import TrlParser  # torch-free: TRL ships its own HfArgumentParser

    return TrlParser(list(dataclass_types), prog=prog, description=description, epilog=CONFIG_HELP)


def parse(parser, argv: list[str] | None, **kwargs):
    """``parser.parse_args_and_config(argv)`` after :func:`compat_argv` (TRL's keyword arguments pass through)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return parser.parse_args_and_config(compat_argv(argv, parser), **kwargs)


def _option_like(arg: str) -> bool:
    """Whether argparse reads ``arg`` as an option rather than a value (our parsers have no numeric options)."""
    return arg.startswith("-") and len(arg) > 1 and " " not in arg and not _NUMBER.match(arg)


def compat_argv(argv: list[str], parser) -> list[str]:
    """Earlier command lines on TRL's parser: the legacy flags in :data:`LEGACY_FLAGS` renamed, and a repeated list
    option merged, ``--prompt A --prompt B`` -> ``--prompt A B`` (argparse's ``nargs="+"`` would keep only the last
    one). Dashed spellings of fields (``--max-new-tokens``) need nothing: HfArgumentParser registers both."""
    known = parser._option_string_actions
    argv = [LEGACY_FLAGS[a] if a in LEGACY_FLAGS and LEGACY_FLAGS[a] in known else a for a in argv]
    lists = {s: action.dest for s, action in known.items() if action.nargs == "+" and s.startswith("--")}
    occurrences = [lists.get(a.split("=", 1)[0]) for a in argv[: argv.index("--") if "--" in argv else None]]
    if all(occurrences.count(dest) < 2 for dest in set(occurrences) - {None}):
        return argv  # nothing repeated: as given
    out, values, i = [], {}, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out += argv[i:]
            break
        option, eq, value = arg.partition("=")
        dest = lists.get(option)
        i += 1
        if dest is None:
            out.append(arg)
            continue
        given = [value] if eq else []
        while not eq and i < len(argv) and not _option_like(argv[i]) and argv[i] != "--":
            given.append(argv[i])
            i += 1
        if dest not in values:
            values[dest] = []
            out.append((option, values[dest]))
        values[dest].extend(given)
    return [a for item in out for a in ([item[0], *item[1]] if isinstance(item, tuple) else [item])]
