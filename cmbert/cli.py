"""`cmbert NOUN VERB ...`: the command line, built from the command tables of the packages.

Each package's `commands.py` maps command paths to what runs them, e.g. COMMANDS = {("finetune", "icd", "prepare"):
{"run": "cmbert.finetune.icd.data:prepare_icd_dataset", "show": "...:format_prepare", "help": "..."}}; GROUPS gives
the nouns' one-line help. The tables are literals, read without importing their package (so `cmbert --help` loads no
torch); a command's module is imported only when it runs or shows its --help. A command's flags are its function's
parameters that the docstring's `Args:` section describes: the flag is the name with dashes (`flags` renames it),
the type comes from the annotation (bool: a switch, `--no-X` when it defaults to true; a list: several values;
Literal: choices; `types` names a parser), the default from the signature, the help from the `Args:` line, and the
command's help ends with the docstring's `Example:`. A parameter named `overrides` takes the positional KEY=VALUE.

A config-driven command names a `config` loader(FILE, overrides) instead, and `run` takes what it returns:
`--config FILE` (required, unless the table names a `preset`) plus positional dotted `key=value` overrides. With
`fields` (its config dataclass) every top-level key is also a flag, given as an override before the positional ones,
and with `record` the run writes its resolved config (and provenance) into its `out`.

`show` formats the result (it gets the result and the options it names; text goes to stdout, or stderr with
"stderr": True). Expected failures (`cmbert.core.errors.UserError`: a missing or unreadable input, a bad option or
config value, an output in the way, a failed download) print one line, `cmbert: error: ...`, and exit 2
(CMBERT_DEBUG=1 shows their traceback); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import importlib.util
import inspect
import json
import os
import re
import sys
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path

from cmbert.core.errors import UserError

TABLES = ("cmbert", "cmbert.data", "cmbert.pretrain", *(f"cmbert.finetune.{recipe}" for recipe in (
    "icd", "trajectory", "federated", "generic", "qa", "bhc", "robustness")))


def tables() -> tuple[dict, dict]:
    """Every package's COMMANDS and GROUPS, read from its commands.py as literals."""
    commands, groups = {}, {}
    for package in TABLES:
        source = Path(importlib.util.find_spec(package).submodule_search_locations[0], "commands.py")
        for node in ast.parse(source.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) in ("COMMANDS", "GROUPS"):
                (commands if node.targets[0].id == "COMMANDS" else groups).update(ast.literal_eval(node.value))
    return commands, groups


def resolve(ref: str):
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def docs(obj) -> tuple[dict[str, str], str | None]:
    """The docstring's `Args:` lines ({name: help}; deeper-indented lines continue one) and its `Example:` line."""
    helps, example, section, current = {}, None, None, None
    for line in (inspect.getdoc(obj) or "").splitlines():
        text, indent = line.strip(), len(line) - len(line.lstrip())
        if text and indent == 0:
            section = "args" if text == "Args:" else "example" if text.startswith("Example:") else None
            if section == "example":
                example = text.removeprefix("Example:").strip()
        elif section == "args" and indent <= 4 and (match := re.fullmatch(r"(\w+): (.*)", text)):
            current, helps[match[1]] = match[1], match[2]
        elif text and section == "args" and current:
            helps[current] += f" {text}"
        elif text and section == "example":
            example += f" {text}"
    return helps, example


def _hints(obj) -> dict:
    try:
        return typing.get_type_hints(obj)
    except Exception:  # an annotation that cannot be evaluated here: the flag takes a string
        return {}


def add_flag(parser, dest: str, flag: str, hint, default, help: str, parse=None, config: bool = False) -> None:
    """One --flag for a parameter (or a config key: then given flags only, as overrides)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = options[0] if len(options) == 1 else str  # str | Path: a path
    origin, inner = typing.get_origin(hint), typing.get_args(hint)
    kwargs = {"dest": dest}
    if hint is bool:
        flag, kwargs["action"] = (f"no-{flag}", "store_false") if default is True else (flag, "store_true")
    elif parse is not None:
        kwargs.update(type=parse, metavar=getattr(parse, "metavar", None))
    elif origin in (list, tuple, Sequence, Iterable):
        item = inner[0] if inner else str
        kwargs["nargs"] = "*" if default in ((), []) else "+"
        if typing.get_origin(item) is typing.Literal:
            kwargs["choices"] = typing.get_args(item)
        elif item in (int, float):
            kwargs["type"] = item
    elif origin is typing.Literal:
        kwargs["choices"] = inner
    elif hint in (int, float):
        kwargs["type"] = hint
    if "choices" not in kwargs and "action" not in kwargs:
        kwargs.setdefault("metavar", flag.upper().replace("-", "_"))
    if default is not None and default is not False and default not in ((), [], "", inspect.Parameter.empty) \
            and "default" not in help:
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        help = f"{help} (default: {shown})"
    if config:  # the config checks the value and names the key, as it does for the same key=value
        kwargs["default"] = argparse.SUPPRESS
        if "choices" in kwargs:
            kwargs["metavar"] = "{" + ",".join(map(str, kwargs.pop("choices"))) + "}"
    elif default is inspect.Parameter.empty:
        kwargs["required"] = True
    else:
        kwargs["default"] = default
    parser.add_argument(f"--{flag.replace('_', '-')}", help=help.replace("%", "%%"), **kwargs)


def leaf(path: tuple[str, ...], spec: dict) -> tuple[argparse.ArgumentParser, typing.Callable]:
    """The parser of one command and the function that runs it on the parsed arguments."""
    run = resolve(spec["run"])
    fields = resolve(spec["fields"]) if "fields" in spec else None
    helps, example = docs(fields or run)
    example = spec.get("example", example)
    parser = argparse.ArgumentParser(prog=f"cmbert {' '.join(path)}", description=spec["help"] + (
        f"\n\nExample: {example}" if example else ""), formatter_class=argparse.RawDescriptionHelpFormatter)
    if "config" not in spec:
        hints, parsers = _hints(run), {k: resolve(v) for k, v in spec.get("types", {}).items()}
        for name, param in inspect.signature(run).parameters.items():
            if name == "overrides":
                parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=helps.get(name))
            elif name in helps:
                add_flag(parser, name, spec.get("flags", {}).get(name, name), hints.get(name, str), param.default,
                         helps[name], parsers.get(name))
        return parser, lambda args: _show(spec, run(**vars(args)), vars(args))

    preset = spec.get("preset")
    parser.add_argument("--config", metavar="FILE", required="preset" not in spec, default=preset,
                        help=f"a YAML config (default: {preset})" if preset else "a YAML preset, e.g. "
                        + re.search(r"--config (\S+)", example or "--config configs/").group(1))
    hints = _hints(fields) if fields else {}
    for field in dataclasses.fields(fields) if fields else ():
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        add_flag(parser, field.name, field.name, hints[field.name], default, helps.get(field.name, ""), config=True)
    keys = [t for t in (example or "").split() if "=" in t and not t.startswith("-")]
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides of the config" + (f", e.g. {' '.join(keys[:2])}" if keys else ""))

    def call(args: argparse.Namespace):
        given = [f"{k}={json.dumps(v)}" for k, v in vars(args).items() if k not in ("config", "overrides")]
        cfg = resolve(spec["config"])(args.config, [*given, *args.overrides], **spec.get("bind", {}))
        result = run(cfg)
        if spec.get("record"):
            record(cfg, Path(cfg.out), f"cmbert {' '.join(path)}")
        _show(spec, result, vars(cfg))

    return parser, call


def _show(spec: dict, result, options: dict) -> None:
    # An empty result has nothing to show: e.g. a data-parallel rank other than 0 under torchrun (`python -m cmbert
    # finetune icd train ...`), which trains but leaves the report to rank 0.
    if "show" in spec and result not in (None, {}):
        show = resolve(spec["show"])
        text = show(result, **{k: options[k] for k in list(inspect.signature(show).parameters)[1:] if k in options})
        if text is not None:
            print(text, file=sys.stderr if spec.get("stderr") else sys.stdout)


def record(cfg, out: Path, command: str) -> None:
    """The resolved config (rerun it with --config) as OUT/config.yaml and the provenance as OUT/provenance.json; for
    an output file, FILE.config.yaml beside it."""
    import yaml

    text = f"# the resolved config of `{command}`; `{command} --config` this file reruns it\n" + yaml.safe_dump(
        dataclasses.asdict(cfg), sort_keys=False)
    if not out.is_dir():
        Path(f"{out}.config.yaml").write_text(text, encoding="utf-8")
        return
    from cmbert.core.runtime import device_and_dtype, provenance

    (out / "config.yaml").write_text(text, encoding="utf-8")
    device = device_and_dtype("fp32", getattr(cfg, "device", "auto"))[0]
    (out / "provenance.json").write_text(json.dumps(provenance(device), indent=1) + "\n", encoding="utf-8")


def tree(commands: dict, groups: dict) -> argparse.ArgumentParser:
    """The nouns and verbs with their one-line help: what `cmbert [NOUN ...] --help` and a wrong command show."""
    parsers = {(): argparse.ArgumentParser(prog="cmbert", description="Pretrain and fine-tune a clinical ModernBERT.")}
    verbs = {}
    for path, spec in commands.items():
        for depth in range(1, len(path) + 1):
            key, parent = path[:depth], path[:depth - 1]
            if key not in parsers:
                if parent not in verbs:
                    verbs[parent] = parsers[parent].add_subparsers(dest=f"level{depth}", required=True,
                                                                   metavar="VERB" if parent else "COMMAND")
                text = spec["help"] if key == path else groups.get(key, "")
                parsers[key] = verbs[parent].add_parser(key[-1], help=text.replace("%", "%%"), description=text)
    return parsers[()]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands, groups = tables()
    path = next((tuple(argv[:n]) for n in (3, 2, 1) if tuple(argv[:n]) in commands), None)
    if path is None:
        tree(commands, groups).parse_args(argv)  # prints the help, or the usage error naming the choices, and exits
        return
    parser, call = leaf(path, commands[path])
    rest = argv[len(path):]
    args = parser.parse_intermixed_args(rest) if "config" in commands[path] else parser.parse_args(rest)
    try:
        call(args)
    except UserError as error:
        if os.environ.get("CMBERT_DEBUG"):
            raise
        print(f"cmbert: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
