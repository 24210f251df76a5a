"""Workflow files: the starters load, parameters apply, and every mistake is a clear error."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from decide_support import STARTERS, to_toml

from engine.decide.durations import format_duration, parse_duration
from engine.decide.workflow import (
    EXIT,
    BranchStep,
    SendStep,
    WaitStep,
    WaitUntilStep,
    load_workflow_dir,
    load_workflow_file,
    parse_workflow,
    workflow_from_definition,
)
from engine.errors import WorkflowInvalid

BASE: dict[str, Any] = {
    "id": "wf",
    "name": "Test",
    "category": "marketing",
    "version": 1,
    "trigger": {"event": "Signed Up"},
    "steps": [
        {"id": "first", "type": "send", "template": "t1"},
        {"id": "pause", "type": "wait", "duration": "1h"},
        {"id": "second", "type": "send", "template": "t2"},
    ],
}


def variant(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def test_every_starter_workflow_loads() -> None:
    loaded = {wf.id: wf for wf in load_workflow_dir(STARTERS)}
    assert set(loaded) == {
        "welcome-series",
        "order-confirmation",
        "shipping-update",
        "feedback-request",
        "abandoned-cart",
        "browse-abandonment",
        "re-engagement",
        "price-drop",
        "back-in-stock",
        "store-nearby",
    }
    assert loaded["store-nearby"].requires_consent == "location"
    assert loaded["store-nearby"].offers["nearby"].kind == "generated"
    assert loaded["order-confirmation"].category == "transactional"
    assert loaded["shipping-update"].category == "transactional"
    assert loaded["welcome-series"].reentry.mode == "once"
    cart = loaded["abandoned-cart"]
    wait = cart.step("wait-for-order")
    assert isinstance(wait, WaitUntilStep)
    assert wait.timeout == 1800
    assert (wait.on_event, wait.on_timeout) == (EXIT, "send-reminder")
    assert cart.goal is not None and cart.goal.events == ("Order Completed",)
    assert loaded["browse-abandonment"].activity_windows() == {"Product Viewed": 3600}
    assert loaded["re-engagement"].trigger.events == ("Page Viewed", "Product Viewed")


def test_settings_override_a_parameter() -> None:
    loaded = load_workflow_dir(STARTERS, overrides={"abandoned-cart": {"delay": "10m"}})
    cart = next(wf for wf in loaded if wf.id == "abandoned-cart")
    wait = cart.step("wait-for-order")
    assert isinstance(wait, WaitUntilStep) and wait.timeout == 600
    # The stored definition stays as written; parameters apply when loading.
    assert cart.definition["params"] == {"delay": "30m"}


def test_an_override_of_an_undeclared_parameter_is_refused() -> None:
    with pytest.raises(
        WorkflowInvalid, match=r"workflows\.abandoned-cart\.dealy: no such parameter"
    ):
        load_workflow_dir(STARTERS, overrides={"abandoned-cart": {"dealy": "10m"}})
    with pytest.raises(WorkflowInvalid, match="no workflow named nope"):
        load_workflow_dir(STARTERS, overrides={"nope": {"delay": "1m"}})


def test_steps_default_to_the_next_and_the_last_completes() -> None:
    wf = parse_workflow(BASE, source="t")
    first, pause, second = wf.steps
    assert isinstance(first, SendStep) and first.next == "pause" and first.route is None
    assert isinstance(pause, WaitStep) and pause.duration == 3600 and pause.next == "second"
    assert isinstance(second, SendStep) and second.next is None


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"id": "a", "type": "email", "template": "x"}], "step 'a': unknown step type 'email'"),
        (
            [{"id": "a", "type": "send", "template": "x", "next": "b"}],
            "names step 'b', which does not exist",
        ),
        (
            [
                {"id": "a", "type": "send", "template": "x", "next": "exit"},
                {"id": "b", "type": "send", "template": "y"},
            ],
            "step 'b': unreachable",
        ),
        ([{"id": "a", "type": "wait_until", "event": "E"}], "step 'a': wait_until without timeout"),
        ([{"id": "a", "type": "send"}], "step 'a': missing template name"),
        ([{"id": "a", "type": "send", "template": " "}], "step 'a': missing template name"),
        (
            [{"id": "a", "type": "wait", "duration": "3 days"}],
            "step 'a'.duration: bad duration '3 days'",
        ),
        (
            [{"id": "a", "type": "wait_until", "event": "E", "timeout": "soon"}],
            "step 'a'.timeout: bad duration 'soon'",
        ),
        (
            [{"id": "a", "type": "send", "template": "x", "subject": "hi"}],
            "step 'a': unknown key\\(s\\) subject",
        ),
        (
            [
                {"id": "a", "type": "send", "template": "x"},
                {"id": "a", "type": "send", "template": "y"},
            ],
            "step 'a': the id is used twice",
        ),
        (
            [
                {"id": "a", "type": "send", "template": "x"},
                {
                    "id": "b",
                    "type": "branch",
                    "condition": {"trait": "plan", "op": "eq", "value": "pro"},
                    "then": "a",
                },
            ],
            "steps loop without a wait: a -> b -> a",
        ),
        (
            [
                {
                    "id": "a",
                    "type": "branch",
                    "condition": {"trait": "plan", "op": "like", "value": 1},
                    "then": "exit",
                }
            ],
            "step 'a'.condition: op must be one of",
        ),
        ([], "at least one"),
    ],
)
def test_mistakes_name_the_file_the_step_and_the_problem(
    tmp_path: Path, steps: list[dict[str, Any]], message: str
) -> None:
    file = tmp_path / "broken.toml"
    file.write_text(to_toml(variant(steps=steps)), encoding="utf-8")
    with pytest.raises(WorkflowInvalid, match=message) as info:
        load_workflow_file(file)
    assert str(info.value).startswith(f"{file}: ")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"category": "promo"}, "category must be marketing or transactional"),
        ({"version": 0}, "version must be a whole number"),
        ({"reentry": "sometimes"}, "reentry must be"),
        ({"reentry": "after forever"}, "reentry: bad duration"),
        ({"expires_after": "1 fortnight"}, "expires_after: bad duration"),
        ({"trigger": {}}, r"\[trigger\] event must be"),
        ({"trigger": {"event": "X", "where": [{"property": "p"}]}}, r"op must be one of"),
        ({"id": "Bad Id"}, "id must be lower-case"),
        ({"colour": "red"}, r"unknown key\(s\) colour"),
        ({"steps": [{"id": "a", "type": "wait", "duration": "$gap"}]}, r"unknown parameter \$gap"),
    ],
)
def test_workflow_level_mistakes(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(WorkflowInvalid, match=message):
        parse_workflow(variant(**changes), source="wf.toml")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    file = tmp_path / "bad.toml"
    file.write_text('id = "x"\nname = ', encoding="utf-8")
    with pytest.raises(WorkflowInvalid, match=f"{file}: not valid TOML"):
        load_workflow_file(file)


def test_duplicate_ids_in_a_directory_are_refused(tmp_path: Path) -> None:
    text = (STARTERS / "order-confirmation.toml").read_text(encoding="utf-8")
    (tmp_path / "a.toml").write_text(text, encoding="utf-8")
    (tmp_path / "b.toml").write_text(text, encoding="utf-8")
    with pytest.raises(WorkflowInvalid, match="is already used by"):
        load_workflow_dir(tmp_path)


def test_branch_and_wait_until_parse_their_parts() -> None:
    wf = parse_workflow(
        variant(
            params={"big": 100},
            steps=[
                {
                    "id": "check",
                    "type": "branch",
                    "condition": {"property": "total", "op": "gte", "value": "$big"},
                    "then": "vip",
                    "else": "wait",
                },
                {
                    "id": "wait",
                    "type": "wait_until",
                    "event": "Order Completed",
                    "match": ["product_id"],
                    "where": [{"property": "total", "op": "gt", "value": 0}],
                    "timeout": "2h",
                    "on_event": "exit",
                },
                {"id": "vip", "type": "send", "template": "vip"},
            ],
        ),
        source="t",
    )
    check = wf.step("check")
    assert isinstance(check, BranchStep)
    assert check.condition.describe() == "property total gte 100"
    wait = wf.step("wait")
    assert isinstance(wait, WaitUntilStep)
    assert wait.match == ("product_id",) and wait.on_timeout == "vip" and len(wait.where) == 1


def test_durations() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("30m") == 1800
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1.5h") == 5400
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("2w") == 14 * 86400
    for bad in ("", "5", "m", "3 days", "1y", 30, None):
        with pytest.raises(ValueError, match="bad duration"):
            parse_duration(bad)
    assert format_duration(1800) == "30m"
    assert format_duration(93600) == "1d2h"


def test_a_stored_definition_loads_back_with_its_row_version(tmp_path: Path) -> None:
    cart = load_workflow_file(STARTERS / "abandoned-cart.toml")
    stored = cart.to_definition()
    assert "version" not in stored and "enabled" not in stored  # columns of the table
    back = workflow_from_definition(stored, version=4, enabled=False, params={"delay": "5m"})
    assert (back.id, back.version, back.enabled) == ("abandoned-cart", 4, False)
    wait = back.step("wait-for-order")
    assert isinstance(wait, WaitUntilStep) and wait.timeout == 300
    exported = tmp_path / "abandoned-cart.v4.json"
    exported.write_bytes(orjson.dumps({**stored, "version": 4, "enabled": True}))
    assert load_workflow_file(exported).steps == cart.steps
    exported.write_text("{", encoding="utf-8")
    with pytest.raises(WorkflowInvalid, match="not valid JSON"):
        load_workflow_file(exported)
