"""run options (streaming), dashboard index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 09:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        # per-run execution options, e.g. {"stream": true}
        batch_op.add_column(sa.Column('options', sa.JSON(), nullable=True))
        # GET /metrics/summary reads one tenant's runs by creation time
        batch_op.create_index('ix_runs_tenant_created', ['tenant_id', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_tenant_created')
        batch_op.drop_column('options')
