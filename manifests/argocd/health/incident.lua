-- Argo CD health of an incident-operator.dev Incident (argocd-cm key
-- resource.customizations.health.incident-operator.dev_Incident; docs/operations/gitops.md).
-- Resolved or Closed: Healthy. Stalled (automation cannot go on without a person): Degraded,
-- with the condition's reason and message. Anything else (Detected .. Monitoring, or not yet
-- seen by the operator): Progressing.
local hs = {status = "Progressing", message = "Waiting for incident-operator"}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind and c.status == "True" then
      return c
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.phase == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.message = "Waiting for incident-operator to observe generation " .. tostring(generation)
  return hs
end
if status.phase == "Resolved" or status.phase == "Closed" then
  hs.status = "Healthy"
  hs.message = status.phase
  return hs
end
local stalled = condition(status, "Stalled")
if stalled ~= nil then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or "")
  return hs
end
hs.message = status.phase
local paused = condition(status, "AutomationPaused")
if paused ~= nil then
  hs.message = status.phase .. "; automation paused (" .. (paused.reason or "") .. ")"
end
return hs
