"""The API's one event hub per process (api/run_events.py), embedded mode: a stream that does
not read fills its bounded queue and is told to catch up from the store, while another
stream of the same run gets every event; streams that leave leave nothing registered."""

from __future__ import annotations

import time

from agentflow.api.run_events import QUEUE_SIZE, RESYNC
from tests.api.support import rules_spec
from tests.api.test_runs_api import HoldingDispatcher


def test_a_stalled_stream_is_told_to_catch_up_and_holds_up_no_other(make_client):
    dispatcher = HoldingDispatcher()  # runs stay queued; events come from this test
    client = make_client(dispatcher=dispatcher)
    client.post("/workflows", json=rules_spec())
    run_id = client.post("/workflows/rules-demo/runs", json={"input": "x"}).json()["run_id"]
    hub = client.app.state.run_events
    stalled = client.portal.call(hub.watch, run_id)
    reading = client.portal.call(hub.watch, run_id)
    got: list[str] = []
    n = 3 * QUEUE_SIZE

    async def read() -> None:
        while len(got) < n:
            got.append((await reading.get()).data["delta"])

    reader = client.portal.start_task_soon(read)
    for i in range(n):  # from this thread, as the executor's threads publish
        dispatcher.bus.publish(run_id, "token", {"node_id": "input", "delta": str(i)})
        if i % 100 == 99:
            time.sleep(0.01)
    reader.result(timeout=30)
    assert got == [str(i) for i in range(n)]
    assert stalled.resyncs >= 2 and stalled.queue.qsize() <= QUEUE_SIZE
    assert stalled.queue.get_nowait().kind == RESYNC  # what it missed is in the store, not in memory
    assert hub.watchers == 2
    stalled.close()
    reading.close()
    assert hub.watchers == 0 and not hub._runs
