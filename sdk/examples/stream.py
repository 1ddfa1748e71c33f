"""Print an LLM node's answer as it streams, with the async client.

    python sdk/examples/stream.py support-triage "Tell me a story about a lighthouse"
"""

import asyncio
import sys

from agentflow.client import AsyncAgentFlow, EndEvent, StepEvent, TokenEvent


async def main(workflow_id: str, text: str, url: str = "http://127.0.0.1:8000") -> None:
    async with AsyncAgentFlow(url) as client:
        run = await client.runs.submit(workflow_id, text, metadata={"customer": "alice"}, stream=True)
        async for event in run.stream():
            if isinstance(event, TokenEvent):
                print(event.delta, end="", flush=True)
            elif isinstance(event, StepEvent) and event.status != "running":
                print(f"\n[{event.node_id} {event.status}]", flush=True)
            elif isinstance(event, EndEvent):
                print(f"\nrun {event.status}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
