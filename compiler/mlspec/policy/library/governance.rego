# Governance: models promoted in staging and production are gated by evaluation metrics,
# and models that use pii features explain themselves.
package mlspec.policies.governance

import data.mlspec.lib
import rego.v1

deny contains lib.finding("governance.evaluation_gates", "spec.evaluation.gates", msg, fix) if {
	lib.resource.kind == "TrainingPipeline"
	lib.guarded
	count(lib.resource.spec.evaluation.gates) == 0
	msg := sprintf("TrainingPipeline '%s' has no evaluation gates in %s", [lib.resource.name, lib.env.tier])
	fix := "declare spec.evaluation.gates, e.g. {auc: '>= 0.8'}"
}

deny contains lib.finding("governance.explainability", "spec.evaluation.explainability", msg, fix) if {
	lib.resource.kind == "TrainingPipeline"
	lib.guarded
	count(lib.pii_sources(lib.resource.ref)) > 0
	lib.resource.spec.evaluation.explainability != true
	msg := sprintf("TrainingPipeline '%s' uses pii features but produces no explainability report", [lib.resource.name])
	fix := "set spec.evaluation.explainability: true"
}

warn contains lib.finding("governance.explainability", "spec.evaluation.explainability", msg, fix) if {
	lib.resource.kind == "TrainingPipeline"
	not lib.guarded
	count(lib.pii_sources(lib.resource.ref)) > 0
	lib.resource.spec.evaluation.explainability != true
	msg := sprintf("TrainingPipeline '%s' uses pii features but produces no explainability report", [lib.resource.name])
	fix := "set spec.evaluation.explainability: true (required in staging and production)"
}
