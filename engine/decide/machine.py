"""The step machine: runs an enrollment's steps until it waits, exits or completes.

Pure decisions over in-memory state; everything it decides goes into ``Changes`` (intents,
timers, enrollment updates and the log lines that explain each decision). The decide worker
drives it from events, the timer service from due timers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.decide.changes import Changes, Enrollment
from engine.decide.conditions import ActivityLookup, Facts, all_hold, lookup
from engine.decide.durations import format_duration
from engine.decide.profiles import Contact
from engine.decide.workflow import (
    DEFAULT_ROUTE,
    EXIT,
    BranchStep,
    ExitStep,
    SendStep,
    Target,
    WaitStep,
    WaitUntilStep,
    Workflow,
)
from engine.events import Event
from engine.experiments.assign import arm_for
from engine.experiments.model import HOLDOUT, Experiment
from engine.ids import dedup_key, new_id

MAX_STEPS_PER_RUN = 100  # validation forbids loops without a wait; this is a second guard


@dataclass(frozen=True, slots=True)
class Moment:
    """When a decision is taken and what it is measured against."""

    now: float  # the engine clock at the decision
    at: float  # where activity windows end: the driving event's time, or ``now`` for timers
    due_at: float  # when sends decided now became due (the intents' ``received_at``)

    @classmethod
    def of_event(cls, event: Event, now: float) -> Moment:
        return cls(now=now, at=event.timestamp, due_at=event.received_at)


@dataclass(frozen=True, slots=True)
class Subject:
    """The contact a decision is about, with the activity conditions may count."""

    contact: Contact
    activity: ActivityLookup


class StepMachine:
    """Advances enrollments, recording every effect and reason in ``changes``."""

    def __init__(
        self,
        changes: Changes,
        winners: Mapping[str, str] | None = None,
        *,
        template_routes: Mapping[str, str] | None = None,
    ) -> None:
        """``winners``: promoted experiment winners (experiment id -> variant);
        ``template_routes``: template id -> the route it names (for send steps naming none)."""
        self.changes = changes
        self.winners = winners or {}
        self.template_routes: Mapping[str, str] = template_routes or {}

    def trigger_holds(
        self, wf: Workflow, event: Event, who: Subject, previous_seen: float | None
    ) -> bool:
        """Whether ``event`` starts ``wf`` for this contact (name and ``where`` conditions)."""
        if event.activity_name not in wf.trigger.events:
            return False
        facts = Facts(
            who.contact.traits, event.properties, event.timestamp, previous_seen, who.activity
        )
        return all_hold(wf.trigger.where, facts)

    def enter(
        self, wf: Workflow, event: Event, who: Subject, previous_seen: float | None, at: Moment
    ) -> Enrollment:
        """Start a new enrollment on ``event`` and run it until it waits or ends."""
        enrollment = Enrollment(
            id=new_id(),
            workflow_id=wf.id,
            workflow_version=wf.version,
            contact_id=who.contact.id,
            trigger_event_id=event.message_id,
            trigger={
                "name": event.activity_name,
                "properties": event.properties,
                "ts": event.timestamp,
                "received_at": event.received_at,
                "previous_seen": previous_seen,
            },
            step_id=None,
            state="active",
            waiting_for=None,
            exit_reason=None,
            entered_at=at.now,
            updated_at=at.now,
        )
        self.changes.touch(enrollment, at.now)
        detail = f"{event.activity_name} (messageId {event.message_id}) matched the trigger"
        self.changes.note(enrollment, at.now, "entered", f"{detail} of {wf.id} v{wf.version}")
        self._run(wf, enrollment, wf.first_step, who, at)
        return enrollment

    def goal_reached(
        self, wf: Workflow, event: Event, who: Subject, previous_seen: float | None
    ) -> bool:
        """Whether ``event`` is this workflow's goal."""
        if wf.goal is None or event.activity_name not in wf.goal.events:
            return False
        facts = Facts(
            who.contact.traits, event.properties, event.timestamp, previous_seen, who.activity
        )
        return all_hold(wf.goal.where, facts)

    def awaits(self, wf: Workflow, enrollment: Enrollment, event: Event, who: Subject) -> bool:
        """Whether a waiting enrollment's ``wait_until`` is satisfied by ``event``."""
        waiting = enrollment.waiting_for
        if enrollment.state != "waiting" or not waiting or enrollment.step_id is None:
            return False
        if waiting.get("event") != event.activity_name:
            return False
        step = wf.by_id.get(enrollment.step_id)
        if not isinstance(step, WaitUntilStep):
            return False
        for name, value in (waiting.get("match") or {}).items():
            if lookup(event.properties, name) != value:
                return False
        previous = enrollment.trigger.get("previous_seen")
        facts = Facts(who.contact.traits, event.properties, event.timestamp, previous, who.activity)
        return all_hold(step.where, facts)

    def resume(
        self, wf: Workflow, enrollment: Enrollment, event: Event, who: Subject, at: Moment
    ) -> None:
        """The awaited event arrived: cancel the timeout and take the ``on_event`` branch."""
        step = wf.step(enrollment.step_id or "")
        assert isinstance(step, WaitUntilStep)
        self.changes.cancel_timers(enrollment)
        enrollment.waiting_for = None
        self.changes.touch(enrollment, at.now)
        detail = f"{event.activity_name} (messageId {event.message_id}) arrived"
        self.changes.note(enrollment, at.now, "resumed", detail)
        self._run(wf, enrollment, step.on_event, who, at)

    def fire(
        self, wf: Workflow, enrollment: Enrollment, step_id: str, who: Subject, at: Moment
    ) -> bool:
        """A timer of ``step_id`` is due; False when the enrollment moved on meanwhile."""
        if enrollment.state != "waiting" or enrollment.step_id != step_id:
            return False
        step = wf.by_id.get(step_id)
        self.changes.touch(enrollment, at.now)
        if isinstance(step, WaitStep):
            self.changes.note(
                enrollment, at.now, "waited", f"{format_duration(step.duration)} passed"
            )
            self._run(wf, enrollment, step.next, who, at)
        elif isinstance(step, WaitUntilStep):
            enrollment.waiting_for = None
            detail = f"no {step.event} within {format_duration(step.timeout)}"
            self.changes.note(enrollment, at.now, "timeout", detail)
            self._run(wf, enrollment, step.on_timeout, who, at)
        else:
            self.exit(enrollment, f"step {step_id!r} no longer waits in v{wf.version}", at.now)
        return True

    def exit(self, enrollment: Enrollment, reason: str, now: float) -> None:
        """End the enrollment as exited (goal reached, an exit step, ...)."""
        enrollment.state = "exited"
        enrollment.exit_reason = reason[:200]
        enrollment.waiting_for = None
        self.changes.cancel_timers(enrollment)
        self.changes.touch(enrollment, now)
        self.changes.note(enrollment, now, "exited", reason)

    def _run(
        self, wf: Workflow, enrollment: Enrollment, target: Target, who: Subject, at: Moment
    ) -> None:
        for _ in range(MAX_STEPS_PER_RUN):
            if target is None:
                enrollment.state = "completed"
                enrollment.step_id = None
                self.changes.note(enrollment, at.now, "completed", "ran past the last step")
                return
            if target == EXIT:
                self.exit(enrollment, f"exit after step {enrollment.step_id!r}", at.now)
                return
            step = wf.step(target)
            enrollment.step_id = step.id
            enrollment.state = "active"
            if isinstance(step, SendStep):
                if not self._send(wf, step, enrollment, who.contact, at):
                    return
                target = step.next
            elif isinstance(step, WaitStep):
                duration = step.duration
                if step.experiment is not None:
                    arm = self._arm(step.experiment, enrollment, at.now, None)
                    if arm is None:
                        return
                    chosen = step.experiment.variant(arm)
                    duration = chosen.duration if chosen and chosen.duration else duration
                fire_at = at.now + duration
                self._wait(enrollment, step.id, "delay", fire_at, None)
                detail = f"waiting {format_duration(duration)} (until {fire_at:.0f})"
                self.changes.note(enrollment, at.now, "waiting", detail)
                return
            elif isinstance(step, WaitUntilStep):
                fire_at = at.now + step.timeout
                match = {n: lookup(enrollment.trigger["properties"], n) for n in step.match}
                waiting = {"event": step.event, "match": match, "until": fire_at}
                self._wait(enrollment, step.id, "wait_timeout", fire_at, waiting)
                same = f" with {match}" if match else ""
                detail = f"waiting for {step.event}{same} for {format_duration(step.timeout)}"
                self.changes.note(enrollment, at.now, "waiting", detail)
                return
            elif isinstance(step, BranchStep):
                trigger = enrollment.trigger
                facts = Facts(
                    who.contact.traits,
                    trigger["properties"],
                    at.at,
                    trigger.get("previous_seen"),
                    who.activity,
                )
                result = step.condition.holds(facts)
                target = step.then if result else step.otherwise
                detail = (
                    f"{step.condition.describe()} is {str(result).lower()} -> {target or 'end'}"
                )
                self.changes.note(enrollment, at.now, "branch", detail)
            else:
                assert isinstance(step, ExitStep)
                self.exit(enrollment, step.reason, at.now)
                return
        self.exit(enrollment, f"more than {MAX_STEPS_PER_RUN} steps without waiting", at.now)

    def _wait(
        self,
        enrollment: Enrollment,
        step_id: str,
        kind: str,
        fire_at: float,
        waiting: dict[str, Any] | None,
    ) -> None:
        enrollment.state = "waiting"
        enrollment.waiting_for = waiting
        self.changes.timers.append(
            {
                "id": new_id(),
                "enrollment_id": enrollment.id,
                "contact_id": enrollment.contact_id,
                "step_id": step_id,
                "kind": kind,
                "fire_at": fire_at,
                "state": "pending",
                "claimed_by": None,
                "lease_until": None,
            }
        )

    def _arm(
        self, experiment: Experiment, enrollment: Enrollment, now: float, intent_id: str | None
    ) -> str | None:
        """Give the contact its arm and record the exposure; None for the holdout, whose
        enrollment ends here (it gets nothing, and nothing later in this workflow)."""
        arm = arm_for(experiment, enrollment.contact_id, self.winners)
        self.changes.exposures.append(
            {
                "id": new_id(),
                "experiment_id": experiment.id,
                "workflow_id": experiment.workflow_id,
                "step_id": experiment.step_id,
                "variant": arm,
                "contact_id": enrollment.contact_id,
                "enrollment_id": enrollment.id,
                "intent_id": None if arm == HOLDOUT else intent_id,
                "exposed_at": now,
            }
        )
        self.changes.note(enrollment, now, "experiment", f"{experiment.id}: arm {arm}")
        if arm == HOLDOUT:
            self.exit(enrollment, f"holdout of experiment {experiment.id}: gets nothing", now)
            return None
        return arm

    def _send(
        self, wf: Workflow, step: SendStep, enrollment: Enrollment, contact: Contact, at: Moment
    ) -> bool:
        """Queue the step's mail; False when the enrollment ended here (a holdout)."""
        intent_id = new_id()
        template, route, overrides = step.template, step.route, {}
        if step.experiment is not None:
            arm = self._arm(
                step.experiment, enrollment, at.now, intent_id if contact.email else None
            )
            if arm is None:
                return False
            variant = step.experiment.variant(arm)
            if variant is not None:
                template = variant.template or template
                route = variant.route or route
                overrides = {"variant": arm, **variant.overrides()}
        if not contact.email:
            detail = f"no email address: {template} not sent"
            self.changes.note(enrollment, at.now, "no_email", detail)
            return True
        offer = None
        if step.offer is not None:
            offer = wf.offers.get(step.offer)
            if offer is None:
                detail = (
                    f"offer {step.offer!r} is not defined (no [offers.{step.offer}] in the "
                    f"workflow or the settings): {template} not sent"
                )
                self.changes.note(enrollment, at.now, "offer_missing", detail)
                return True
            if offer.kind == "generated" and len(offer.secret) < 16:
                detail = f"offer {offer.id!r} has no signing key here: {template} not sent"
                self.changes.note(enrollment, at.now, "offer_missing", detail)
                return True
        trigger = enrollment.trigger
        context: dict[str, Any] = {
            "event": {
                "name": trigger["name"],
                "properties": trigger["properties"],
                "ts": trigger["ts"],
            }
        }
        if overrides:
            context["experiment"] = {"id": step.experiment.id, **overrides}  # type: ignore[union-attr]
        self.changes.intents.append(
            {
                "id": intent_id,
                "dedup_key": dedup_key(
                    wf.id,
                    step.id,
                    enrollment.contact_id,
                    enrollment.trigger_event_id,
                    trigger["ts"],
                ),
                "workflow_id": wf.id,
                "workflow_version": wf.version,
                "step_id": step.id,
                "enrollment_id": enrollment.id,
                "contact_id": enrollment.contact_id,
                "event_id": enrollment.trigger_event_id,
                "template_id": template,
                # The step's (or its arm's) route, else the chosen template's, else default.
                "route": route or self.template_routes.get(template) or DEFAULT_ROUTE,
                "category": wf.category,
                "to_addr": contact.email,
                "domain": contact.email.rpartition("@")[2].lower(),
                "context": context,
                "status": "queued",
                "attempts": 0,
                "next_attempt_at": at.now,
                "expires_at": None if wf.expires_after is None else at.due_at + wf.expires_after,
                "received_at": at.due_at,
                "decided_at": at.now,
                "reply": None,
                "finished_at": None,
            }
        )
        intent = self.changes.intents[-1]
        deferred = self.changes.pacing.plan(
            intent, priority=wf.priority, quiet_hours=wf.quiet_hours, timezone=contact.timezone
        )
        if wf.requires_consent is not None:
            # Re-checked when the intent is claimed: consent withdrawn meanwhile suppresses it.
            intent["context"]["requires_consent"] = wf.requires_consent
        if offer is not None:
            # The code is issued when this intent is written, in the same transaction.
            self.changes.offer_requests.append((intent, offer))
        detail = f"queued {template} to {contact.email} (intent {intent_id})"
        self.changes.note(enrollment, at.now, "intent", detail)
        if deferred is not None:
            self.changes.note(enrollment, at.now, "quiet_hours", f"intent {intent_id}: {deferred}")
        return True
