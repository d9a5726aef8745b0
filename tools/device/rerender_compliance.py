"""Re-render committed device compliance reports with today's rules (no GPU needed).

    python tools/device/rerender_compliance.py docs/evidence/gpu-h200x2/run1/compliance.json

The same as `python -m reports.rerender PATH` (reports/rerender.py has the rules): the outcomes are
the device's own, the pytest log beside the report gives the failure messages, and only the verdicts
are rendered again.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from reports.rerender import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
