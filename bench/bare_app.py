"""The anchor for bench/api_submit.py: a bare FastAPI endpoint that verifies the request's
JWT (HS256, with PyJWT, as the API does) and enqueues a Celery no-op."""

import os

import jwt
from fastapi import FastAPI, Header, HTTPException

from agentflow.workers.app import celery_app

app = FastAPI()
SECRET = os.environ.get("AGENTFLOW_JWT_SECRET")


@app.post("/enqueue", status_code=202)
def enqueue(body: dict | None = None, authorization: str | None = Header(None)) -> dict:
    if SECRET:
        token = (authorization or "").removeprefix("Bearer ").strip()
        try:
            jwt.decode(token, SECRET, algorithms=["HS256"], options={"require": ["exp"]})
        except jwt.PyJWTError:
            raise HTTPException(401, "invalid token") from None
    result = celery_app.send_task("agentflow.noop", queue="runs")
    return {"task_id": result.id, "status": "queued"}
