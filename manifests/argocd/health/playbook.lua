-- Argo CD health of an incident-operator.dev Playbook (argocd-cm key
-- resource.customizations.health.incident-operator.dev_Playbook; docs/operations/gitops.md).
-- Invalid (validation found problems; it never runs): Degraded, with the problems. Ready:
-- Healthy. Not yet validated (or a newer generation not yet seen): Progressing.
local hs = {status = "Progressing", message = "Waiting for incident-operator to validate the Playbook"}

local status = obj.status
if status == nil or status.conditions == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.message = "Waiting for incident-operator to validate generation " .. tostring(generation)
  return hs
end
for _, c in ipairs(status.conditions) do
  if c.type == "Invalid" and c.status == "True" then
    hs.status = "Degraded"
    hs.message = c.message or c.reason or "Invalid"
    return hs
  end
end
for _, c in ipairs(status.conditions) do
  if c.type == "Ready" and c.status == "True" then
    hs.status = "Healthy"
    hs.message = c.message or "Valid"
    return hs
  end
end
return hs
