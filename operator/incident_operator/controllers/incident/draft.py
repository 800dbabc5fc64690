"""The post-mortem draft of one incident: a ConfigMap kept up to date from Resolved until Closed.

Owns that ConfigMap's writes and one piece of state, `digest`: the hash of the text last written
(or refused), so a draft is written again only when its text changes. `commit` calls it with the
status about to be written, since the draft is written before the status that names it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from incident_operator.adapters.kube import ApiException, Kube, api_reason
from incident_operator.api.models import IncidentSpec, IncidentStatus, Phase
from incident_operator.api.reasons import Reason
from incident_operator.core import postmortem
from incident_operator.core.planner import Record, with_records


@dataclass
class PostmortemDraft:
    kube: Kube
    namespace: str
    name: str
    uid: str
    clock: Callable[[], datetime]
    digest: str | None = None
    """Of the draft's text last written (or refused)."""

    async def update(
        self, spec: IncidentSpec, new: IncidentStatus, written: IncidentStatus
    ) -> tuple[IncidentStatus, list[Record]]:
        """Once resolved and until closed, keep the post-mortem draft's ConfigMap up to date (it is
        written before the status that names it). Written again only when its text changes; a
        refusal (e.g. the namespace has not opted in) is recorded once per text, never retried.
        `written` is the status the API holds; returns `new` naming the draft, and any refusal."""
        if new.phase not in (Phase.RESOLVED, Phase.CLOSED) or written.phase is Phase.CLOSED:
            return new, []
        text = postmortem.render(self.namespace, self.name, spec, new, self.clock())
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest == self.digest:
            return new, []
        self.digest = digest
        name = postmortem.configmap_name(self.name)
        try:
            await self.kube.write_owned_configmap(
                self.namespace, name, {"postmortem.md": text}, self.name, self.uid
            )
        except ApiException as exc:
            if new.postmortemRef is not None:
                return new, []  # an earlier draft stands; said already or not worth a warning
            record = Record(
                Reason.POSTMORTEM_NOT_WRITTEN, f"ConfigMap {name}: {api_reason(exc)}", warning=True
            )
            return with_records(new, [record], self.clock()), [record]
        if new.postmortemRef != name:
            new = new.model_copy(update={"postmortemRef": name})
        return new, []
