"""The README's walk-through, run as written: its shell commands and Python examples, in order, in one bash
session in a temporary folder, on the embedded broker. The only changes are the ports: the broker and the
worker's web server get free ports through RECSYS_BROKER_PORT, RECSYS_BROKER_URL and RECSYS_WEB_PORT (other
brokers may hold 9092 on a shared machine), and the Kafka example's "127.0.0.1:9092" is replaced by the same
free port.

Code blocks of the README not run here, and why, are listed in SKIPPED; a new block must be added to one or
the other, so that none is forgotten.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stream_app.broker import free_port

README = (Path(__file__).parents[1] / "README.md").read_text()
WALKTHROUGH = "## Five-minute walk-through"
SKIPPED = {
    "set-up": "creates a virtual environment and installs packages (network); `recsys demo` is tested by "
              "tests/test_demo.py and `python -m pytest -q` is this suite",
    "Next: MovieLens": "downloads MovieLens from GroupLens (network) and trains for minutes",
    "Development": "runs this test suite and ruff",
}


def code_blocks(text: str) -> list[tuple[str, str, str]]:
    """(section heading, language, code) of every fenced block, in order."""
    blocks, section = [], "set-up"
    for match in re.finditer(r"^(#{2,3}) ([^\n]*)$|^```(\w*)\n(.*?)^```$", text, re.M | re.S):
        if match.group(1):
            if match.group(1) == "##":
                section = match.group(2)
            continue
        blocks.append((section, match.group(3), match.group(4)))
    return blocks


def walkthrough_blocks() -> list[tuple[str, str]]:
    """(language, code) of the walk-through's blocks: from its heading to the next `## ` heading."""
    part = README.split(WALKTHROUGH, 1)[1]
    part = part[: part.find("\n## ")]
    return [(lang, code) for _, lang, code in code_blocks(part)]


def test_every_readme_block_is_run_or_listed_as_skipped():
    sections = {section for section, _, _ in code_blocks(README)}
    run = {WALKTHROUGH[3:]}
    assert sections - run == set(SKIPPED), "classify every README code block: run it here or say why not"
    languages = [lang for lang, _ in walkthrough_blocks()]
    assert languages == ["bash", "python", "python", "bash"], languages


def script(port: int) -> str:
    """The walk-through as one bash script; each shell command is announced by a `>>> command` line."""
    lines = ["set -euo pipefail"]
    for k, (lang, code) in enumerate(walkthrough_blocks()):
        if lang == "bash":
            for line in code.splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    lines.append(f"echo '>>> {line.split('  #')[0].strip()}'")
                    lines.append(line)
        else:
            assert lang == "python"
            lines.append(f"echo '>>> python example {k}'")
            lines.append(f"python - <<'README_PYTHON_{k}'\n{code.replace('127.0.0.1:9092', f'127.0.0.1:{port}')}"
                         f"README_PYTHON_{k}")
    return "\n".join(lines) + "\n"


def outputs(text: str) -> dict[str, str]:
    """What each announced command printed."""
    parts = re.split(r"^>>> (.*)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.mark.integration
@pytest.mark.slow
def test_the_walkthrough_runs_as_written(tansu, tmp_path):
    port, web = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(RECSYS_BROKER_PORT=str(port), RECSYS_BROKER_URL=f"kafka://127.0.0.1:{port}",
               RECSYS_WEB_PORT=str(web), RECSYS_DATA_CACHE=str(tmp_path / "cache"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    work = tmp_path / "clone"
    (work / "model_artifacts").mkdir(parents=True)  # as in a clone: the folder holds a README
    (tmp_path / "walkthrough.sh").write_text(script(port))
    proc = subprocess.Popen(["bash", str(tmp_path / "walkthrough.sh")], cwd=work, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=480)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"the walk-through did not finish in 8 minutes:\n{out[-4000:]}") from None
    finally:  # whatever happened: no broker or worker left behind
        subprocess.run([sys.executable, "-m", "stream_app.cli", "broker", "--stop"], env=env, cwd=work,
                       capture_output=True, timeout=60)
    log = (work / "worker.log").read_text(errors="replace") if (work / "worker.log").exists() else ""
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{out[-4000:]}\nworker log:\n{log[-3000:]}"

    said = outputs(out)
    step = lambda prefix: next(v for k, v in said.items() if k.startswith(prefix))  # noqa: E731
    assert "broker started in the background" in step("recsys broker --detach")
    assert "now current" in step("recsys train")
    current = (work / "model_artifacts" / "current").read_text().strip()
    assert (work / "model_artifacts" / current / "manifest.json").is_file()
    assert re.search(r"produced \d+ users, \d+ items, [1-9]\d* ratings", step("recsys replay"))
    reply = step("recsys recommend")
    assert "top-10 for user 1" in reply and reply.count("Synthetic Movie") == 10, reply
    tail = [line for line in step("recsys tail").splitlines() if "\t{" in line]
    assert len(tail) == 3 and all('"items"' in line for line in tail), tail
    kafka_example, api_example = [v for k, v in said.items() if k.startswith("python example")]
    assert current in kafka_example and "item_id" in kafka_example, kafka_example
    items = re.findall(r"\('(\d+)', [\d.]+\)", api_example)
    assert len(items) == 5, api_example
    assert "stopped broker" in step("recsys broker --stop")
    assert not (work / "stores").exists()
    assert f"serving model {current}@" in log, log[-2000:]
