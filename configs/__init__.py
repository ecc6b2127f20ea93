"""Experiment configurations: one module per experiment, each with `get_config(arg=None)`
whose `arg` names a variant; docs/architecture.md says how a command line loads one."""
