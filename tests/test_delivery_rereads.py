"""Rule 9 of stream_app/worker/delivery.py against the real embedded broker (tansu), no mocks: events Faust
dropped from its stream buffers after fetching them are read again at once, with no stall replay (there is
none in this app). Without rule 9 the dropped events never come back: the probe would wait forever.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROBE = Path(__file__).with_name("delivery_probe.py")
EVENTS = 120
DROP_AFTER = 12


@pytest.mark.parametrize("seek, buffer", [(False, 4096), (True, 8)], ids=["clear", "seek-then-clear"])
def test_events_dropped_from_faust_buffers_are_read_again_at_once(kafka_broker, tmp_path, seek, buffer):
    """clear: Faust drops its buffers; seek-then-clear: the end of a rebalance, where Faust seeks the partition
    to its committed offset while the fetcher is in the middle of what it fetched, then drops its buffers."""
    from kafka import KafkaProducer

    from stream_app.kafka_admin import create_topics

    topic = f"probe-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_broker.bootstrap, {topic: 1})
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    for n in range(EVENTS):  # all there before the probe starts: most will wait in its buffers
        producer.send(topic, key=b"k", value=str(n).encode())
    producer.flush()
    producer.close()
    env = dict(os.environ, PROBE_TOPIC=topic, PROBE_DROP_AFTER=str(DROP_AFTER), PROBE_BROKER=kafka_broker.url,
               PROBE_SEEK=str(int(seek)), PROBE_BUFFER=str(buffer),
               PROBE_APP_ID=f"probe-{uuid.uuid4().hex[:8]}", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = tmp_path / "probe.log"
    proc = subprocess.Popen([sys.executable, str(PROBE), "worker", "--loglevel", "info", "--without-web"],
                            cwd=tmp_path, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            start_new_session=True)
    try:
        lines = wait_until_handled(proc, log, timeout=90)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    handled = [offset for line in lines for offset in line.get("handled", [])]
    dropped_at = next(line["dropped"] for line in lines if "dropped" in line)
    assert dropped_at < EVENTS  # the buffers were dropped while events were still waiting
    if not seek:  # the seek itself reads the events again from the committed offset
        assert [line["reread"] for line in lines if "reread" in line] == [topic]  # at once, not by a timer
    assert set(handled) == set(range(EVENTS))  # every event handled (some twice: re-read after an agent took them)


def wait_until_handled(proc: subprocess.Popen, log: Path, timeout: float) -> list[dict]:
    """The probe's JSON lines (Faust logs what it prints) once it has handled every offset (else fails)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(m.group(1)) for m in re.finditer(r'(\{".*\})\s*$', log.read_text(errors="replace"), re.M)]
        if len({o for line in lines for o in line.get("handled", [])}) >= EVENTS:
            return lines
        text = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        assert proc.poll() is None, f"probe exited with {proc.returncode}:\n{text}"
        assert time.monotonic() < deadline, f"not every event handled after {timeout} s:\n{text}"
        time.sleep(0.2)
