"""Users of the control API and their roles (docs/access.md); no clear-text secrets.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("auth", sa.String(length=20), nullable=False),
        sa.Column("password_hash", sa.String(length=100), nullable=True),
        sa.Column("nkey", sa.String(length=60), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_users")),
        sa.UniqueConstraint("nkey", name=op.f("uq_users_nkey")),
    )


def downgrade() -> None:
    op.drop_table("users")
