"""Conversions and experiments: goals attributed to mails, A/B variants with a holdout,
always-valid results, and opt-in open and click tracking (docs/experiments.md).

Kept free of engine.decide imports at package level: engine.decide.workflow parses the
experiment keys of a workflow through ``engine.experiments.model``.
"""
