"""Customer lifetime value on contacts: net order value, order count, first and last order.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs with constant defaults: no table rebuild on SQLite, no rewrite on
    # PostgreSQL 11+. `campaign-engine clv rebuild` fills them from the stored activity.
    op.add_column(
        "contacts", sa.Column("lifetime_value", sa.Float(), nullable=False, server_default="0")
    )
    op.add_column("contacts", sa.Column("orders", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("contacts", sa.Column("first_order_at", sa.Float(), nullable=True))
    op.add_column("contacts", sa.Column("last_order_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        for name in ("last_order_at", "first_order_at", "orders", "lifetime_value"):
            batch.drop_column(name)
