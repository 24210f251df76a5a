"""Segments: versioned definitions, live membership, its history, and time re-checks.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", "version", name=op.f("pk_segments")),
    )
    op.create_table(
        "segment_members",
        sa.Column("segment_id", sa.String(length=100), nullable=False),
        sa.Column("contact_id", sa.String(length=255), nullable=False),
        sa.Column("entered_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("segment_id", "contact_id", name=op.f("pk_segment_members")),
    )
    op.create_index("ix_segment_members_contact", "segment_members", ["contact_id"])
    op.create_table(
        "segment_history",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("segment_id", sa.String(length=100), nullable=False),
        sa.Column("contact_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_history")),
    )
    op.create_index("ix_segment_history_segment_at", "segment_history", ["segment_id", "at"])
    op.create_table(
        "segment_rechecks",
        sa.Column("segment_id", sa.String(length=100), nullable=False),
        sa.Column("contact_id", sa.String(length=255), nullable=False),
        sa.Column("fire_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("segment_id", "contact_id", name=op.f("pk_segment_rechecks")),
    )
    op.create_index("ix_segment_rechecks_fire_at", "segment_rechecks", ["fire_at"])


def downgrade() -> None:
    op.drop_index("ix_segment_rechecks_fire_at", table_name="segment_rechecks")
    op.drop_table("segment_rechecks")
    op.drop_index("ix_segment_history_segment_at", table_name="segment_history")
    op.drop_table("segment_history")
    op.drop_index("ix_segment_members_contact", table_name="segment_members")
    op.drop_table("segment_members")
    op.drop_table("segments")
