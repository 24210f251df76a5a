"""Pacing and broadcasts: intents' priority and cap day/week; the broadcasts table.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (nullable): no table rebuild on SQLite, instant on PostgreSQL.
    op.add_column("intents", sa.Column("priority", sa.Integer(), nullable=True))
    op.add_column("intents", sa.Column("cap_day", sa.String(length=10), nullable=True))
    op.add_column("intents", sa.Column("cap_week", sa.String(length=8), nullable=True))
    op.create_table(
        "broadcasts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("template_id", sa.String(length=100), nullable=False),
        sa.Column("segment_id", sa.String(length=100), nullable=False),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("route", sa.String(length=100), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("send_at", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("cursor", sa.String(length=255), nullable=True),
        sa.Column("members", sa.Integer(), nullable=True),
        sa.Column("queued", sa.Integer(), nullable=False),
        sa.Column("capped", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcasts")),
    )
    op.create_index("ix_broadcasts_state_send_at", "broadcasts", ["state", "send_at"])


def downgrade() -> None:
    op.drop_index("ix_broadcasts_state_send_at", table_name="broadcasts")
    op.drop_table("broadcasts")
    with op.batch_alter_table("intents") as batch:
        batch.drop_column("cap_week")
        batch.drop_column("cap_day")
        batch.drop_column("priority")
