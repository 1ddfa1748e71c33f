"""SQLAlchemy 2 models. Every row carries `tenant_id` so isolation is a filter, not a redesign."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String,
                        Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .crypto import EncryptedJSON

DEFAULT_TENANT = "default"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSON, list: JSON}


class Workflow(Base):
    __tablename__ = "workflows"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True, default=DEFAULT_TENANT)
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class WorkflowVersion(Base):
    __tablename__ = "workflow_versions"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    spec: Mapped[dict] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    author: Mapped[str | None] = mapped_column(String(256), nullable=True)  # who saved it
    # who edited the shared document since the version before (collaborative editing)
    editors: Mapped[list | None] = mapped_column(JSON, nullable=True)


class SourceRow(Base):
    __tablename__ = "sources"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    workflow_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    workflow_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    spec: Mapped[dict] = mapped_column(JSON)  # the exact spec this run executes
    status: Mapped[str] = mapped_column(String(16), default="queued")
    # encrypted when AGENTFLOW_ENCRYPTION_KEY is set (store/crypto.py)
    input: Mapped[dict] = mapped_column(EncryptedJSON("runs.input"))
    state: Mapped[dict | None] = mapped_column(EncryptedJSON("runs.state"), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    tokens_used: Mapped[int] = mapped_column(BigInteger, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # a re-run from a chosen step of an earlier run (trace replay), or the run whose
    # workflow or map node started this one (then child_key is set)
    parent_run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # a child run: "<the parent's step key>#<index>", unique, so starting the children of a
    # step again finds them instead of starting more (migration 0004)
    child_key: Mapped[str | None] = mapped_column(String(340), nullable=True)
    rerun_from: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # execution options of this run, e.g. {"stream": true} (migration 0003)
    options: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # what a paused run waits for: [{"kind": "step"|"human"|"children", "node", "key", ...}] (0004)
    waiting_for: Mapped[list | None] = mapped_column(EncryptedJSON("runs.waiting_for"), nullable=True)

    __table_args__ = (
        Index("ix_runs_tenant_workflow_created", "tenant_id", "workflow_id", "created_at"),
        Index("ix_runs_status", "status"),
        Index("ix_runs_tenant_created", "tenant_id", "created_at"),
        Index("ix_runs_parent", "parent_run_id"),
        UniqueConstraint("child_key", name="uq_runs_child_key"),
    )


class Step(Base):
    __tablename__ = "steps"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(36), ForeignKey("runs.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    node_id: Mapped[str] = mapped_column(String(128))
    node_type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="running")
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    queue: Mapped[str | None] = mapped_column(String(128), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(256), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    duration_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the state delta the step wrote, and what it read (trace replay); encrypted with a key set
    output: Mapped[dict | None] = mapped_column(EncryptedJSON("steps.output"), nullable=True)
    input: Mapped[dict | None] = mapped_column(EncryptedJSON("steps.input"), nullable=True)
    # run:node:superstep - the same key on a redelivered step, so a finished one is reused.
    step_key: Mapped[str | None] = mapped_column(String(320), nullable=True)

    __table_args__ = (Index("ix_steps_run", "run_id", "id"), Index("ix_steps_key", "step_key"))


class Schedule(Base):
    __tablename__ = "schedules"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    workflow_id: Mapped[str] = mapped_column(String(128))
    cron: Mapped[str | None] = mapped_column(String(128), nullable=True)
    interval_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    input: Mapped[dict] = mapped_column(EncryptedJSON("schedules.input"))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    next_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """Who did what to which object, and when (security issue: every write, run start/cancel)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(256))
    role: Mapped[str | None] = mapped_column(String(32), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_audit_tenant_at", "tenant_id", "at"),)


class Hook(Base):
    """Inbound webhook trigger: POST /hooks/{id} with an HMAC signature starts a run.

    The HMAC key is named by an environment variable (`secret_env`), never stored.
    """

    __tablename__ = "hooks"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    workflow_id: Mapped[str] = mapped_column(String(128))
    secret_env: Mapped[str] = mapped_column(String(256))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class HookReplay(Base):
    """A signed trigger already accepted (the embedded replay guard; distributed mode keeps
    these in Redis). The key is the primary key, so of two identical requests arriving at
    once exactly one INSERT wins; `run_id` is empty while its run is being started."""

    __tablename__ = "hook_replays"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)   # sha256 of hook id + signature
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_hook_replays_expires", "expires_at"),)


class Webhook(Base):
    """Outbound notification on run end, signed with the key named by `secret_env`."""

    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    workflow_id: Mapped[str | None] = mapped_column(String(128), nullable=True)  # None = every workflow
    url: Mapped[str] = mapped_column(Text)
    secret_env: Mapped[str | None] = mapped_column(String(256), nullable=True)
    events: Mapped[list] = mapped_column(JSON)  # e.g. ["run.succeeded", "run.failed"]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    webhook_id: Mapped[str] = mapped_column(String(64), ForeignKey("webhooks.id", ondelete="CASCADE"))
    run_id: Mapped[str] = mapped_column(String(36))
    event: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    response_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_deliveries_webhook", "webhook_id", "at"),)


class CollabUpdate(Base):
    """One Yjs update of a workflow's shared document (api/collab.py), in arrival order.
    Loading the document applies them all; `store.collab` merges them into one row now
    and then so a document does not grow a row per keystroke forever."""

    __tablename__ = "collab_updates"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    workflow_id: Mapped[str] = mapped_column(String(128))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    subject: Mapped[str | None] = mapped_column(String(256), nullable=True)  # None: a merge of several
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_collab_updates_doc", "tenant_id", "workflow_id", "id"),)
