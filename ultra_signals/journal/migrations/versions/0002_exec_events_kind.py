"""Index ``exec_events`` by kind: the rollout gate and ``rollout status`` read trips, resumes and gates by kind.

Revision ID: 0002
Revises: 0001

Without it every gate scans the whole events table (it grows by one row per order refusal, trip, resume and
reconciliation, for as long as the journal lives).  Index only: no row changes, so the downgrade loses nothing.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_exec_events_kind", "exec_events", ["kind", "id"])


def downgrade() -> None:
    op.drop_index("ix_exec_events_kind", table_name="exec_events")
