"""Ingest at scale: fewer index writes per update, and only pending messages read to supersede

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

- notification: the index on shipment_id alone becomes one on (shipment_id, status), so a new
  stage's search for the pending messages it supersedes answers from the index instead of
  reading the row of every message the shipment was ever sent; whatever looked messages up by
  shipment still can.
- event: the index on waybill keeps only held events (no shipment yet), the only ones looked
  up by waybill (when their shipment registers). Ingest stores an event of a known shipment
  with it, so most events never enter that index.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

HELD = sa.text("shipment_id IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notification_shipment_status", ["shipment_id", "status"], unique=False
        )
        batch_op.drop_index("ix_notification_shipment_id")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index(
            "ix_event_held", ["waybill"], unique=False, sqlite_where=HELD, postgresql_where=HELD
        )
        batch_op.drop_index("ix_event_waybill")


def downgrade() -> None:
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index("ix_event_waybill", ["waybill"], unique=False)
        batch_op.drop_index("ix_event_held")
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.create_index("ix_notification_shipment_id", ["shipment_id"], unique=False)
        batch_op.drop_index("ix_notification_shipment_status")
