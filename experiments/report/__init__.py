"""Rebuild the measured parts of docs/answers.md from results/, so the text never drifts
from the numbers.

    python -m experiments.report            # rewrite the sections between the markers
    python -m experiments.report --check    # exit 1 if docs/answers.md is not up to date
    python -m experiments.report --print q3 # one section to stdout (e.g. from --results DIR)

docs/answers.md keeps its hand-written parts; each question's body sits between
`<!-- BEGIN qN -->` and `<!-- END qN -->` and is templates/qN.md filled from results JSON (its
entries as they are, and the values that experiments/report/qN.py derives from them):

- Q1 results/cnn_vs_rnn.json (and the GPU run in results/cnn_vs_rnn_h100/),
- Q2 results/recurrence.json,
- Q3 results/attention_scaling.json,
- Q4 results/sentiment_facts.json and the collected runs results/sentiment_*.json.

A section whose results file does not exist yet says which command produces it. The Q1
experiment's tables, results/cnn_vs_rnn.md (templates/cnn_vs_rnn.md), are rebuilt and
checked the same way.
"""

from __future__ import annotations

import difflib
import pathlib
import re
import sys
from collections.abc import Callable

import jinja2

from experiments import cli
from experiments.report.cnn_tables import markdown_report
from experiments.report.q1 import GPU_DIR, q1_from_results
from experiments.report.q2 import q2_from_results
from experiments.report.q3 import q3_from_results
from experiments.report.q4 import q4_from_results
from experiments.report.text import read_json
from hw3_jax.timing import RESULTS
from hw3_jax.train.workdir import atomic_path

ANSWERS = pathlib.Path("docs", "answers.md")  # from the checkout's root, as RESULTS
SECTIONS: dict[str, Callable[[pathlib.Path], str]] = {
    "q1": q1_from_results, "q2": q2_from_results, "q3": q3_from_results, "q4": q4_from_results,
}
_BLOCK = re.compile(r"(<!-- BEGIN (q\d) -->\n)(.*?)(<!-- END \2 -->)", re.DOTALL)


def render_answers(text: str, results_dir: pathlib.Path, only: list[str] | None = None) -> str:
    """`text` (docs/answers.md) with each marked section's body regenerated."""
    found = [m.group(2) for m in _BLOCK.finditer(text)]
    unknown = sorted(set(found) - set(SECTIONS))
    if unknown:
        raise cli.UserError(f"answers.md has markers for unknown sections {unknown}; "
                            f"known: {sorted(SECTIONS)}")
    missing = [s for s in (only or SECTIONS) if s not in found]
    if missing:
        raise cli.UserError(f"answers.md has no <!-- BEGIN {missing[0]} --> ... <!-- END "
                            f"{missing[0]} --> markers; add them around that section's body")

    def body(m: re.Match) -> str:
        name = m.group(2)
        if only and name not in only:
            return m.group(0)
        new = SECTIONS[name](results_dir).strip("\n")
        return f"{m.group(1)}\n{new}\n\n{m.group(4)}"

    return _BLOCK.sub(body, text)


def tables(results_dir: pathlib.Path) -> dict[pathlib.Path, str]:
    """{path: text} of results_dir/cnn_vs_rnn.md and GPU_DIR/cnn_vs_rnn.md, for
    each whose JSON exists."""
    out = {}
    for folder in (results_dir, results_dir / GPU_DIR):
        r = read_json(folder / "cnn_vs_rnn.json")
        if r is not None:
            out[folder / "cnn_vs_rnn.md"] = markdown_report(r)
    return out


def _main(argv: list[str] | None) -> int:
    p = cli.ArgumentParser(prog="python -m experiments.report",
                           description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--check", action="store_true",
                   help="change nothing; exit 1 (with a diff) if a file is not up to date")
    path = lambda text: pathlib.Path(cli.given(text))  # an empty one: not the current folder
    p.add_argument("--answers", type=path, default=ANSWERS,
                   help="the answers file (default: docs/answers.md)")
    p.add_argument("--results", type=path, default=RESULTS,
                   help="the results folder (default: results/)")
    p.add_argument("--only", nargs="+", choices=sorted(SECTIONS),
                   help="regenerate only these sections (and not results/cnn_vs_rnn.md)")
    p.add_argument("--print", dest="print_section", choices=sorted(SECTIONS),
                   help="print one section's Markdown to stdout and change nothing")
    args = p.parse_args(argv)
    if problem := cli.path_problem(args.results, "folder"):
        raise cli.UserError(f"results folder {args.results} {problem}; pass --results")
    if args.print_section:
        sys.stdout.write(SECTIONS[args.print_section](args.results))
        return 0
    if problem := cli.path_problem(args.answers, "file"):
        raise cli.UserError(f"{args.answers} {problem}; pass --answers")
    old = args.answers.read_text()
    files = {args.answers: (old, render_answers(old, args.results, args.only))}
    if not args.only:
        for path, new in tables(args.results).items():
            files[path] = (path.read_text() if path.is_file() else "", new)
    if args.check:
        return _check(files)
    for path, (old, new) in files.items():
        if new != old:
            # Through a temporary file: a run killed mid-write leaves the old text whole.
            with atomic_path(path) as tmp:
                tmp.write_text(new)
            print(f"updated {path}")
        else:
            print(f"{path} already up to date")
    return 0


def _check(files: dict[pathlib.Path, tuple[str, str]]) -> int:
    stale = [path for path, (old, new) in files.items() if old != new]
    for path in stale:
        old, new = files[path]
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                   str(path), "regenerated"))
        print(f"{path} is out of date: run python -m experiments.report", file=sys.stderr)
    if not stale:
        print("up to date: " + ", ".join(str(p) for p in files))
    return 1 if stale else 0


def main(argv: list[str] | None = None) -> int:
    def report() -> int:
        try:
            return _main(argv)
        except KeyError as e:  # a results JSON written by an older or hand-edited command
            raise cli.UserError(f"a results file has no entry {e}: write it again with the "
                                "command that makes it") from None
    return cli.run_main(report, (OSError, ValueError, jinja2.TemplateError))
