# Governance: models promoted in staging and production are gated by evaluation metrics,
# and models that use pii features explain themselves (a SHAP report, which the register step
# also requires before it sets the promote_to alias).
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
	sources := lib.pii_feature_sources(lib.resource)
	count(sources) > 0
	lib.resource.spec.evaluation.explainability != true
	msg := unexplained(sources)
	fix := "set spec.evaluation.explainability: true (the register step also refuses promote_to without a SHAP report)"
}

warn contains lib.finding("governance.explainability", "spec.evaluation.explainability", msg, fix) if {
	lib.resource.kind == "TrainingPipeline"
	not lib.guarded
	sources := lib.pii_feature_sources(lib.resource)
	count(sources) > 0
	lib.resource.spec.evaluation.explainability != true
	msg := unexplained(sources)
	fix := "set spec.evaluation.explainability: true (required in staging and production)"
}

unexplained(sources) := sprintf(
	"TrainingPipeline '%s' uses pii features (from %s) but does not declare an explainability report",
	[lib.resource.name, concat(", ", sort(sources))],
)
