"""Fleet membership as discovery sees it, the diff the control plane applies (pure).

Discovery (`control.k8s_discovery`) names the servers that exist now; the fleet holds
the servers the control plane plans on. `diff` says what changes:

- a server named and not in the fleet is a candidate: it joins once it qualifies
  (`control.qualify`, the checks of `tnx fleet attach`); one that does not yet (a pod
  still starting, not live) stays a candidate and is asked again;
- a server in the fleet and named no more is gone: it leaves the fleet as a failed
  server does (down in fleet health, its sessions failed over), and if it comes back
  under its name it fails back as a server that recovered does, after its healthy
  probes;
- a server gone for `forget_after_s` is forgotten: fleet health drops it, so the
  outage it began ends (a StatefulSet scaled down is not an outage forever).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from control.endpoints import Target

# How long a server that left is remembered as down: long enough for a pod to be
# rescheduled and its image pulled (it then fails back), short enough that a scale-down
# ends its outage within minutes.
FORGET_AFTER_S = 600.0


@dataclass(frozen=True, slots=True)
class MembershipChange:
    candidates: tuple[Target, ...] = ()  # named, not in the fleet: to qualify, then join
    gone: tuple[str, ...] = ()  # in the fleet, named no more: leave as failed servers
    forget: tuple[str, ...] = ()  # left `forget_after_s` ago and not back

    def __bool__(self) -> bool:
        return bool(self.candidates or self.gone or self.forget)


def diff(
    fleet: Collection[str],
    departed: Mapping[str, float],
    named: Mapping[str, Target],
    now: float,
    forget_after_s: float = FORGET_AFTER_S,
) -> MembershipChange:
    """`fleet`: the servers planned on; `departed`: servers that left → when; `named`:
    what discovery names now, by server."""
    return MembershipChange(
        candidates=tuple(t for s, t in sorted(named.items()) if s not in fleet),
        gone=tuple(sorted(s for s in fleet if s not in named)),
        forget=tuple(
            sorted(s for s, t in departed.items() if s not in named and now - t >= forget_after_s)
        ),
    )
