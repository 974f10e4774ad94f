# The bank's own rules, added to mlspec's built-in library (residency, encryption, access,
# rollout, governance). Findings are objects {id, path, message, fix}; ids are stable.
package mlspec.policies.bank

import rego.v1

# bank.model_tags: registered models carry the use case, for the model inventory the regulator asks for.
deny contains {
	"id": "bank.model_tags",
	"path": "spec.register.tags",
	"message": sprintf("TrainingPipeline '%s' registers its model without a use_case tag", [input.resource.name]),
	"fix": "add spec.register.tags.use_case",
} if {
	input.resource.kind == "TrainingPipeline"
	input.environment.spec.tier == "production"
	not input.resource.spec.register.tags.use_case
}
