"""Conversions, experiment exposures and experiment decisions (docs/experiments.md).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("workflow_id", sa.String(length=100), nullable=False),
        sa.Column("step_id", sa.String(length=100), nullable=False),
        sa.Column("intent_id", sa.String(length=32), nullable=False),
        sa.Column("contact_id", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("event_name", sa.String(length=200), nullable=False),
        sa.Column("trigger_name", sa.String(length=200), nullable=False),
        sa.Column("triggered_at", sa.Float(), nullable=False),
        sa.Column("sent_at", sa.Float(), nullable=False),
        sa.Column("converted_at", sa.Float(), nullable=False),
        sa.Column("revenue", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversions")),
        sa.UniqueConstraint(
            "workflow_id", "event_id", name=op.f("uq_conversions_workflow_id_event_id")
        ),
    )
    op.create_index("ix_conversions_workflow_at", "conversions", ["workflow_id", "converted_at"])
    op.create_table(
        "experiment_exposures",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("experiment_id", sa.String(length=200), nullable=False),
        sa.Column("workflow_id", sa.String(length=100), nullable=False),
        sa.Column("step_id", sa.String(length=100), nullable=False),
        sa.Column("variant", sa.String(length=100), nullable=False),
        sa.Column("contact_id", sa.String(length=255), nullable=False),
        sa.Column("enrollment_id", sa.String(length=32), nullable=False),
        sa.Column("intent_id", sa.String(length=32), nullable=True),
        sa.Column("exposed_at", sa.Float(), nullable=False),
        sa.Column("converted_at", sa.Float(), nullable=True),
        sa.Column("conversion_event_id", sa.String(length=255), nullable=True),
        sa.Column("revenue", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiment_exposures")),
        sa.UniqueConstraint(
            "experiment_id",
            "enrollment_id",
            name=op.f("uq_experiment_exposures_experiment_id_enrollment_id"),
        ),
    )
    op.create_index(
        "ix_experiment_exposures_experiment_variant",
        "experiment_exposures",
        ["experiment_id", "variant"],
    )
    op.create_index(
        "ix_experiment_exposures_contact", "experiment_exposures", ["contact_id", "workflow_id"]
    )
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("workflow_id", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("winner", sa.String(length=100), nullable=True),
        sa.Column("decided_at", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
    )


def downgrade() -> None:
    op.drop_table("experiments")
    op.drop_index("ix_experiment_exposures_contact", table_name="experiment_exposures")
    op.drop_index("ix_experiment_exposures_experiment_variant", table_name="experiment_exposures")
    op.drop_table("experiment_exposures")
    op.drop_index("ix_conversions_workflow_at", table_name="conversions")
    op.drop_table("conversions")
