"""The product catalog, what contacts did with products, pairs, and catalog alert fan-outs.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=True),
        sa.Column("price", sa.Float(), nullable=True),
        sa.Column("previous_price", sa.Float(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("stock", sa.Integer(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("price_changed_at", sa.Float(), nullable=True),
        sa.Column("stock_changed_at", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products")),
    )
    op.create_table(
        "contact_products",
        sa.Column("contact_id", sa.String(length=255), nullable=False),
        sa.Column("product_id", sa.String(length=255), nullable=False),
        sa.Column("viewed_at", sa.Float(), nullable=True),
        sa.Column("carted_at", sa.Float(), nullable=True),
        sa.Column("cart_quantity", sa.Integer(), nullable=False),
        sa.Column("bought_at", sa.Float(), nullable=True),
        sa.Column("looked_out_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("contact_id", "product_id", name=op.f("pk_contact_products")),
    )
    op.create_index(
        "ix_contact_products_product_contact", "contact_products", ["product_id", "contact_id"]
    )
    op.create_table(
        "product_pairs",
        sa.Column("product_id", sa.String(length=255), nullable=False),
        sa.Column("other_id", sa.String(length=255), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("product_id", "other_id", name=op.f("pk_product_pairs")),
    )
    op.create_table(
        "catalog_fanouts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("workflow_id", sa.String(length=100), nullable=False),
        sa.Column("workflow_version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("product_id", sa.String(length=255), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("after", sa.String(length=255), nullable=True),
        sa.Column("enrolled", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_fanouts")),
    )
    op.create_index("ix_catalog_fanouts_state_created", "catalog_fanouts", ["state", "created_at"])
    op.create_table(
        "catalog_alerts",
        sa.Column("workflow_id", sa.String(length=100), nullable=False),
        sa.Column("product_id", sa.String(length=255), nullable=False),
        sa.Column("contact_id", sa.String(length=255), nullable=False),
        sa.Column("sent_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "workflow_id", "product_id", "contact_id", name=op.f("pk_catalog_alerts")
        ),
    )


def downgrade() -> None:
    op.drop_table("catalog_alerts")
    op.drop_index("ix_catalog_fanouts_state_created", table_name="catalog_fanouts")
    op.drop_table("catalog_fanouts")
    op.drop_table("product_pairs")
    op.drop_index("ix_contact_products_product_contact", table_name="contact_products")
    op.drop_table("contact_products")
    op.drop_table("products")
