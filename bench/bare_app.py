"""The anchor for bench/api_submit.py: a bare FastAPI endpoint that only enqueues a Celery no-op."""

from fastapi import FastAPI

from agentflow.workers.app import celery_app

app = FastAPI()


@app.post("/enqueue", status_code=202)
def enqueue(body: dict | None = None) -> dict:
    result = celery_app.send_task("agentflow.noop", queue="runs")
    return {"task_id": result.id, "status": "queued"}
