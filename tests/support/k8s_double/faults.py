"""Fault injection rules of the Kubernetes API test double.

A :class:`Fault` is matched against each pod when the pod is created (by pod-name glob, image
glob and/or namespace; a rule with no pattern matches every pod). The double applies it during
the pod's life:

- ``pending``: the pod is never scheduled (``PodScheduled=False``, reason ``Unschedulable``,
  a ``FailedScheduling`` warning event); it stays ``Pending`` until deleted.
- ``image_pull``: the image cannot be pulled: the container waits with ``ErrImagePull`` then
  ``ImagePullBackOff`` (``Failed``/``BackOff`` events); the pod stays ``Pending``.
- ``kill``: ``after_seconds`` after the container started, its process group gets SIGKILL; the
  container terminates with exit code 137 and ``reason`` (``Error`` or ``OOMKilled``).
- ``node_lost``: ``after_seconds`` after the container started, the process group gets SIGKILL
  and the pod object vanishes (``GET`` answers 404, watchers see ``DELETED``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

FAULT_KINDS = ("pending", "image_pull", "kill", "node_lost")
KILL_REASONS = ("Error", "OOMKilled")


@dataclass
class Fault:
    """One fault rule; ``times`` limits how many pods it applies to (``None``: every match)."""

    kind: str
    pod: str | None = None
    image: str | None = None
    namespace: str | None = None
    after_seconds: float = 0.0
    reason: str = "Error"
    times: int | None = None
    applied: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.kind == "kill" and self.reason not in KILL_REASONS:
            raise ValueError(f"kill fault reason must be one of {KILL_REASONS}, got {self.reason!r}")
        if self.after_seconds < 0:
            raise ValueError(f"after_seconds must be >= 0, got {self.after_seconds}")

    def matches(self, pod_name: str, namespace: str, images: Sequence[str]) -> bool:
        if self.times is not None and self.applied >= self.times:
            return False
        if self.pod is not None and not fnmatch.fnmatchcase(pod_name, self.pod):
            return False
        if self.namespace is not None and namespace != self.namespace:
            return False
        return self.image is None or any(fnmatch.fnmatchcase(image, self.image) for image in images)
