"""A minimal Faust app on the worker's consumer (stream_app/worker/delivery.py), run by tests/test_delivery_rereads.py:
`python tests/delivery_probe.py worker`.

Its agent takes the events of one input topic slowly, so that most of them wait in Faust's stream buffers (of
PROBE_BUFFER events; a full one holds the fetcher in the middle of what it fetched). Once it has handled
PROBE_DROP_AFTER events, the app drops those buffers as Faust does when it resumes its flow
(app.flow_control.resume() clears them, then consumer.resume_flow()); with PROBE_SEEK=1 it first seeks the
partition to its committed offset as Faust does at the end of a rebalance (consumer.perform_seek()). It prints
one JSON line per handled batch ({"handled": [offsets]}), one when it dropped the buffers ({"dropped": events
handled by then}) and one per re-read partition ({"reread": topic}).
"""

from __future__ import annotations

import asyncio
import json
import os

from stream_app.worker.delivery import FastFetchApp
from stream_app.worker.topics import consumer_timeouts

TOPIC = os.environ["PROBE_TOPIC"]
DROP_AFTER = int(os.environ["PROBE_DROP_AFTER"])
SEEK = os.environ.get("PROBE_SEEK") == "1"

app = FastFetchApp(os.environ["PROBE_APP_ID"], broker=os.environ["PROBE_BROKER"], store="memory://",
                   web_enabled=False, autodiscover=False, consumer_auto_offset_reset="earliest",
                   key_serializer="raw", value_serializer="raw", topic_partitions=1, broker_commit_interval=0.2,
                   stream_buffer_maxsize=int(os.environ["PROBE_BUFFER"]), **consumer_timeouts(2.0))
inputs = app.topic(TOPIC, key_type=bytes, value_type=bytes)
state = {"handled": 0, "dropped": False}


def say(**line) -> None:
    print(json.dumps(line), flush=True)


@app.agent(inputs)
async def slow(stream):
    async for events in stream.take_events(4, within=0.05):
        await asyncio.sleep(0.1)  # slow: the rest waits in Faust's buffers
        app.consumer.mark_handled(events)
        state["handled"] += len(events)
        say(handled=[e.message.offset for e in events])


@app.timer(0.05)
async def drop_buffers() -> None:
    if state["handled"] >= DROP_AFTER and not state["dropped"]:
        state["dropped"] = True
        if SEEK:
            await app.consumer.perform_seek()
        app.flow_control.resume()  # already resumed: only clears every stream buffer, as at a rebalance's end
        app.consumer.resume_flow()
        say(dropped=state["handled"])


@app.on_partitions_assigned.connect
async def guard(sender, assigned, **kwargs) -> None:
    app.consumer.guard([TOPIC], on_reread=lambda topic: say(reread=topic))


if __name__ == "__main__":
    app.main()
