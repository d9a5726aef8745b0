"""The report's paragraph on a change made to an existing container under a snapshot (the record
provisioners/steps/container/upgrade.py UpgradeGuard keeps as the report's `meta.upgrade`)."""
from __future__ import annotations


def upgrade_text(u: dict) -> str:
    """One paragraph on what happened to the container's change, for the Markdown and HTML reports."""
    first = u.get("first_change", {})
    head = f"{u.get('container', 'the container')} was changed by this run (first: {first.get('step')}: " \
           f"{first.get('reason', '')})"
    out = u.get("outcome")
    if out == "snapshot failed":
        return f"{u.get('container', 'the container')}: the snapshot before the first change failed, so nothing " \
               f"was changed: {u.get('note', '')}"
    if out == "no snapshot":
        return f"{head}, {u.get('note', 'without a snapshot')}."
    snap = f"after snapshot {u.get('snapshot')} ({u.get('snapshot_s')} s)"
    if out in ("rolled back", "rolled back, service not answering", "rollback failed"):
        fail = (u.get("failure") or "").splitlines()[0][:200] if u.get("failure") else "specs failed"
        if out == "rollback failed":
            return f"{head} {snap}. The specs failed ({fail}); the ROLLBACK FAILED: {u.get('rollback_error')}."
        return (f"{head} {snap}. The specs failed ({fail}), so it was ROLLED BACK to {u.get('snapshot')} in "
                f"{u.get('rollback_s')} s; the old service: {u.get('service')} ({u.get('service_back_s')} s after "
                f"the rollback began).")
    if out in ("kept", "pruned"):
        return (f"{head} {snap}. The specs passed on the changed container; snapshot {u.get('snapshot')} "
                f"{'kept' if out == 'kept' else 'removed'} (keep {u.get('keep')}"
                + (f"; removed {', '.join(u['removed'])}" if u.get("removed") else "") + ").")
    return f"{head} {snap}."
