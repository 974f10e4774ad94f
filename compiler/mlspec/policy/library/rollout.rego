# Rollout safety: no direct replacement in production, canaries that finish, and GPU
# serving or training in production that can fall back to CPU.
package mlspec.policies.rollout

import data.mlspec.lib
import rego.v1

deny contains lib.finding("rollout.no_direct_in_prod", "spec.rollout.strategy", msg, fix) if {
	lib.online_deployment
	lib.production
	lib.resource.spec.rollout.strategy == "direct"
	msg := sprintf("production Deployment '%s' replaces its model directly, with no canary or analysis", [lib.resource.name])
	fix := "use strategy: canary with analysis thresholds (or blue_green, ab, shadow)"
}

deny contains lib.finding("rollout.canary_complete", "spec.rollout.steps", msg, fix) if {
	lib.online_deployment
	lib.resource.spec.rollout.strategy == "canary"
	steps := lib.resource.spec.rollout.steps
	steps[count(steps) - 1] != 100
	msg := sprintf("the canary of Deployment '%s' stops at %d%% and never completes", [lib.resource.name, steps[count(steps) - 1]])
	fix := "end the canary steps at 100"
}

deny contains lib.finding("rollout.gpu_fallback", "spec.runtime.fallback", msg, fix) if {
	lib.resource.kind == "Deployment"
	lib.production
	lib.resource.spec.runtime.device == "gpu"
	lib.resource.spec.runtime.fallback == "none"
	msg := sprintf("production Deployment '%s' needs a GPU and has no CPU fallback", [lib.resource.name])
	fix := "set spec.runtime.fallback: cpu, or file a Waiver for rollout.gpu_fallback"
}

deny contains lib.finding("rollout.gpu_fallback", "spec.resources.gpu.fallback", msg, fix) if {
	lib.resource.kind == "TrainingPipeline"
	lib.production
	lib.resource.spec.resources.gpu.fallback == "none"
	msg := sprintf("production TrainingPipeline '%s' needs a GPU and has no CPU fallback", [lib.resource.name])
	fix := "set spec.resources.gpu.fallback: cpu, or file a Waiver for rollout.gpu_fallback"
}
