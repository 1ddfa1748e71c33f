"""waiting runs: what a run waits for (steps, a person, child runs)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        # [{"kind": "step"|"human"|"children", "node", "key", ...}] while a run is paused
        batch_op.add_column(sa.Column('waiting_for', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('waiting_for')
