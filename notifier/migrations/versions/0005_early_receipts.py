"""Delivery receipts that come before their send is recorded

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

A provider's status callback can arrive before the dispatcher has written the message id it
names (the write waits behind others, or the database is locked for a while); such a receipt
used to find nothing and was dropped, leaving the message "sent" for good. It is now kept in
earlyreceipt and applied when the send is recorded.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "earlyreceipt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("received_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("earlyreceipt", schema=None) as batch_op:
        batch_op.create_index("ix_earlyreceipt_provider_id", ["provider_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("earlyreceipt", schema=None) as batch_op:
        batch_op.drop_index("ix_earlyreceipt_provider_id")
    op.drop_table("earlyreceipt")
