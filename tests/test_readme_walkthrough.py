"""The README's "Serve your own data" walkthrough runs as written: generated string-id
data → ``ialp env build`` → ``ialp pretrain`` → ``ialp serve`` + ``ialp trainer`` →
``ialp simulate``, with feedback sent by string item id and learned by the trainer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.transport.redis_server import free_port

README = Path(__file__).resolve().parents[1] / "README.md"


def walkthrough_block() -> str:
    """The bash block between the walkthrough markers of the README."""
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- walkthrough:start -->\s*```bash\n(.*?)```\s*<!-- walkthrough:end -->",
                      text, re.S)
    assert found, "README lost its walkthrough block"
    return found.group(1)


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    block = walkthrough_block()
    # Only the port changes (8000 may be taken on a CI machine); every command is the
    # README's own, run by bash from an empty folder.
    port = free_port()
    script = ("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n"
              + block.replace("8000", str(port)))
    simulate = next(line for line in block.splitlines() if line.startswith("ialp simulate"))
    script = script.replace(simulate, f"{simulate} --base-url http://127.0.0.1:{port}")
    env = {**os.environ,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "IALP_CACHE_DIR": str(tmp_path / "cache"),
           "IALP_EMBEDDED_REDIS_PORT": str(free_port())}
    env.pop("IALP_REDIS_URL", None)
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    logs = "".join((tmp_path / "runs" / "shop" / n).read_text(errors="replace")[-2000:]
                   for n in ("api.log", "trainer.log")
                   if (tmp_path / "runs" / "shop" / n).is_file())
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n{logs}"

    # The service answered the curl call in the caller's ids.
    answer = json.loads(next(line for line in done.stdout.splitlines()
                             if line.startswith('{"event_id"')))
    items = (tmp_path / "shop" / "items.tsv").read_text().splitlines()[1:]
    skus = {line.split("\t")[0] for line in items}
    assert len(answer["items"]) == 3 and set(answer["items"]) <= skus
    # The checkpoint carries the catalogue, in the items file's order.
    catalogue = (tmp_path / "runs" / "shop" / "policy" / "catalogue.txt").read_text().split()
    assert catalogue == [line.split("\t")[0] for line in items]
    # Feedback sent by string item id was accepted and learned, once each.
    rounds = json.loads((tmp_path / "runs" / "shop" / "simulate" / "simulate.json")
                        .read_text())["rounds"]
    assert len(rounds) == 4
    last = rounds[-1]
    sent = sum(r.get("feedback_accepted", 0) for r in rounds)
    assert sent > 0 and last["events_learned"] == sent
    assert last["policy_version"] > rounds[0]["policy_version"]
