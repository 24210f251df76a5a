"""Templates may name the route their sends take (``route`` in template.toml).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: existing templates name no route (their sends take the step's or "default").
    with op.batch_alter_table("email_templates") as batch:
        batch.add_column(sa.Column("route", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("email_templates") as batch:
        batch.drop_column("route")
