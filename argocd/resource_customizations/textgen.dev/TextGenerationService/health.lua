-- Argo CD health check for textgen.dev/TextGenerationService (argocd/README.md).
-- It reads only what the operator writes (operator/textgen_operator/status.py, autoscaling_status.py): the
-- status.observedGeneration and the Ready, Progressing, Degraded and Autoscaling conditions. First match wins:
--   Progressing  no status yet, or status.observedGeneration < metadata.generation (the operator has not seen
--                this spec: older conditions describe the previous one, so they are not read and health does not
--                flap to Healthy and back right after a sync)
--   Degraded     Degraded=True (crash loop, bad model, unschedulable, RolledBack, RolloutFailed, ...), or
--                Autoscaling=False (the autoscaler cannot get its metric or cannot scale)
--   Suspended    Progressing reason Paused (spec.rollout.paused holds a rollout, or a spec change it has not
--                started: the pods still run the previous revision), or Ready reason ScaledToZero
--   Progressing  Progressing=True (Creating, Updating, WarmingUp, RollingUpdate, RollingBack, Scaling), Ready
--                not True, or Autoscaling=Unknown (the autoscaler has not reported yet)
--   Healthy      otherwise; the message adds the autoscaler's state when it is limited (TooManyReplicas) or
--                overridden (ScaleOverridden)
-- Runs with the libraries an argocd-cm customization gets (base, table, safe os; no string library), so it
-- builds messages with `..` only. Tested on Argo CD's runtime: hack/tools/argocd-lua over health_test.yaml.

local function conditions_by_type(status)
  local found = {}
  if status.conditions ~= nil then
    for _, c in ipairs(status.conditions) do
      if c.type ~= nil then
        found[c.type] = c
      end
    end
  end
  return found
end

local function said(c)
  -- "Reason: message", as a condition says why.
  local text = c.reason or "Unknown"
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local function result(status, message)
  return {status = status, message = message}
end

local function not_observed(o)
  local generation = o.metadata.generation or 0
  local status = o.status
  if status == nil or status.conditions == nil then
    return "Waiting for the textgen operator to report a status (is the operator running?)"
  end
  local observed = status.observedGeneration
  if observed == nil or observed < generation then
    return "The textgen operator has not observed generation " .. tostring(generation) ..
      " of the spec yet (status describes generation " .. tostring(observed or 0) .. ")"
  end
  return nil
end

local function assess(o)
  local waiting = not_observed(o)
  if waiting ~= nil then
    return result("Progressing", waiting)
  end
  local c = conditions_by_type(o.status)
  local ready, progressing, degraded, autoscaling = c.Ready, c.Progressing, c.Degraded, c.Autoscaling
  if degraded ~= nil and degraded.status == "True" then
    return result("Degraded", said(degraded))
  end
  if progressing ~= nil and (progressing.reason == "RolloutFailed" or progressing.reason == "RolledBack") then
    return result("Degraded", said(progressing))
  end
  if progressing ~= nil and progressing.reason == "Paused" then
    return result("Suspended", said(progressing))
  end
  if ready ~= nil and ready.status == "True" and ready.reason == "ScaledToZero" then
    return result("Suspended", said(ready))
  end
  if autoscaling ~= nil and autoscaling.status == "False" then
    return result("Degraded", "Autoscaling " .. said(autoscaling))
  end
  if progressing ~= nil and progressing.status == "True" then
    return result("Progressing", said(progressing))
  end
  if ready == nil or ready.status ~= "True" then
    return result("Progressing", ready and said(ready) or "Waiting for the Ready condition")
  end
  if autoscaling ~= nil and autoscaling.status ~= "True" then
    return result("Progressing", "Autoscaling " .. said(autoscaling))
  end
  local message = said(ready)
  if autoscaling ~= nil and (autoscaling.reason == "TooManyReplicas" or autoscaling.reason == "ScaleOverridden") then
    message = message .. "; Autoscaling " .. said(autoscaling)
  end
  return result("Healthy", message)
end

return assess(obj)
