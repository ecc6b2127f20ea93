"""What every experiment's command line shares: loading a config, overrides, one-line errors.

    python -m experiments.NAME --config configs/NAME.py:VARIANT --config.train.lr=2e-3

`--config` takes a config file (or a module name such as `configs.sentiment`) and an
optional variant after a colon; each `--config.a.b=VALUE` sets one field (`set_field`).
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import gc
import importlib
import importlib.util
import math
import os
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import jax
import ml_collections

from hw3_jax import timing
from hw3_jax.data.errors import DataError, first_line, json_object
from hw3_jax.train import sharding
from hw3_jax.train.workdir import WorkdirError

OVERRIDE_PREFIX = "--config."
# The flags of a multi-process launch: `jax.distributed.initialize` argument -> (flag,
# metavar, help); each not given is read from its environment variable (`sharding.LAUNCH_ENV`).
LAUNCH_FLAGS = {
    "coordinator_address": ("--coordinator", "HOST:PORT",
                            "where process 0 serves JAX's coordination service"),
    "num_processes": ("--num-processes", "N", "processes in the run"),
    "process_id": ("--process-id", "I", "this process, 0..N-1"),
}


class UserError(Exception):
    """A mistake in the command line or its inputs: printed as one line, exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors (an unknown flag, a bad value) are a UserError: one
    line, not the usage block (some experiments have fifty flags)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")


def given(text: str) -> str:
    """An argparse `type` for a file or folder flag: refuses an empty value (an unset shell
    variable), which would otherwise mean the default or the current folder."""
    if not text:
        raise argparse.ArgumentTypeError("an empty string: name the file or folder")
    return text


def path_problem(path: str | Path, kind: str) -> str | None:
    """None if `path` is a `kind` ("file" or "folder"), else what is wrong with it for an
    error line: "is not a KIND" or "does not exist"."""
    p = Path(path)
    if p.is_file() if kind == "file" else p.is_dir():
        return None
    return f"is not a {kind}" if p.exists() else "does not exist"


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str],
               fields: Callable[[], Iterable[str]], command: str | None = None
               ) -> argparse.Namespace:
    """`parser.parse_args(argv)`, where an unrecognized argument is a UserError that names the
    override of the first one naming config fields (`fields()`: dotted names, asked for only
    then): `--readout` -> `--config.model.readout=VALUE`, every field of that name when
    several have it. `command`: the program whose --help the error cites (default: the
    parser's)."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        hint = ""
        names = list(fields())
        for arg in unknown:
            flag = arg.partition("=")[0]
            name = flag.removeprefix("--").replace("-", "_")
            dotted = [f for f in names if f.rpartition(".")[2] == name]
            if flag.startswith("--") and dotted:
                hint = (f"; {flag} is the config field {' or '.join(dotted)}: "
                        + " or ".join(f"{OVERRIDE_PREFIX}{d}=VALUE" for d in dotted))
                break
        raise UserError(f"unrecognized arguments: {' '.join(unknown)}{hint} "
                        f"(see {command or parser.prog} --help)")
    return args


def load_config(spec: str, like: ml_collections.ConfigDict | None = None
                ) -> ml_collections.ConfigDict:
    """`FILE.py[:ARG]` or `package.module[:ARG]` -> that module's `get_config(ARG)` (without
    ARG, `get_config()`); with `like` (the experiment's default config), one with the same
    top-level fields."""
    target, _, arg = spec.partition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            module = f"configs.{path.stem}"
            if path.parent.name == "configs" and importlib.util.find_spec(module):
                # The repository's configs/NAME.py, looked for from another directory: the
                # installed module configs.NAME is the same config, found from anywhere.
                named = f"{module}:{arg}" if arg else module
                fix = (f"run from the repository's root, or name the installed module: "
                       f"--config {named}")
            else:
                fix = "give an existing file, or a module such as configs.sentiment"
            where = "" if path.is_absolute() else f" (from {Path.cwd()})"
            raise UserError(f"config file {target} not found{where}: {fix}")
        module_spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except SyntaxError as e:  # the file and line in one line, not a traceback
            raise UserError(f"config file {target}: {e}") from None
    else:
        # import_module's TypeError and ValueError: a path without .py ("./x"), or ":VARIANT"
        try:
            module = importlib.import_module(target)
        except (ModuleNotFoundError, TypeError, ValueError):
            raise UserError(f"no config module {target}: pass a config file, or a module "
                            "such as configs.sentiment") from None
    if not callable(getattr(module, "get_config", None)):
        raise UserError(f"config {target} has no get_config(arg): pass a config file, or a "
                        "module such as configs.sentiment")
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except (KeyError, ValueError) as e:
        raise UserError(f"config {spec}: {e}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(f"config {spec}: get_config returned a {type(config).__name__}, "
                        "not an ml_collections.ConfigDict")
    if like is not None and set(config) != set(like):
        raise UserError(f"config {spec} is another experiment's: its fields are "
                        f"{', '.join(config)}, this experiment's {', '.join(like)}")
    return config


def read_json(path: str | Path) -> dict[str, Any]:
    """The JSON object in the file `path`; another content is a UserError naming the file."""
    try:
        return json_object(path)
    except ValueError as e:
        raise UserError(f"{e}: write it again with the command that makes it") from None


def whole(value: Any, least: int = 0) -> bool:
    """Whether `value` is an int >= `least`: not a bool (an int field of a ConfigDict takes
    one) nor None (any field takes `--config.x=None`)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def positive(value: Any) -> bool:
    """Whether `value` is a finite number > 0 (not a bool, None, NaN or inf)."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def require(ok: Any, flag: str, what: str, value: Any) -> None:
    """A UserError "FLAG must be WHAT, got VALUE" unless `ok`."""
    if not ok:
        raise UserError(f"{flag} must be {what}, got {value!r}")


def check_seed(seed: Any, flag: str = "--seed") -> None:
    """A UserError unless `seed` is one NumPy and scikit-learn take (32 bits, unsigned)."""
    require(whole(seed) and seed < 2**32, flag, "a whole number in 0..2**32-1", seed)


def parse_value(text: str, field_type: type | None = None) -> Any:
    """`text` as a Python literal, else as written; for a text field (`field_type` str) as
    written unless it is `None` or a quoted literal."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    if field_type is str and value is not None and not isinstance(value, str):
        return text
    return value


def set_field(config: ml_collections.ConfigDict, dotted: str, value) -> None:
    """config.a.b = value, type-checked by the ConfigDict; a bad name or type is a UserError.
    A string `value` is parsed for the field's type first (`--config.a.b=VALUE`'s rule)."""
    *parents, name = dotted.split(".")
    node, where = config, "the config"
    try:
        for i, p in enumerate(parents):
            node, where = node[p], "config." + ".".join(parents[:i + 1])
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            raise KeyError(name)
        if isinstance(node[name], ml_collections.ConfigDict):
            raise UserError(f"--config.{dotted} is a section: set its fields, "
                            f"--config.{dotted}.FIELD=VALUE")
        if isinstance(value, str):
            value = parse_value(value, node.get_type(name))
        if isinstance(value, list):
            value = tuple(value)
        node[name] = value
    except KeyError:
        # Name what the deepest section reached holds: a misremembered name is then in sight.
        held = f"; {where} has {', '.join(sorted(node))}" \
            if isinstance(node, ml_collections.ConfigDict) else ""
        raise UserError(f"--config.{dotted}: the config has no field {dotted}{held}") from None
    except TypeError as e:
        raise UserError(f"--config.{dotted}={value!r}: {e}") from None


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(the other arguments, [(dotted name, VALUE as written)]) from `--config.a.b=VALUE` or
    `--config.a.b VALUE`, in order; `set_field` parses each VALUE for its field."""
    rest, overrides = [], []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith(OVERRIDE_PREFIX):
            rest.append(arg)
            continue
        name, eq, value = arg[len(OVERRIDE_PREFIX):].partition("=")
        if not eq:
            if not args:
                raise UserError(f"{arg} needs a value: {arg}=VALUE")
            value = args.pop(0)
        overrides.append((name, value))
    return rest, overrides


def run_main(main: Callable[[], int], user_errors: tuple[type[BaseException], ...] = (), *,
             resumable: bool = False, memory_fix: str = "try smaller sizes") -> int:
    """Run `main`; a UserError, DataError (missing or bad data), WorkdirError (an output folder
    that cannot be written), one of `user_errors` or running out of memory (then naming
    `memory_fix`) becomes one line and exit status 2; Ctrl-C exit status 130 (for a
    `resumable` command, with where its run stopped and how to go on).
    A process of a multi-process run that fails (any error: a traceback then exit status 1)
    ends at once (`sharding.leave_failed_run`), so that the others stop too."""
    ours = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if ours:  # not a SIGINT that is ignored (a background job) or handled otherwise
        signal.signal(signal.SIGINT, _interrupt)
    try:
        code = main()
    except KeyboardInterrupt as e:  # e's message: where the training loop stopped, if it did
        print(f"{str(e) or 'interrupted'}; continue with --resume" if resumable else "interrupted",
              file=sys.stderr)
        code = 130
    except (UserError, DataError, WorkdirError, *user_errors) as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except Exception as e:
        if _out_of_memory(e):
            print(f"error: out of memory ({first_line(e)}): {memory_fix}", file=sys.stderr)
            code = 2
        elif not sharding.is_multiprocess():
            raise
        else:
            traceback.print_exc()
            code = 1
    finally:
        if ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    sharding.leave_failed_run(code)
    return code


def _interrupt(signum: int, frame: Any) -> None:
    """Python's own SIGINT handler (a KeyboardInterrupt), but not inside a garbage collector
    callback (JAX has one, run often while texts are tokenized), where a KeyboardInterrupt
    is printed, then dropped: there the signal is sent again, to arrive once it returns."""
    callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    while frame is not None:
        if frame.f_code in callbacks:
            threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
            return
        frame = frame.f_back
    raise KeyboardInterrupt


def exit_with(code: int) -> NoReturn:
    """End the program with exit status `code`; after Ctrl-C (130) at once, without the
    interpreter's teardown: a Ctrl-C can stop the main thread while XLA compiles in threads
    of its own, and tearing the interpreter down under them crashed it (exit status 139)."""
    if code != 130:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _out_of_memory(e: Exception) -> bool:
    """Whether `e` is an allocation that failed: XLA's RESOURCE_EXHAUSTED (device memory, or
    host memory on a CPU) or NumPy's MemoryError. A full disk is the checkpoints' error."""
    return isinstance(e, MemoryError) or (
        isinstance(e, jax.errors.JaxRuntimeError) and str(e).startswith("RESOURCE_EXHAUSTED"))


def add_launch_flags(parser: argparse.ArgumentParser) -> None:
    """--coordinator, --num-processes, --process-id and --heartbeat-timeout: how this process
    joins a multi-process (data-parallel) run."""
    group = parser.add_argument_group(
        "multi-process run", "one process per host (or per device group), all started with "
        "the same --coordinator and --num-processes and each its own --process-id; the "
        "workdir must be on a filesystem they share")
    for name, (flag, metavar, text) in LAUNCH_FLAGS.items():
        group.add_argument(flag, dest=name, metavar=metavar,
                           help=f"{text} (default: ${sharding.LAUNCH_ENV[name]})")
    group.add_argument("--heartbeat-timeout", metavar="SECONDS", type=int, default=None,
                       help="a process silent this long counts as dead and the others stop "
                       "(default: JAX's 100)")


def launch_from_flags(args: argparse.Namespace) -> sharding.Launch | None:
    """The launch `add_launch_flags`' flags (or their environment variables) describe; None
    for a single process. A malformed or partial one is a UserError."""
    labels = {k: f"{flag} (or ${sharding.LAUNCH_ENV[k]})"
              for k, (flag, _, _) in LAUNCH_FLAGS.items()}
    try:
        launch = sharding.launch_from(**{k: getattr(args, k) for k in LAUNCH_FLAGS},
                                      labels=labels)
    except ValueError as e:
        raise UserError(str(e)) from None
    require(args.heartbeat_timeout is None or args.heartbeat_timeout >= 1,
            "--heartbeat-timeout", "1 or more seconds", args.heartbeat_timeout)
    return launch


def add_data_options(parser: argparse.ArgumentParser,
                     archive: str | None = str(timing.SHARED_ARCHIVE),
                     vocab: str | None = str(timing.SHARED_VOCAB), *,
                     archive_help: str | None = None, vocab_help: str | None = None) -> None:
    """--imdb-archive (or --archive) and --vocab, defaulting to `archive` and `vocab`; each
    help ends with its `*_help` (default: the default value)."""
    parser.add_argument("--imdb-archive", "--archive", dest="imdb_archive", metavar="PATH",
                        default=archive,
                        help=f"an aclImdb_v1.tar.gz {archive_help or f'(default {archive})'}")
    parser.add_argument("--vocab", metavar="PATH", default=vocab,
                        help=f"bert-base-uncased's vocab.txt {vocab_help or f'(default {vocab})'}")


@dataclasses.dataclass(frozen=True)
class Shortcut:
    """A command-line flag that sets one config field; not given, the config's value stays."""

    field: str  # dotted name in the config
    help: str = ""
    type: Callable[[str], Any] = str
    nargs: str | None = None
    choices: Sequence[str] | None = None
    metavar: str | None = None
    const: Any = None  # not None: a switch, taking no value, that sets the field to const


def add_shortcuts(parser: argparse.ArgumentParser, shortcuts: Mapping[str, Shortcut],
                  defaults: Mapping[str, object] | None = None) -> None:
    """Each shortcut (flag -> Shortcut) as a flag of `parser` whose value lands in
    `args.<field>`, None when not given; with `defaults` (a `flatten`ed config) its help
    ends with the field's default."""
    for flag, s in shortcuts.items():
        text = s.help if defaults is None else f"{s.help} (default {defaults[s.field]})".lstrip()
        if s.const is not None:
            parser.add_argument(flag, dest=s.field, action="store_const", const=s.const,
                                help=text)
        else:
            parser.add_argument(flag, dest=s.field, type=s.type, nargs=s.nargs,
                                choices=s.choices, metavar=s.metavar, help=text)


def apply_flags(config: ml_collections.ConfigDict, args: argparse.Namespace,
                shortcuts: Mapping[str, Shortcut],
                overrides: Sequence[tuple[str, object]] = ()) -> ml_collections.ConfigDict:
    """Set each shortcut flag given in `args` (None: not given), then each `--config.a.b=V`
    override, on `config`; returns it."""
    for s in shortcuts.values():
        value = getattr(args, s.field)
        if value is not None:
            set_field(config, s.field, value)
    for dotted, value in overrides:
        set_field(config, dotted, value)
    return config


def flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, object]:
    """{"a.b": value} for every leaf field of `config`, in the config's order."""
    out = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def override(dotted: str, value: object) -> str:
    """`--config.a.b=V`, shell text that sets the field `dotted` to `value`: V is its repr
    (a string's quotes keep spaces and `&` for the shell; other values are quoted where
    their repr needs it, e.g. a tuple's), which `set_field` parses back."""
    text = repr(value) if isinstance(value, str) else shlex.quote(repr(value))
    return f"{OVERRIDE_PREFIX}{dotted}={text}"


def command_line(prefix: str, config: ml_collections.ConfigDict,
                 base: ml_collections.ConfigDict, shortcuts: Mapping[str, Shortcut], *,
                 always: Sequence[str] = (), skip: Sequence[str] = ()) -> str:
    """The command that gives `config`: `prefix` (the program and its --config), then its
    fields that differ from `base` or are in `always` (`format_command`); the fields in
    `skip` (where outputs go) never."""
    values, defaults = flatten(config), flatten(base)
    return format_command(prefix, {k: v for k, v in values.items() if k not in skip
                                   and (k in always or v != defaults[k])}, shortcuts)


def format_command(prefix: str, fields: Mapping[str, object],
                   shortcuts: Mapping[str, Shortcut]) -> str:
    """`prefix`, then the shortcut flag (one that takes a value) of each field in `fields`
    ({dotted name: value}) that has one, in the shortcuts' order, then `--config.a.b=V` for
    the others. A tuple or list value of a flag is written as its items."""
    flags = {flag: s.field for flag, s in shortcuts.items() if s.const is None}
    parts = [prefix]
    for flag, dotted in flags.items():
        if dotted in fields:
            value = fields[dotted]
            items = value if isinstance(value, tuple | list) else (value,)
            parts.append(" ".join([flag, *(shlex.quote(str(v)) for v in items)]))
    parts += [override(k, v) for k, v in fields.items() if k not in flags.values()]
    return " ".join(parts)


def parse_flags(prog: str, description: str, argv: Sequence[str] | None, *,
                default_config: str, shortcuts: Mapping[str, Shortcut],
                quick_help: str | None = None, always: Sequence[str] = (),
                skip: Sequence[str] = ()) -> tuple[ml_collections.ConfigDict, str]:
    """An experiment's command line -> (its config, the command that gives that config).

    Flags: `--config FILE[:ARG]` (default `default_config`), `--quick` for the config's
    "quick" variant when `quick_help` is given, each shortcut (flag -> Shortcut), then any
    `--config.a.b=VALUE`; `always`, `skip`: as in `command_line`."""
    rest, overrides = split_overrides(sys.argv[1:] if argv is None else argv)
    default = load_config(default_config)
    defaults = flatten(default)
    p = ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", type=given, help=f"config file[:variant] (default "
                   f"{default_config}); --config.FIELD=VALUE sets any field")
    if quick_help is not None:
        p.add_argument("--quick", action="store_true", help=quick_help)
    add_shortcuts(p, shortcuts, defaults)
    args = parse_args(p, rest, lambda: defaults)
    quick = quick_help is not None and args.quick
    if quick and args.config:
        raise UserError("--quick is the variant :quick of the config: pass --quick or --config")
    spec = args.config or (f"{default_config}:quick" if quick else default_config)
    base = default if spec == default_config else load_config(spec, like=default)
    # A copy: `base` stays as loaded, for the command line to compare against.
    config = apply_flags(copy.deepcopy(base), args, shortcuts, overrides)
    prefix = (f"{prog} --config {shlex.quote(args.config)}" if args.config
              else f"{prog} --quick" if quick else prog)
    return config, command_line(prefix, config, base, shortcuts, always=always, skip=skip)
