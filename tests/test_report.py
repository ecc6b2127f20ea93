"""experiments.report: docs/answers.md matches results/, and the section generators."""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import jinja2
import pytest

from experiments import report, sentiment_answers
from experiments.report.q2 import q2_from_results
from experiments.report.q3 import q3_markdown
from experiments.report.q4 import q4_from_results
from experiments.report.text import ENV, reflow

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def test_committed_answers_match_results():
    """The CI check: regenerating docs/answers.md from results/ changes nothing."""
    proc = subprocess.run([sys.executable, "-m", "experiments.report", "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr


def test_check_fails_on_a_drifted_number_and_rewrite_fixes_it(tmp_path, capsys):
    answers = tmp_path / "answers.md"
    text = (ROOT / "docs" / "answers.md").read_text()
    assert "8,192 sequences of even length" in text
    answers.write_text(text.replace("8,192 sequences of even length",
                                    "8,000 sequences of even length"))
    args = ["--answers", str(answers), "--results", str(RESULTS), "--only", "q2"]
    assert report.main(["--check", *args]) == 1
    diff = capsys.readouterr().out
    assert "-- 8,000 sequences of even length" in diff
    assert "+- 8,192 sequences of even length" in diff
    assert report.main(args) == 0
    assert answers.read_text() == text
    assert report.main(["--check", *args]) == 0


def test_a_write_that_fails_midway_leaves_the_old_text(tmp_path, monkeypatch, capsys):
    """docs/answers.md is replaced whole or not at all: a run killed (here: failing) while
    writing cannot leave it truncated."""
    answers = tmp_path / "answers.md"
    drifted = (ROOT / "docs" / "answers.md").read_text().replace(
        "8,192 sequences of even length", "8,000 sequences of even length")
    answers.write_text(drifted)

    def half_then_fail(self, text, *args, **kwargs):
        with open(self, "w") as f:
            f.write(text[:len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", half_then_fail)
    assert report.main(["--answers", str(answers), "--results", str(RESULTS),
                        "--only", "q2"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert answers.read_text() == drifted
    assert [p.name for p in tmp_path.iterdir()] == ["answers.md"]  # no temporary file left


def test_q1_with_a_gpu_run_of_one_side():
    """A GPU run measured at one image side has no latency growth to report: the section
    renders as without it, not a division by zero."""
    from experiments.report.q1 import GPU_DIR, q1_markdown

    r = json.loads((RESULTS / "cnn_vs_rnn.json").read_text())
    gpu = json.loads((RESULTS / GPU_DIR / "cnn_vs_rnn.json").read_text())
    def words(text: str) -> str:  # the rendered text, its line breaks as spaces
        return " ".join(text.split())

    assert "us per row" in words(q1_markdown(r, gpu)) and "us per row" not in words(q1_markdown(r))
    gpu["latency_vs_side"] = gpu["latency_vs_side"][:1]
    assert q1_markdown(r, gpu) == q1_markdown(r)


def test_text_outside_the_markers_is_kept(tmp_path):
    answers = tmp_path / "answers.md"
    answers.write_text("# Title\n\nfree text\n\n## Q3\n\n<!-- BEGIN q3 -->\nold\n<!-- END q3 -->\n"
                       "\nafter\n")
    assert report.main(["--answers", str(answers), "--results", str(tmp_path), "--only",
                        "q3"]) == 0
    new = answers.read_text()
    assert new.startswith("# Title\n\nfree text\n\n## Q3\n\n<!-- BEGIN q3 -->\n\n")
    assert new.endswith("\n\n<!-- END q3 -->\n\nafter\n")
    assert "old" not in new
    # No results/attention_scaling.json in tmp_path: the section says which command makes it.
    assert "*Not measured yet:* `python -m experiments.attention_scaling`" in new


def test_missing_markers_and_folders_are_one_line_errors(tmp_path, capsys):
    answers = tmp_path / "answers.md"
    answers.write_text("## Q1\n\nno markers\n")
    assert report.main(["--answers", str(answers), "--results", str(RESULTS)]) == 2
    assert "no <!-- BEGIN q1 -->" in capsys.readouterr().err
    assert report.main(["--answers", str(answers), "--results", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert report.main(["--answers", str(answers), "--results", str(answers)]) == 2
    assert capsys.readouterr().err.endswith("answers.md is not a folder; pass --results\n")
    assert report.main(["--answers", str(tmp_path), "--results", str(RESULTS)]) == 2
    assert capsys.readouterr().err.endswith(f"{tmp_path} is not a file; pass --answers\n")
    # A bad flag: one line, not argparse's usage block.
    assert report.main(["--only", "q9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --only: invalid choice") and err.count("\n") == 1, err


@pytest.mark.parametrize("main,argv", [
    (report.main, ["--results", "", "--check"]),
    (report.main, ["--answers", "", "--check"]),
    (sentiment_answers.main, ["facts", "--vocab", "", "--imdb-archive", "", "--out", ""]),
    (sentiment_answers.main, ["collect", "--workdir", "run", "--name", "x", "--no-predict",
                              "--out", ""]),
])
def test_an_empty_path_is_one_error_line(main, argv, tmp_path, monkeypatch, capsys):
    """An empty path (an unset shell variable) is refused, not read or written as the
    current folder."""
    monkeypatch.chdir(tmp_path)
    if main is sentiment_answers.main:
        _fake_run(tmp_path / "run")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --") and "an empty string" in err, err
    assert err.count("\n") == 1 and not list(tmp_path.glob("*.json")), err


def test_a_malformed_results_file_is_one_line_naming_it(tmp_path, capsys):
    for content in ("{", "[]"):  # not JSON; JSON but not an object
        (tmp_path / "recurrence.json").write_text(content)
        assert report.main(["--print", "q2", "--results", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {tmp_path / 'recurrence.json'} ") and err.count("\n") == 1
    (tmp_path / "recurrence.json").write_text("{}")  # an object without the entries
    assert report.main(["--print", "q2", "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: a results file has no entry '")
    _fake_run(tmp_path / "run")
    (tmp_path / "run" / "metrics.json").write_text("{")
    assert sentiment_answers.main(["collect", "--workdir", str(tmp_path / "run"), "--name", "x",
                                   "--out", str(tmp_path / "out"), "--no-predict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'run' / 'metrics.json'} is not valid JSON"), err


def test_facts_refuses_a_bad_out_before_measuring(tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("x")
    monkeypatch.setattr(sentiment_answers, "param_facts", lambda: pytest.fail("measured first"))
    assert sentiment_answers.main(["facts", "--vocab", "", "--imdb-archive", "", "--out",
                                   str(tmp_path / "a_file")]) == 2
    assert "is not writable (File exists): choose another --out" in capsys.readouterr().err


def test_every_section_renders_without_results(tmp_path):
    for name, section in report.SECTIONS.items():
        text = section(tmp_path)
        assert "Not measured yet" in text, name


def test_q2_numbers_come_from_the_json(tmp_path):
    r = json.loads((RESULTS / "recurrence.json").read_text())
    text = " ".join(q2_from_results(RESULTS).split())
    assert f"{r['scan_vs_closed_form']['even']['n_saturated']:,} final outputs are saturated" \
        in text
    r["scan_vs_closed_form"]["even"]["n_saturated"] = 1234
    r["training"]["final_weights"]["w_rec"][0] = -0.5  # a run that did not converge
    r["training"]["max_abs_w_rec_plus_1"] = 0.5
    (tmp_path / "recurrence.json").write_text(json.dumps(r))
    text = " ".join(q2_from_results(tmp_path).split())
    assert "1,234 final outputs are saturated" in text
    assert "All 8 runs find" not in text and "The 8 runs end with" in text


def test_q3_from_a_quick_run_shape():
    """q3_markdown on a hand-made result with the experiment's JSON layout."""
    def rec(method, mode, t, s, mib):
        return {"method": method, "mode": mode, "T": t, "status": "ok", "median_s": s,
                "temp_bytes": int(mib * 2**20)}

    recs = []
    for t, k in ((256, 1), (512, 2), (4096, 16), (8192, 32), (16384, 64)):
        for mode, f in (("fwd", 1.0), ("fwd_bwd", 3.0)):
            recs += [rec("softmax", mode, t, f * 0.01 * k * k, 4 * k * k),
                     rec("performer", mode, t, f * 0.015 * k, 8),
                     rec("local", mode, t, f * 0.012 * k, 10 * k)]
    rows = [{"sampler": s, "features": m, "rel_error_mean": e, "tv_mean": 0.1}
            for s in ("orthogonal", "iid") for m, e in ((16, 0.8), (64, 0.4))]
    r = {"command": "python -m experiments.attention_scaling --quick",
         "config": {"lengths": [256, 512, 4096, 8192, 16384], "batch": 1, "heads": 8,
                    "head_dim": 64, "dtype": "float32", "performer_features": 256,
                    "local_window": 128, "reps": 2},
         "machine": {"device": "CPU (AMD EPYC, 2 cores)"}, "records": recs,
         "crossover": {k: {"T": 400.0, "bound": "interpolated"} for k in
                       ("performer_fwd", "performer_fwd_bwd", "local_fwd", "local_fwd_bwd")},
         "targets": {}, "wall_s": 42.0,
         "error": {"T": 1024, "draws": 2, "features": [16, 64],
                   "regimes": [{"sigma": 0.5, "logit_std": 0.25, "local_window": 128,
                                "local_rel_error": 0.05, "local_tv": 0.01, "rows": rows}]}}
    text = q3_markdown(r)
    flat = " ".join(text.split())  # prose is re-wrapped: compare it without line breaks
    assert "| 512 | 40.0 / 120 | 30.0 / 90.0 | 24.0 / 72.0 | 16 | 8 | 20 |" in text
    assert "multiplied the time by 4.0 (exact" in flat
    assert "$T \\approx 400$" in flat
    assert "$m^{-0.50}$" in flat  # 0.8 -> 0.4 over 4x the features
    assert "interleaved rounds" not in flat  # the result has no interleaved rounds
    steps = {"4096->8192": 1.5, "8192->16384": 2.5}
    r["interleaved"] = {"rounds": 3, "growth_per_step": {
        "performer_fwd": steps, "local_fwd": {"4096->8192": 1.75, "8192->16384": 1.25}}}
    flat = " ".join(q3_markdown(r).split())
    assert ("Timed in 3 interleaved rounds instead (every length in turn; the median of the "
            "per-round ratios), each doubling from 4,096 to 16,384 multiplied the forward time by "
            "1.5 to 2.5 (Performer) and 1.2 to 1.8 (local).") in flat


def _fake_run(workdir: pathlib.Path, status: str = "completed", devices: dict | None = None
              ) -> None:
    """A workdir as the sentiment experiment leaves it: metrics.json and config.json (the
    notebook variant, with an unused synthetic size)."""
    from configs.sentiment import get_config
    from experiments.sentiment_train import resolve
    from hw3_jax.bert import BertConfig

    workdir.mkdir(parents=True)
    history = [{"epoch": e, "train_loss": 0.6 / e, "train_accuracy": 0.7 + 0.1 * e,
                "val_loss": 0.5 / e, "val_accuracy": 0.75 + 0.1 * e, "epoch_time_s": 900.0 / e}
               for e in (1, 2)]
    command = ("python -m experiments.sentiment --config configs/sentiment.py:notebook "
               f"--config.data.synthetic_size=6000 --workdir {workdir}")
    metrics = {
        "status": status, "history": history, "best": {"epoch": 2}, "test_loss": 0.25,
        "test_accuracy": 0.9061, "test_examples": 25000, "steps": 274,
        "params": {"total": 112241409, "trainable": 2759169},
        "devices": devices or {"backend": "gpu", "kind": "NVIDIA H100", "num_devices": 1},
        "data": {"sizes": {"train": 17500, "validation": 7500, "test": 25000}},
        "predictions": {s: 0.1 for s in sentiment_answers.NOTEBOOK_SENTENCES},
        "command": command, "config_spec": "configs/sentiment.py:notebook",
    }
    config = resolve(get_config("notebook")).to_dict()
    config["data"]["synthetic_size"] = 6000
    run_config = {**config, "bert": BertConfig().to_dict(), "command": command,
                  "config_spec": "configs/sentiment.py:notebook"}
    (workdir / "metrics.json").write_text(json.dumps(metrics))
    (workdir / "config.json").write_text(json.dumps(run_config))


def test_q4_with_a_collected_run(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(RESULTS / "sentiment_facts.json", results)
    _fake_run(tmp_path / "run")
    assert sentiment_answers.main(["collect", "--workdir", str(tmp_path / "run"), "--name",
                                   "bert", "--out", str(results), "--no-predict"]) == 0
    collected = json.loads((results / "sentiment_bert.json").read_text())
    assert collected["command"] == ("python -m experiments.sentiment --config "
                                    "configs/sentiment.py:notebook")
    run_config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert collected["run_config"] == run_config
    text = q4_from_results(results)
    flat = " ".join(text.split())
    assert "| 2 (best) | 0.300 | 90.00% | 0.250 | 95.00% | 7.5 min |" in text
    assert "accuracy **90.61%**" in flat
    assert "| Q4a | Avengers was great!! | 0.1000 |" in text
    assert "has no collected run yet" not in flat  # a pretrained run exists
    assert "**112,241,409** = BERT 109,482,240 + GRU 2,758,656 + linear 513" in flat
    assert "**17,500** train / **7,500** validation" in flat
    # An unfinished run is refused with one line.
    _fake_run(tmp_path / "running", status="running")
    assert sentiment_answers.main(["collect", "--workdir", str(tmp_path / "running"),
                                   "--name", "x", "--out", str(results)]) == 2
    assert "not completed" in capsys.readouterr().err
    # NAME "facts" is refused: its file would replace the facts the report reads.
    assert sentiment_answers.main(["collect", "--workdir", str(tmp_path / "run"), "--name",
                                   "facts", "--out", str(results), "--no-predict"]) == 2
    assert "not 'facts'" in capsys.readouterr().err
    assert "tokenizer" in json.loads((results / "sentiment_facts.json").read_text())
    # A workdir without its config.json is refused too.
    (tmp_path / "run" / "config.json").unlink()
    assert sentiment_answers.main(["collect", "--workdir", str(tmp_path / "run"), "--name",
                                   "x", "--out", str(results), "--no-predict"]) == 2
    assert "config.json does not exist" in capsys.readouterr().err


def test_collect_replaces_the_curves_whole_or_not_at_all(tmp_path, monkeypatch, capsys):
    """A copy of curves.png that fails midway (a full disk, say) leaves the collected plot
    as it was, and no temporary file."""
    results = tmp_path / "results"
    results.mkdir()
    _fake_run(tmp_path / "run")
    (tmp_path / "run" / "curves.png").write_bytes(b"new plot" * 1000)
    (results / "sentiment_x_curves.png").write_bytes(b"old plot")

    def half_then_fail(src, dst, *args, **kwargs):
        pathlib.Path(dst).write_bytes(pathlib.Path(src).read_bytes()[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", half_then_fail)
    assert sentiment_answers.main(["collect", "--workdir", str(tmp_path / "run"), "--name",
                                   "x", "--out", str(results), "--no-predict"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert (results / "sentiment_x_curves.png").read_bytes() == b"old plot"
    assert sorted(p.name for p in results.iterdir()) == ["sentiment_x.json",
                                                         "sentiment_x_curves.png"]


def test_q4_names_the_cpu_a_run_timed(tmp_path):
    """A CPU run's epoch times come with the CPU's name; a run collected without one says
    that its CPU is not recorded."""
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(RESULTS / "sentiment_facts.json", results)
    for name, devices in (("named", {"backend": "cpu", "kind": "cpu", "num_devices": 1,
                                     "name": "CPU (Some CPU, 2 cores)"}),
                          ("unnamed", {"backend": "cpu", "kind": "cpu", "num_devices": 1})):
        _fake_run(tmp_path / name, devices=devices)
        assert sentiment_answers.main(["collect", "--workdir", str(tmp_path / name), "--name",
                                       name, "--out", str(results), "--no-predict"]) == 0
    flat = " ".join(q4_from_results(results).split())
    assert "on CPU (Some CPU, 2 cores);" in flat
    assert "on CPU (its model not recorded); `results/sentiment_unnamed.json`" in flat


def test_facts_file_matches_a_fresh_measurement(shared_data):
    """results/sentiment_facts.json is what the tokenizer and the model give today."""
    facts = json.loads((RESULTS / "sentiment_facts.json").read_text())
    tok = sentiment_answers.tokenizer_facts(shared_data / "bert-base-uncased" / "vocab.txt")
    for key in ("vocab_size", "example_tokens", "example_ids", "example_ids_with_specials",
                "special_ids", "long_review_ids", "long_review_first_last"):
        assert tok[key] == facts["tokenizer"][key], key
    assert tok["vocab_size"] == 30522
    assert tok["example_ids"] == [7592, 2088, 2129, 2024, 2017, 1029]
    assert tok["special_ids"] == {"[CLS]": 101, "[SEP]": 102, "[PAD]": 0, "[UNK]": 100}
    prm = sentiment_answers.param_facts()
    assert prm == facts["params"]
    assert (prm["total"], prm["trainable_frozen_encoder"]) == (112_241_409, 2_759_169)
    assert (facts["splits"]["train"], facts["splits"]["validation"],
            facts["splits"]["test"]) == (17_500, 7_500, 25_000)


def test_reflow_keeps_math_and_code_whole():
    text = ("A paragraph with $a + b = c$ inline math and `some code here` that is long enough "
            "to be wrapped somewhere in the middle of it, twice or more, at a width of forty.\n\n"
            "$$x = 1 +\n  2$$\n\n| a | b |\n| - | - |\n\n- an item that is long enough to wrap "
            "onto a second line here\n- another")
    out = reflow(text, width=40)
    assert "$a + b = c$" in out and "`some code here`" in out
    assert "$$x = 1 + 2$$" in out
    assert "| a | b |\n| - | - |" in out
    assert "\n  onto" in out or "\n  a second" in out or "\n  line" in out
    assert all(len(line) <= 40 for line in out.splitlines() if not line.startswith(("$", "|")))


def test_templates_conditionals_formats_and_errors():
    values = {"a": 1, "b": 0, "x": 0.9087, "r": {"n": [32768]}, "rows": []}

    def fill(text: str) -> str:
        return ENV.from_string(text).render(values)

    text = "<% if a %>A<% if b %>B<% else %>C<% endif %><% endif %><% if not a %>N<% endif %>"
    assert fill(text) == "AC"
    text = "<< x|fmt('.1%') >> << r.n.0|tex >> << r.n.0|fmt(',') >>"
    assert fill(text) == "90.9% 32{,}768 32,768"
    # A line that is only a block tag disappears: no rows, no row lines.
    assert fill("| a |\n<% for row in rows %>\n<< row >>\n<% endfor %>\nend") == "| a |\nend"
    assert fill("<% if b %><< undefined >><% endif %>") == ""  # a dropped branch needs no value
    for bad in ("<% if a %>x", "x<% endif %>", "<< undefined >>", "<% if undefined %>x<% endif %>",
                "<% iff a %>", "<< r.n.1 >>"):
        with pytest.raises(jinja2.TemplateError):
            fill(bad)


def test_collected_commands_are_the_run_commands():
    """Each collected run's stored "command" is the one `run_command` builds from its
    "run_config" with today's configs, as docs/answers.md shows it."""
    files = {p.name: json.loads(p.read_text()) for p in sorted(RESULTS.glob("sentiment_*.json"))}
    runs = {name: m for name, m in files.items() if "run_config" in m}
    assert len(runs) >= 6, sorted(files)  # every Q4 run the README cites
    for name, m in runs.items():
        assert m["command"] == sentiment_answers.run_command(m), name


def test_run_command():
    from configs.sentiment import get_config
    from experiments.sentiment import build_config
    from experiments.sentiment_train import resolve

    def collected(variant: str) -> dict:
        command = "python -m experiments.sentiment --workdir runs/s"
        return {"run_config": {**resolve(get_config(variant)).to_dict(), "command": command}}

    # A run that recorded a variant's own values is that variant; another is its nearest
    # variant with the fields where it differs, as shortcut flags where they have one.
    m = collected("synthetic")
    assert sentiment_answers.run_command(m) == (
        "python -m experiments.sentiment --config configs/sentiment.py:synthetic")
    m["run_config"]["seed"] = 1
    m["run_config"]["train"]["epochs"] += 1
    assert sentiment_answers.run_command(m) == (
        "python -m experiments.sentiment --config configs/sentiment.py:synthetic "
        "--epochs 3 --seed 1")
    del m["run_config"]["data"]["truncation"]  # missing: the default config's value
    assert sentiment_answers.run_command(m).endswith("--epochs 3 --seed 1")
    m = collected("imdb_scratch")
    m["run_config"]["data"]["synthetic_size"] = 123  # ignored: not synthetic data
    m["run_config"]["model"]["performer_features"] = 64  # ignored: softmax attention
    assert sentiment_answers.run_command(m) == (
        "python -m experiments.sentiment --config configs/sentiment.py:imdb_scratch")
    m["run_config"]["model"]["attention"] = "performer"  # now its feature count counts
    command = sentiment_answers.run_command(m)
    assert command == (
        "python -m experiments.sentiment --config configs/sentiment.py:imdb_scratch "
        "--attention performer --config.model.performer_features=64")
    config, _, _ = build_config(shlex.split(command)[3:])  # the command parses back
    assert (config.model.attention, config.model.performer_features) == ("performer", 64)


def test_an_installed_copy_renders_the_report_from_its_own_templates(tmp_path):
    """pip installs the packages alone (the notebook on Colab installs from git, with no
    checkout): the templates must come with them. Built from a copy of the sources with the
    venv's setuptools (no download), installed into a folder, run from elsewhere."""
    src = tmp_path / "src"
    for package in ("hw3_jax", "experiments", "benchmarks", "configs"):
        shutil.copytree(ROOT / package, src / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist",
                    src], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("hw3_jax-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", tmp_path / "site", wheel],
                   check=True, capture_output=True)
    code = ("import json, sys; from experiments.report import cnn_tables; "
            "print(cnn_tables.__file__); "
            "print(cnn_tables.markdown_report(json.load(open(sys.argv[1]))), end='')")
    proc = subprocess.run([sys.executable, "-c", code, RESULTS / "cnn_vs_rnn.json"],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    where, table = proc.stdout.split("\n", 1)
    assert where.startswith(str(tmp_path / "site"))  # the installed copy, not the checkout
    assert table == (RESULTS / "cnn_vs_rnn.md").read_text()
