"""Experiment configurations: one module per experiment, each with `get_config(arg=None)`.

A module's docstring opens with the command that runs each variant and the result it gave;
`arg` names a variant (`configs/sentiment.py:imdb_scratch`). `experiments.cli` loads a
config from `--config FILE[:ARG]` and applies `--config.a.b=VALUE` overrides.
"""
