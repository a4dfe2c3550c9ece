"""Command-line flags built from a family's declared options (:mod:`napari_microsynth.core.options`).

Every family flag takes one value, parsed and checked by its :class:`~napari_microsynth.core.options.Option`
in the handler (so a bad value ends in one ``error:`` line naming the option); a flag not given leaves
the value to the command's or the family's default.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Mapping, Sequence

from ..core.options import Option

DEST = "option:"  # namespace prefix of the family flags' values
FLAGS = "option-flags"  # namespace entry: option name -> the flag it got on this command


def _metavar(option: Option) -> str:
    if option.choices:
        return "{" + ",".join(map(str, option.choices)) + "}"
    if option.kind is bool:
        return "{true,false}"
    return {int: "N", float: "X"}.get(option.kind, "TEXT")


def add_option_flags(
    parser: argparse.ArgumentParser,
    options: Sequence[Option],
    title: str,
    aliases: Mapping[str, Sequence[str]] | None = None,
    prefix: str = "",
) -> None:
    """One flag per option in an argument group ``title`` (its default and limits in the help).

    A flag the command already has for its own purpose is renamed ``--<prefix><name>``; ``aliases`` adds
    older or shorter flags of an option (e.g. ``--lr``) where they are free.
    """
    groups = {False: parser.add_argument_group(title), True: parser.add_argument_group(f"{title}, advanced")}
    taken = set(parser._option_string_actions)  # noqa: SLF001 (argparse has no public accessor)
    named = dict(parser.get_default(FLAGS) or {})
    for option in sorted(options, key=lambda o: o.advanced):
        flag = option.flag if option.flag not in taken else f"--{prefix}{option.name.replace('_', '-')}"
        flags = [flag, *(a for a in (aliases or {}).get(option.name, ()) if a not in taken and a != flag)]
        groups[option.advanced].add_argument(*flags, dest=DEST + option.name, default=argparse.SUPPRESS,
                                             metavar=_metavar(option), help=option.describe().replace("%", "%%"))
        taken.update(flags)
        named[option.name] = flag
    parser.set_defaults(**{FLAGS: named})


def given_options(args: argparse.Namespace, options: Sequence[Option]) -> dict[str, Any]:
    """The values of the option flags given on the command line, parsed and checked (a bad value's
    message names the flag, e.g. ``--guidance-scale must be finite``)."""
    given = vars(args)
    flags = given.get(FLAGS, {})
    return {o.name: dataclasses.replace(o, name=flags.get(o.name, o.flag)).parse(given[DEST + o.name])
            for o in options if DEST + o.name in given}


def option_values(args: argparse.Namespace, options: Sequence[Option], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The command's ``defaults`` for the options the family has, with the given flags' values over them."""
    names = {o.name for o in options}
    return {**{k: v for k, v in defaults.items() if k in names}, **given_options(args, options)}


def with_defaults(options: Sequence[Option], defaults: Mapping[str, Any],
                  notes: Mapping[str, str] | None = None) -> list[Option]:
    """``options`` as the command shows them: its own ``defaults`` (and help ``notes``) where it has them."""
    notes = notes or {}
    return [dataclasses.replace(o, default=defaults.get(o.name, o.default), help=o.help + notes.get(o.name, ""))
            for o in options]


def without_family_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``argv`` without the flags ``parser`` does not know, each with its one value, so that a parser
    without the family's flags finds the positional arguments (e.g. which model folder is named)."""
    known = {"--help", *parser._option_string_actions}  # noqa: SLF001
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token.startswith("--") and token.split("=", 1)[0] not in known:
            skip = "=" not in token
        else:
            out.append(token)
    return out
