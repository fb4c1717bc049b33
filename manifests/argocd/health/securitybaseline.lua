-- Argo CD health of a SecurityBaseline (security.baseline.dev/v1alpha1), from the
-- conditions the operator writes. tests/unit/test_argocd_health.py runs this file.
local health = {}
local function said(condition)
  if condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  return condition.reason
end
if obj.metadata.deletionTimestamp ~= nil then
  health.status = "Progressing"
  health.message = "Being deleted: the operator removes what the baseline generated"
  return health
end
if obj.status == nil or obj.status.conditions == nil then
  health.status = "Progressing"
  health.message = "Waiting for the operator to report status"
  return health
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  health.status = "Progressing"
  health.message = "Waiting for the operator to observe generation "
    .. string.format("%d", generation)
  return health
end
local ready = nil
local degraded = nil
local conflicted = nil
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  elseif condition.type == "Degraded" then
    degraded = condition
  elseif condition.type == "Conflicted" then
    conflicted = condition
  end
end
if degraded ~= nil and degraded.status == "True" then
  health.status = "Degraded"
  health.message = said(degraded)
  return health
end
if ready == nil or ready.status == "Unknown" then
  health.status = "Progressing"
  health.message = "Waiting for the Ready condition"
  return health
end
health.message = said(ready)
if ready.status == "True" then
  health.status = "Healthy"
elseif ready.reason == "Reconciling" or ready.reason == "Drifted" then
  health.status = "Progressing"
else
  health.status = "Degraded"
  if ready.reason == "Conflicted" and conflicted ~= nil and conflicted.status == "True" then
    health.message = said(conflicted)
  end
end
return health
