"""How long report.html takes on a big run: 10,000 synthetic trials, each with a patch.diff.

python benchmarks/html_report.py [--trials 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.big_ledger import build  # noqa: E402
from slurm_autoresearch.ledger import Ledger  # noqa: E402
from slurm_autoresearch.views.html_report import write_html_report  # noqa: E402

DIFF = """\
diff --git a/train.py b/train.py
--- a/train.py
+++ b/train.py
@@ -1,3 +1,3 @@
-lr = 0.01
+lr = 0.02
 steps = 100
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="build the run here and leave it (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        start = time.perf_counter()
        rundir = build(root, args.trials)
        # Every trial has a diff on disk, as in a real run; the page must read only a bounded few.
        for i in range(1, args.trials + 1):
            path = rundir.trial_dir(f"T{i:04d}") / "patch.diff"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(DIFF)
        print(f"built {args.trials} trials in {time.perf_counter() - start:.1f} s")
        ledger = Ledger.open(rundir.ledger, readonly=True)
        try:
            times = []
            for _ in range(3):
                start = time.perf_counter()
                path = write_html_report(rundir, None, ledger)
                times.append(time.perf_counter() - start)
        finally:
            ledger.close()
        size = path.stat().st_size
        print(
            f"write_html_report: {min(times):.3f} s best of 3 ({', '.join(f'{t:.3f}' for t in times)}), "
            f"{size / 1e6:.2f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
