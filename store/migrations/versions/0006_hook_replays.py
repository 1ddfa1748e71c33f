"""hook_replays: the atomic replay guard of inbound triggers

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 10:40:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('hook_replays',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('hook_replays', schema=None) as batch_op:
        batch_op.create_index('ix_hook_replays_expires', ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('hook_replays', schema=None) as batch_op:
        batch_op.drop_index('ix_hook_replays_expires')
    op.drop_table('hook_replays')
