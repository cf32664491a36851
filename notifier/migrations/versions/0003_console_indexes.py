"""Support console: indexes for its search, delivery log and dashboard; the manual actions table

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_shipment_waybill"), ["waybill"], unique=False)
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notification_created", ["created_at", "channel", "status"], unique=False
        )
        batch_op.create_index(
            "ix_notification_status_created", ["status", "created_at"], unique=False
        )
        batch_op.create_index("ix_notification_rule_created", ["rule", "created_at"], unique=False)
        batch_op.create_index("ix_notification_recipient", ["recipient"], unique=False)
    op.create_table(
        "consoleaction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("notification_id", sa.Integer(), nullable=False),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("previous_status", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("previous_reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["notification_id"], ["notification.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("consoleaction", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_consoleaction_notification_id"), ["notification_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("consoleaction", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consoleaction_notification_id"))
    op.drop_table("consoleaction")
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.drop_index("ix_notification_recipient")
        batch_op.drop_index("ix_notification_rule_created")
        batch_op.drop_index("ix_notification_status_created")
        batch_op.drop_index("ix_notification_created")
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shipment_waybill"))
