"""What the operator tells about a job: Events on it (with a real ``action``, posted by our own client)
and the same news in the operator's log, one line per thing done, naming the job."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from . import child_patches
from .job_status import QUOTA_EXCEEDED, find_condition
from .kube import Outcome

logger = logging.getLogger(__name__)

ACTIONS = {
    "Created": "Create", "Adopted": "Adopt", "NameConflict": "Create", "ApplyFailed": "Apply",
    "ScaledDown": "Scale", "SpecIgnored": "Ignore", "ValidationFailed": "Validate", "Deleting": "Delete",
    "Queued": "Admit", "Provisioning": "Provision", "Running": "Run", "Suspended": "Suspend",
    "Succeeded": "Complete", "Failed": "Fail", "Pending": "Reconcile",
}
"""Event reason -> ``action`` (what the operator did or saw); any other reason: ``Reconcile``."""
ADMISSION_REASONS = frozenset({"WaitingForQuota", QUOTA_EXCEEDED, "WaitingForKueue"})


async def tell(memo: kopf.Memo, body: kopf.Body, type_: str, reason: str, message: str,
               action: str | None = None) -> None:
    """An Event on the job, and the same news in the operator's log: ``ns/name: what happened``.

    Posted by our own client, not kopf's (whose Events all say ``action: Action?``): ``action`` is
    what was done (``ACTIONS`` by reason unless given), with ``reportingComponent`` and ``source``."""
    await memo.kube.event(body, type_=type_, reason=reason, message=message,
                          action=action or ACTIONS.get(reason, "Reconcile"))
    meta = body["metadata"]
    said = message if message.lower().startswith(reason.lower()) else f"{reason}: {message}"
    logger.log(logging.WARNING if type_ == "Warning" else logging.INFO, "%s/%s: %s", meta.get("namespace"),
               meta.get("name"), said)


def phase_action(desired: Mapping[str, Any]) -> str:
    """The ``action`` of a phase Event: what decided the phase (admission, validation, a restart)."""
    reason = find_condition(desired, "Ready").get("reason")
    if reason in ADMISSION_REASONS:
        return "Admit"
    if reason == "ValidationFailed":
        return "Validate"
    if reason == "Restarting":
        return "Restart"
    return ACTIONS.get(desired.get("phase") or "", "Reconcile")


async def announce_child(memo: kopf.Memo, body: kopf.Body, outcome: Outcome,
                         known_conflicts: Sequence[str]) -> None:
    """An Event per change to a child; a conflict only the first time it is seen (by this process, or in
    the stored status message, which names it)."""
    label = outcome.label
    messages = {
        "created": ("Normal", "Created", f"created {label}"),
        "adopted": ("Normal", "Adopted", f"adopted {label} (it had no controller)"),
        "updated": ("Normal", "Updated", f"patched {label}: {child_patches.describe_patch(outcome.patch)}"),
        "conflict": ("Warning", "NameConflict", conflict(outcome)),
    }
    repeated = outcome.action == "conflict" and any(conflict(outcome) in known for known in known_conflicts)
    if outcome.action in messages and not repeated:
        type_, reason, message = messages[outcome.action]
        await tell(memo, body, type_, reason, message, _child_action(outcome))


def _child_action(outcome: Outcome) -> str | None:
    """What a patch of a child did: scale, suspend or resume a RayJob, update a ConfigMap."""
    if outcome.action != "updated":
        return None
    spec = outcome.patch.get("spec") or {}
    if "replicas" in spec:
        return "Scale"
    if "suspend" in spec:
        return "Suspend" if spec["suspend"] else "Resume"
    return "Update"


def conflict(outcome: Outcome) -> str:
    """The message of a child name taken by an object that is not ours."""
    return f"{outcome.label} exists and is not ours; delete or rename it"
