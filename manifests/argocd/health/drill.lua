-- Argo CD health of an incident-operator.dev Drill (argocd-cm key
-- resource.customizations.health.incident-operator.dev_Drill; docs/operations/gitops.md).
-- Cannot run (Ready False: InvalidSpec, InvalidSchedule): Degraded. A run in progress:
-- Progressing. The last run Failed (the response missed an expectation): Degraded, with the
-- reasons, until a later run passes. Passed, Skipped, or no run yet and Ready: Healthy.
-- Not yet seen by the operator: Progressing.
local hs = {status = "Progressing", message = "Waiting for incident-operator"}

local status = obj.status
if status == nil or status.conditions == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.message = "Waiting for incident-operator to observe generation " .. tostring(generation)
  return hs
end
local ready = nil
local running = nil
for _, c in ipairs(status.conditions) do
  if c.type == "Ready" then
    ready = c
  elseif c.type == "Running" then
    running = c
  end
end
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
  return hs
end
if running ~= nil and running.status == "True" then
  hs.message = "A drill run is in progress"
  return hs
end
local runs = status.runs
local last = nil
if runs ~= nil and #runs > 0 then
  last = runs[#runs]
end
if last ~= nil and last.result == "Running" then
  hs.message = "A drill run is in progress"
  return hs
end
if last ~= nil and last.result == "Failed" then
  hs.status = "Degraded"
  local reasons = ""
  if last.reasons ~= nil then
    reasons = ": " .. table.concat(last.reasons, "; ")
  end
  hs.message = "The last run failed" .. reasons
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  if last ~= nil then
    hs.message = "The last run " .. string.lower(last.result or "ended")
  else
    hs.message = ready.message or "Waits for its next run"
  end
  return hs
end
return hs
