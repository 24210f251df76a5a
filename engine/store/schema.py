"""Tables of the store (SQLAlchemy Core). Times are UTC epoch seconds (float).

Every row that belongs to one contact carries ``contact_id`` so the state can be partitioned by
contact when decide nodes scale out.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

# BIGINT on PostgreSQL, INTEGER (the rowid alias, so autoincrement works) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

contacts = Table(
    "contacts",
    metadata,
    Column("id", String(255), primary_key=True),  # userId, or "anon:<anonymousId>"
    Column("email", String(320), index=True),
    Column("traits", JSON, nullable=False, default=dict),
    Column("timezone", String(64)),
    # Consent per purpose: {"email_marketing": {"granted": bool, "at": ts, "source": str}, ...}
    Column("consent", JSON, nullable=False, default=dict),
    Column("unsubscribed_at", Float),  # marketing unsubscribe; transactional mail still goes
    Column("first_seen_at", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Recent activity per contact: the events that segments, triggers and waits look back over.
activity = Table(
    "activity",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("contact_id", String(255), nullable=False),
    Column("name", String(200), nullable=False),
    Column("properties", JSON, nullable=False, default=dict),
    Column("message_id", String(255), nullable=False),
    Column("ts", Float, nullable=False),
    Index("ix_activity_contact_name_ts", "contact_id", "name", "ts"),
    Index("ix_activity_ts", "ts"),
)

# Every messageId the decide stage has committed; redeliveries and replays are skipped.
processed_events = Table(
    "processed_events",
    metadata,
    Column("message_id", String(255), primary_key=True),
    Column("stream_seq", BigInteger),
    Column("processed_at", Float, nullable=False, index=True),  # retention deletes by age
)

workflows = Table(
    "workflows",
    metadata,
    Column("id", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("name", String(200), nullable=False),
    Column("category", String(20), nullable=False),  # marketing | transactional
    Column("definition", JSON, nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("source", String(500)),  # file it was loaded from, or "console"
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("id", "version"),
)

email_templates = Table(
    "email_templates",
    metadata,
    Column("id", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("name", String(200), nullable=False),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("format", String(10), nullable=False),  # html | mjml
    Column("text", Text),
    Column("from_address", String(400)),
    Column("preheader", Text),
    Column("source", String(500)),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("id", "version"),
)

enrollments = Table(
    "enrollments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow_id", String(100), nullable=False),
    Column("workflow_version", Integer, nullable=False),
    Column("contact_id", String(255), nullable=False),
    Column("trigger_event_id", String(255), nullable=False),
    Column("trigger", JSON, nullable=False),  # {"name": ..., "properties": {...}, "ts": ...}
    Column("step_id", String(100)),  # the step it is at (waiting on), None when finished
    # active | waiting | completed | exited | expired
    Column("state", String(20), nullable=False),
    Column("waiting_for", JSON),  # a wait-until-event step: {"event":..., "where":...}
    Column("exit_reason", String(200)),
    Column("entered_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("workflow_id", "contact_id", "trigger_event_id"),
    Index("ix_enrollments_contact_state", "contact_id", "state"),
    Index("ix_enrollments_workflow_state", "workflow_id", "state"),
)

# Every decision taken for an enrollment, in order: the "why" trace.
enrollment_log = Table(
    "enrollment_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("enrollment_id", String(32), nullable=False, index=True),
    Column("ts", Float, nullable=False),
    Column("step_id", String(100)),
    Column("kind", String(40), nullable=False),  # entered, waited, branch, sent, exited, ...
    Column("detail", Text),
)

timers = Table(
    "timers",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("enrollment_id", String(32), nullable=False, index=True),
    Column("contact_id", String(255), nullable=False),
    Column("step_id", String(100), nullable=False),
    Column("kind", String(20), nullable=False),  # delay | wait_timeout
    Column("fire_at", Float, nullable=False),
    Column("state", String(20), nullable=False),  # pending | fired | cancelled
    Column("claimed_by", String(100)),
    Column("lease_until", Float),
    Index("ix_timers_state_fire_at", "state", "fire_at"),
)

# The ledger: one row per send intent, ending in exactly one outcome.
intents = Table(
    "intents",
    metadata,
    Column("id", String(32), primary_key=True),  # also the Message-ID's local part
    Column("dedup_key", String(64), nullable=False, unique=True),
    Column("workflow_id", String(100), nullable=False),
    Column("workflow_version", Integer, nullable=False),
    Column("step_id", String(100), nullable=False),
    Column("enrollment_id", String(32)),
    Column("contact_id", String(255), nullable=False),
    Column("event_id", String(255), nullable=False),  # the trigger event's messageId
    Column("template_id", String(100), nullable=False),
    Column("route", String(100), nullable=False),
    Column("category", String(20), nullable=False),  # marketing | transactional
    Column("to_addr", String(320), nullable=False),
    Column("domain", String(255), nullable=False),  # recipient domain, for per-domain limits
    Column("context", JSON, nullable=False),  # the trigger event and step data for rendering
    # queued -> claimed -> sending (final dot about to go) -> one outcome:
    # sent | deferred (retry at next_attempt_at) | bounced | suppressed | expired | failed
    # | uncertain
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("claimed_by", String(100)),
    Column("lease_until", Float),
    Column("reply", Text),  # the relay's last reply, "250 2.0.0 Ok: queued as ..."
    Column("message_id", String(400)),
    # Stage timestamps: event received, decided, rendered, final dot, accepted by the relay.
    Column("received_at", Float, nullable=False),
    Column("decided_at", Float, nullable=False),
    Column("rendered_at", Float),
    Column("dot_at", Float),
    Column("accepted_at", Float),
    Column("finished_at", Float),
    Index("ix_intents_status_next", "status", "next_attempt_at"),
    Index("ix_intents_contact", "contact_id"),
    Index("ix_intents_workflow_status", "workflow_id", "status"),
    # Partial: only sent rows, so the queue list's "sent in the last minute" reads a few index
    # entries instead of the whole history, and only the final update of a send pays for it.
    Index(
        "ix_intents_sent_finished",
        "finished_at",
        sqlite_where=text("status = 'sent'"),
        postgresql_where=text("status = 'sent'"),
    ),
)

# Operator controls on queues (see engine/deliver/queues.py): one row per scope. A pending
# intent whose workflow, route or recipient domain is paused (or anything, while "all" is) is
# not claimed; a draining route sends only intents decided up to ``since``.
queue_controls = Table(
    "queue_controls",
    metadata,
    Column("kind", String(20), nullable=False),  # all | workflow | route | domain
    Column("value", String(255), nullable=False),  # the workflow id, route name or domain; "*"
    Column("state", String(20), nullable=False),  # paused | draining
    Column("reason", Text, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("since", Float, nullable=False),
    PrimaryKeyConstraint("kind", "value"),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("address", String(320), primary_key=True),  # lower-cased
    Column("scope", String(20), nullable=False),  # marketing | all
    Column("reason", String(40), nullable=False),  # unsubscribe | hard_bounce | complaint | manual
    Column("source", String(200)),
    Column("created_at", Float, nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("subject", String(255), nullable=False),
    Column("stream_seq", BigInteger),
    Column("payload", LargeBinary, nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(20), nullable=False),  # open | retried | discarded
    Column("created_at", Float, nullable=False),
    Index("ix_dead_letters_status", "status", "created_at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False, index=True),
    Column("actor", String(200), nullable=False),  # operator name, or "engine" for automatic
    Column("action", String(100), nullable=False),
    Column("target", String(400)),
    Column("count", Integer),
    Column("detail", JSON),
)

# Segment definitions (engine/segments): every version kept; ``definition`` is the canonical text.
segments = Table(
    "segments",
    metadata,
    Column("id", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("name", String(200), nullable=False),
    Column("definition", Text, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("id", "version"),
)

# Who is in which segment now (maintained by the decide stage, re-checks and builds).
segment_members = Table(
    "segment_members",
    metadata,
    Column("segment_id", String(100), nullable=False),
    Column("contact_id", String(255), nullable=False),
    Column("entered_at", Float, nullable=False),
    PrimaryKeyConstraint("segment_id", "contact_id"),
    Index("ix_segment_members_contact", "contact_id"),
)

# Every enter and exit, in order: membership over time and the "when" of each change.
segment_history = Table(
    "segment_history",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("segment_id", String(100), nullable=False),
    Column("contact_id", String(255), nullable=False),
    Column("kind", String(10), nullable=False),  # entered | exited
    Column("at", Float, nullable=False),
    Index("ix_segment_history_segment_at", "segment_id", "at"),
)

# When time alone may change a contact's membership (a window edge, a date crossing "N ago"):
# one pending re-check per segment and contact, fired by the timer service.
segment_rechecks = Table(
    "segment_rechecks",
    metadata,
    Column("segment_id", String(100), nullable=False),
    Column("contact_id", String(255), nullable=False),
    Column("fire_at", Float, nullable=False),
    PrimaryKeyConstraint("segment_id", "contact_id"),
    Index("ix_segment_rechecks_fire_at", "fire_at"),
)

# Users of the control API (engine/users.py, docs/access.md). ``auth`` is "password" (a bcrypt
# hash, never the password) or "nkey" (the public key; the seed stays with its owner).
users = Table(
    "users",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(20), nullable=False),
    Column("auth", String(20), nullable=False),
    Column("password_hash", String(100)),
    Column("nkey", String(60), unique=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
