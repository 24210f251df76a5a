"""Consent history per purpose, and personalized offer codes (issued and pooled).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "consent_history",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("contact_id", sa.String(length=255), nullable=False),
        sa.Column("purpose", sa.String(length=100), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("method", sa.String(length=100)),
        sa.Column("source", sa.String(length=200)),
        sa.Column("event_id", sa.String(length=255)),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("recorded_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_history")),
    )
    op.create_index(
        "ix_consent_history_contact_purpose", "consent_history", ["contact_id", "purpose", "at"]
    )
    op.create_table(
        "offer_codes",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("offer_id", sa.String(length=100), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("intent_key", sa.String(length=64)),
        sa.Column("contact_id", sa.String(length=255)),
        sa.Column("value", sa.String(length=100)),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("imported_at", sa.Float()),
        sa.Column("issued_at", sa.Float()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offer_codes")),
        sa.UniqueConstraint("code", name=op.f("uq_offer_codes_code")),
        sa.UniqueConstraint(
            "offer_id", "intent_key", name=op.f("uq_offer_codes_offer_id_intent_key")
        ),
    )
    op.create_index("ix_offer_codes_offer_state", "offer_codes", ["offer_id", "state", "id"])


def downgrade() -> None:
    op.drop_index("ix_offer_codes_offer_state", table_name="offer_codes")
    op.drop_table("offer_codes")
    op.drop_index("ix_consent_history_contact_purpose", table_name="consent_history")
    op.drop_table("consent_history")
