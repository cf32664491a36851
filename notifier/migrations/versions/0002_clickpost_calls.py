"""Clickpost integration: owed API calls, and when a shipment last heard or was polled

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_event_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch_op.add_column(
            sa.Column("polled_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
    op.create_table(
        "clickpostcall",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shipment_id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("body_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("due_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("lease_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["shipment_id"],
            ["shipment.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("shipment_id", "kind", "body_hash", name="uq_call"),
    )
    with op.batch_alter_table("clickpostcall", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_clickpostcall_shipment_id"), ["shipment_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_clickpostcall_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("clickpostcall", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clickpostcall_status"))
        batch_op.drop_index(batch_op.f("ix_clickpostcall_shipment_id"))

    op.drop_table("clickpostcall")
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.drop_column("polled_at")
        batch_op.drop_column("last_event_at")
