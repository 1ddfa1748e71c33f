"""child runs of workflow and map nodes: child_key, parent index

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        # "<parent step key>#<index>": starting a step's children again finds them
        batch_op.add_column(sa.Column('child_key', sa.String(length=340), nullable=True))
        batch_op.create_unique_constraint('uq_runs_child_key', ['child_key'])
        # GET /runs/{id} lists a run's children; GET /runs?parent_run_id= filters by parent
        batch_op.create_index('ix_runs_parent', ['parent_run_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_parent')
        batch_op.drop_constraint('uq_runs_child_key', type_='unique')
        batch_op.drop_column('child_key')
