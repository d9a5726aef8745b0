"""Re-render a committed device compliance report with the current statuses (no GPU needed).

    python tools/device/rerender_compliance.py docs/evidence/h100/compliance-layers.json [pytest-layers.log]

Input: the compliance JSON a device run wrote (each row lists its specs with their outcomes) and,
when given, that run's pytest log (for the failure messages the old report cut to a code location).
The outcomes are the device's own; only the verdict rules change (reports/verdict.py):

- each spec counts for the ids its `req` marker names *now* (markers corrected since the run);
- a passed spec of an id for which the run's profile declares a substitute compared the observed
  value with the profile's pin, which is that substitute: it is a *deviation* (document value,
  the substitute, the profile's reason), never a pass;
- specs that errored at setup on the same layer error: the first carries it, the rest are not
  verified "layer ... failed (see the error of ...)";
- scope and conflict entries are shown as such; a failure's reason is its assertion message.

Writes the JSON and Markdown beside the input (same names), keeping the run's meta and adding a note.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from provisioners.config.phoenix import load_profile  # noqa: E402
from reports.catalog import load_catalog  # noqa: E402
from reports.compliance import _md, requirement_rows, summarize  # noqa: E402

# The documents' own value for each id a profile may substitute (seed 003 6.2, 001 TR1, 000 step 1 ...).
DOCUMENT_VALUES = {
    "R003-6.2-torch-cuda": "12.8", "R001-1-cuda128-torch29": "CUDA 12.8, torch 2.9+, sm_120",
    "R001-TR1-torch-nightly": "a torch 2.9+ nightly (cu128)", "R003-P2.1-torch-nightly-cu128": "a torch nightly (cu128)",
    "R002-T-torch-nightly-channel": "a torch nightly", "R000-S4-vllm-version-cli": "0.10.2",
    "R003-6.2-vllm-version": "0.10.2", "R003-P2.3-vllm-wheel": "vllm==0.10.2", "R003-3.2-wheel-first": "vllm==0.10.2",
    "R001-TR7-verification": "vLLM 0.10.2 imports", "R003-P2.2-flashinfer-verify": "v0.3.1",
    "R003-6.2-flashinfer-version": "0.3.1", "R003-7.1-flashinfer-v030": "v0.3.0", "R000-S1-python311-full": "3.11",
    "R002-G1-sm120-kernels": "sm_120",
}
SECTION = re.compile(r"^_{3,} (ERROR at setup of )?(\S+) _{3,}$")


def failure_messages(log: Path | None) -> dict[str, tuple[bool, str]]:
    """{test name: (setup error?, message)} from a pytest log's failure sections ("E   " lines)."""
    out: dict[str, tuple[bool, str]] = {}
    if log is None or not log.is_file():
        return out
    name, setup, lines = None, False, []
    for line in log.read_text(errors="replace").splitlines() + ["_____ end _____"]:
        m = SECTION.match(line)
        if m or line.startswith("====="):
            if name and lines and name not in out:
                out[name] = (setup, "\n".join(lines[:12]))
            name, setup, lines = (m.group(2), bool(m.group(1)), []) if m else (None, False, [])
        elif name and line.startswith("E   "):
            text = line[4:].rstrip()
            text = re.sub(r"^(provisioners\.(\w+\.)*(ProvisionError|CommandFailed)|AssertionError): ", "", text)
            if text.strip():
                lines.append(text)
    return out


def outcomes_of(doc: dict, markers: dict[str, list[str]], messages: dict[str, tuple[bool, str]],
                profile) -> list[dict]:
    specs: dict[str, dict] = {}
    for r in doc["requirements"]:
        for s in r.get("specs", []):
            o = specs.setdefault(s["nodeid"], {"nodeid": s["nodeid"], "outcome": s["outcome"], "reqs": [],
                                               "evidence": [], "deviations": [], "message": "",
                                               "duration": s.get("duration", 0.0), "called": True})
            o["reqs"].append(r["id"])
            o["evidence"] += [e for e in r.get("evidence", []) if e not in o["evidence"]]
            if s["outcome"] != "passed" and not o["message"]:
                o["message"] = r.get("reason", "")
    by_name = {o["nodeid"].split("::")[-1]: o["nodeid"] for o in specs.values()}
    first_error: dict[str, str] = {}                # the log's order: the first spec that hit the error
    for name, (setup, msg) in messages.items():
        if setup and name in by_name:
            first_error.setdefault(msg, by_name[name])
    for o in specs.values():
        base = o["nodeid"].split("[", 1)[0]
        o["reqs"] = markers.get(base, o["reqs"])
        name = o["nodeid"].split("::")[-1]
        if o["outcome"] == "failed" and name in messages:
            setup, msg = messages[name]
            o["message"] = msg
            if setup:
                o["called"] = False
                if first_error.get(msg, o["nodeid"]) != o["nodeid"]:
                    step = re.match(r"\[([^\]]+)\]", msg)
                    o["outcome"] = "skipped"
                    o["message"] = (f"not verified: layer {step.group(1) if step else 'setup'} failed "
                                    f"(see the error of {first_error[msg]})")
        if o["outcome"] == "passed":
            for rid in o["reqs"]:
                sub = profile.substitutes.get(rid)
                if sub is not None:
                    o["deviations"].append({"id": rid, "document": DOCUMENT_VALUES.get(rid, "the document's value"),
                                            "observed": " / ".join(dict.fromkeys(v.removeprefix("v") for v in sub.value)),
                                            "reason": sub.reason,
                                            "profile": profile.name, "what": "as the profile pins it"})
    return list(specs.values())


def main(path: str, log: str | None = None) -> None:
    from reports.sync_catalog import collect_markers

    src = Path(path)
    doc = json.loads(src.read_text())
    meta = doc["meta"]
    profile = load_profile(meta["profile"])
    scheme = meta["target"].split("://", 1)[0]
    outcomes = outcomes_of(doc, collect_markers(), failure_messages(Path(log) if log else None), profile)
    rows = requirement_rows(outcomes, load_catalog(), profile=profile.name, target_scheme=scheme)
    summary = summarize(rows)
    meta["rerendered"] = ("statuses re-rendered off-device by tools/device/rerender_compliance.py from this run's "
                          "spec outcomes: a passed spec of an id the profile substitutes is a deviation")
    out = {"meta": meta, "summary": summary, "requirements": rows}
    src.write_text(json.dumps(out, indent=2))
    src.with_suffix(".md").write_text(_md(rows, summary, meta))
    print(f"{src}: " + ", ".join(f"{n} {s}" for s, n in summary["total"].items()))


if __name__ == "__main__":
    main(*sys.argv[1:3])
