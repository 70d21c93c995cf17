"""Command-line parsing for every `lenvm` command: TRL's ``TrlParser`` over documented dataclasses (docs/cli.md)."""

from __future__ import annotations

import dataclasses
import re
import sys

CONFIG_HELP = (
    "Every option is also a key of a YAML file given with --config FILE.yaml (options given as well "
    "override it; an `env:` mapping sets environment variables). Dashed spellings such as "
    "--max-new-tokens are accepted too, and so are the older spellings shown after the TRL one."
)
LEGACY_FLAGS = {"--no-chat-template": "--no_use_chat_template", "--no_chat_template": "--no_use_chat_template"}
# One concept, one spelling: TRL's (first), then the spellings earlier `lenvm` versions used, kept as aliases. Every
# command accepts each spelling of an option it has, on the command line and as a YAML key, whichever the field is
# named; `--help` and docs/cli.md list TRL's first.
SPELLINGS = (
    ("model_name_or_path", "model", "generator"),
    ("output_dir", "output"),
    ("overwrite_output_dir", "overwrite"),
    ("num_generations", "num_samples", "samples"),
    ("generation_batch_size", "batch_size"),
)
FILE_FIELDS = {"output"}  # `lenvm rollouts --output` names a file, not a directory: no --output_dir for it
_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def make_parser(dataclass_types, prog: str, description: str | None = None):
    """``TrlParser(dataclass_types)`` with our program name, description, a note on ``--config`` and every spelling
    of :data:`SPELLINGS` registered for the options that have one."""
    from trl import TrlParser  # torch-free: TRL ships its own HfArgumentParser

    class Parser(TrlParser):
        def set_defaults_with_config(self, **kwargs):
            """YAML keys may be any spelling of an option (``model:`` or ``model_name_or_path:``)."""
            known = self._option_string_actions
            return super().set_defaults_with_config(
                **{(known[f"--{k}"].dest if f"--{k}" in known else k): v for k, v in kwargs.items()}
            )

    parser = Parser(list(dataclass_types), prog=prog, description=description, epilog=CONFIG_HELP)
    add_spellings(parser, {f.name for cls in dataclass_types for f in own_fields(cls)})
    return parser


def own_fields(cls) -> list:
    """The fields ``cls`` or a `lenvm_rl` base of it declares (not those of TRL's / transformers' configs)."""
    ours = [c for c in cls.__mro__ if c.__module__.startswith("lenvm_rl")]
    names = {name for c in ours for name in vars(c).get("__annotations__", {})}
    return [f for f in dataclasses.fields(cls) if f.name in names]


def spellings_of(dest: str) -> tuple[str, ...]:
    """The spellings of option ``dest``, TRL's first (``("model_name_or_path", "model", "generator")`` for
    ``generator``); just ``(dest,)`` when it has no other."""
    if dest in FILE_FIELDS:
        return (dest,)
    return next((group for group in SPELLINGS if dest in group), (dest,))


def add_spellings(parser, dests: set[str]) -> None:
    """Register every spelling of the options ``dests`` (ours; TRL's own fields are spelled TRL's way already) as
    option strings of their actions, TRL's first, where the parser has no other option by that name."""
    known = parser._option_string_actions
    for action in list(parser._actions):
        if action.dest not in dests or f"--{action.dest}" not in action.option_strings:
            continue  # TRL's fields, --no_X flags, --help
        group = spellings_of(action.dest)
        spelled = dict.fromkeys(f"--{n}" for name in group for n in (name, name.replace("_", "-")))  # dashed too
        new = [option for option in spelled if option not in known]
        for option in new:
            known[option] = action
        first = [f"--{n}" for n in group[: group.index(action.dest)] if f"--{n}" in new]  # TRL's spelling first
        later = [o for o in new if o not in first]
        action.option_strings[:] = first + list(action.option_strings) + later


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
