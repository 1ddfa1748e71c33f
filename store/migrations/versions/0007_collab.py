"""collaborative editing: the shared documents' Yjs updates; who saved each version

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 10:40:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'collab_updates',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('tenant_id', sa.String(length=64), nullable=False),
        sa.Column('workflow_id', sa.String(length=128), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.Column('subject', sa.String(length=256), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_collab_updates_doc', 'collab_updates', ['tenant_id', 'workflow_id', 'id'], unique=False)
    with op.batch_alter_table('workflow_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('author', sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column('editors', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workflow_versions', schema=None) as batch_op:
        batch_op.drop_column('editors')
        batch_op.drop_column('author')
    op.drop_index('ix_collab_updates_doc', table_name='collab_updates')
    op.drop_table('collab_updates')
