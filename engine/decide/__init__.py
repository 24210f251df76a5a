"""The decide and wait stages: workflows as data, the step machine, the EVENTS consumer and
durable timers.

- ``workflow``: the workflow file format, parser and validation (``WorkflowInvalid``);
- ``registry``: ``WorkflowRegistry`` and loading every stored workflow version;
- ``conditions``/``durations``: the condition language and durations;
- ``machine``: runs an enrollment's steps; ``changes``: what a transaction writes;
- ``profiles``: contacts and recent activity;
- ``batch``: one decide transaction; ``worker``: ``DecideWorker``; ``timers``: ``TimerService``.
"""

from engine.decide.registry import WorkflowRegistry, load_stored_workflows
from engine.decide.timers import TimerService
from engine.decide.worker import DecideWorker
from engine.decide.workflow import (
    Workflow,
    load_workflow_dir,
    load_workflow_file,
    parse_workflow,
    workflow_from_definition,
)

__all__ = [
    "DecideWorker",
    "TimerService",
    "Workflow",
    "WorkflowRegistry",
    "load_stored_workflows",
    "load_workflow_dir",
    "load_workflow_file",
    "parse_workflow",
    "workflow_from_definition",
]
