"""Dry runs: a draft workflow or segment run against the recorded events, sending nothing.

- ``recording``: the EVENTS stream read back from a start time (an ephemeral, unacknowledged
  consumer: the engines' own ``decide`` consumer is never touched);
- ``workflows``: the decide stage's own ``EventDecider`` and ``StepMachine`` over those events
  on a simulated clock, with waits and timeouts fired on the recorded timeline, the caps
  placed as ``enforce_caps`` would (``preview_caps``, read only) and the deliver stage's send-
  time checks (``check_at_send_time``);
- ``segments``: a draft segment's ``holds`` evaluated as each recorded event arrives;
- ``report``: the tallies both give (per hour, per recipient domain, samples);
- ``run``: the driver (progress, cancel, the limit on events scanned);
- ``operations``: the control verbs and their jobs.

docs/dry-run.md says what a dry run answers and where it is an approximation.
"""
