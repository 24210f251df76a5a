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
    # Lifetime value from the contact's orders (engine/clv.py, migration 0011): kept up to date
    # by decide, one update per order event, and outliving activity retention.
    Column("lifetime_value", Float, nullable=False, server_default="0"),
    Column("orders", Integer, nullable=False, server_default="0"),
    Column("first_order_at", Float),
    Column("last_order_at", Float),
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
    Column("route", String(100)),  # the route its sends take unless the send step names one
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
    # Pacing (engine/pacing, revision 0005): the priority when a frequency cap binds, and the
    # contact's local day and ISO week the send counts on (marketing only, else NULL).
    Column("priority", Integer),
    Column("cap_day", String(10)),
    Column("cap_week", String(8)),
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
# Broadcasts (engine/broadcasts.py): a template sent to a segment's members now or at a time.
# The fan-out walks the members in contact id order from ``cursor``, one page per transaction,
# creating intents with dedup keys of their own: a rerun or a restart never mails anyone twice.
broadcasts = Table(
    "broadcasts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("template_id", String(100), nullable=False),
    Column("segment_id", String(100), nullable=False),
    Column("category", String(20), nullable=False),  # marketing | transactional
    Column("route", String(100), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("send_at", Float, nullable=False),  # when the fan-out may start
    # scheduled -> sending (fan-out running) -> sent (every member has an intent) | cancelled
    Column("state", String(20), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("reason", Text),  # why it was cancelled
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("cursor", String(255)),  # the last contact id fanned out
    Column("members", Integer),  # segment members when the fan-out started
    Column("queued", Integer, nullable=False, default=0),  # intents created
    Column("capped", Integer, nullable=False, default=0),  # dropped by the frequency cap
    Column("skipped", Integer, nullable=False, default=0),  # members without an email address
    Column("claimed_by", String(100)),
    Column("lease_until", Float),
    Index("ix_broadcasts_state_send_at", "state", "send_at"),
)

# A goal reached after a mail of the workflow (docs/experiments.md): attributed to the last
# mail the contact got from that workflow within the goal's attribution window.
conversions = Table(
    "conversions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow_id", String(100), nullable=False),
    Column("step_id", String(100), nullable=False),
    Column("intent_id", String(32), nullable=False),
    Column("contact_id", String(255), nullable=False),
    Column("event_id", String(255), nullable=False),  # the goal event's messageId
    Column("event_name", String(200), nullable=False),
    Column("trigger_name", String(200), nullable=False),  # the enrollment's trigger event
    Column("triggered_at", Float, nullable=False),  # the trigger event was received
    Column("sent_at", Float, nullable=False),  # the mail was accepted by the relay
    Column("converted_at", Float, nullable=False),  # the goal event's time
    Column("revenue", Float),
    UniqueConstraint("workflow_id", "event_id"),
    Index("ix_conversions_workflow_at", "workflow_id", "converted_at"),
)

# Every time a contact reaches a step with an experiment: the arm it was given (a holdout row
# has no intent: it is never mailed), and, once reached, the goal within the window.
experiment_exposures = Table(
    "experiment_exposures",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("experiment_id", String(200), nullable=False),
    Column("workflow_id", String(100), nullable=False),
    Column("step_id", String(100), nullable=False),
    Column("variant", String(100), nullable=False),
    Column("contact_id", String(255), nullable=False),
    Column("enrollment_id", String(32), nullable=False),
    Column("intent_id", String(32)),
    Column("exposed_at", Float, nullable=False),
    Column("converted_at", Float),
    Column("conversion_event_id", String(255)),
    Column("revenue", Float),
    UniqueConstraint("experiment_id", "enrollment_id"),
    Index("ix_experiment_exposures_experiment_variant", "experiment_id", "variant"),
    Index("ix_experiment_exposures_contact", "contact_id", "workflow_id"),
)

# Decisions about experiments: a promoted winner applies to every new assignment.
experiments = Table(
    "experiments",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("workflow_id", String(100), nullable=False),
    Column("state", String(20), nullable=False),  # promoted
    Column("winner", String(100)),
    Column("decided_at", Float, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("detail", JSON),
)

# The product catalog (engine/catalog): one row per product, from the catalog source's
# ``Product Updated`` events and, for products it has not described, from shopper events.
products = Table(
    "products",
    metadata,
    Column("id", String(255), primary_key=True),  # the events' product_id
    Column("name", String(500)),
    Column("price", Float),
    Column("previous_price", Float),  # the price before the last change
    Column("currency", String(3)),
    Column("stock", Integer),  # None: not known
    Column("url", Text),
    Column("image_url", Text),
    Column("source", String(10), nullable=False),  # catalog | event (shopper events only)
    Column("price_changed_at", Float),
    Column("stock_changed_at", Float),
    Column("updated_at", Float, nullable=False),
)

# What each contact did with each product: the cart, recent views, purchases, and views made
# while the product was out of stock (for back-in-stock alerts).
contact_products = Table(
    "contact_products",
    metadata,
    Column("contact_id", String(255), nullable=False),
    Column("product_id", String(255), nullable=False),
    Column("viewed_at", Float),
    Column("carted_at", Float),
    Column("cart_quantity", Integer, nullable=False, default=0),
    Column("bought_at", Float),
    Column("looked_out_at", Float),  # last view or add while the product was out of stock
    PrimaryKeyConstraint("contact_id", "product_id"),
    # Fan-out walks one product's contacts in id order.
    Index("ix_contact_products_product_contact", "product_id", "contact_id"),
)

# Item-to-item recommendations: how often two products were viewed or bought together.
product_pairs = Table(
    "product_pairs",
    metadata,
    Column("product_id", String(255), nullable=False),
    Column("other_id", String(255), nullable=False),
    Column("score", Float, nullable=False),
    PrimaryKeyConstraint("product_id", "other_id"),
)

# A price drop or back-in-stock alert to send to a product's lookers, walked a chunk of
# contacts per transaction (``after`` is the last contact id done).
catalog_fanouts = Table(
    "catalog_fanouts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workflow_id", String(100), nullable=False),
    Column("workflow_version", Integer, nullable=False),
    Column("kind", String(20), nullable=False),  # price_drop | back_in_stock
    Column("product_id", String(255), nullable=False),
    Column("event", JSON, nullable=False),  # the synthetic trigger event's properties
    Column("state", String(10), nullable=False),  # pending | done
    Column("after", String(255)),
    Column("enrolled", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
    Index("ix_catalog_fanouts_state_created", "state", "created_at"),
)

# When each contact last got an alert of a workflow about a product: at most one per window.
catalog_alerts = Table(
    "catalog_alerts",
    metadata,
    Column("workflow_id", String(100), nullable=False),
    Column("product_id", String(255), nullable=False),
    Column("contact_id", String(255), nullable=False),
    Column("sent_at", Float, nullable=False),
    PrimaryKeyConstraint("workflow_id", "product_id", "contact_id"),
)

# Every consent change per purpose, in order: who (contact), when (``at``: when it was given or
# withdrawn; ``recorded_at``: when the engine stored it), how (``method``, ``source``) and from
# which event. ``applied`` is false for a change older than the one already in effect.
consent_history = Table(
    "consent_history",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("contact_id", String(255), nullable=False),
    Column("purpose", String(100), nullable=False),
    Column("granted", Boolean, nullable=False),
    Column("at", Float, nullable=False),
    Column("method", String(100)),  # e.g. checkbox, banner, import, app_settings
    Column("source", String(200)),  # e.g. web, ios, segment, import contacts.csv
    Column("event_id", String(255)),  # the messageId that said so (None for imports)
    Column("applied", Boolean, nullable=False),
    Column("recorded_at", Float, nullable=False),
    Index("ix_consent_history_contact_purpose", "contact_id", "purpose", "at"),
)

# Personalized offer codes (engine/offers): a pool's imported codes (state available, then
# issued) and the generated codes issued so far. One code per (offer, intent): the dedup key
# of the send that carries it, so a decision taken twice gets the same code.
offer_codes = Table(
    "offer_codes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("offer_id", String(100), nullable=False),
    Column("code", String(100), nullable=False, unique=True),
    Column("kind", String(20), nullable=False),  # generated | pool
    Column("state", String(20), nullable=False),  # available | issued
    Column("intent_key", String(64)),  # the send's dedup key, once issued
    Column("contact_id", String(255)),
    Column("value", String(100)),  # what the offer is worth to this contact ("15%")
    Column("attempt", Integer, nullable=False, default=0),  # generated: the HMAC's counter
    Column("imported_at", Float),
    Column("issued_at", Float),
    UniqueConstraint("offer_id", "intent_key"),
    Index("ix_offer_codes_offer_state", "offer_id", "state", "id"),
)
