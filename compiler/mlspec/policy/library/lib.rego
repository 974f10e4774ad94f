# Helpers shared by the policy library. Every policy sees:
#   input.resource      the resolved resource (kind, name, ref, metadata, spec), or the Environment itself
#   input.environment   the environment (name, spec)
#   input.project       the project (name)
#   data.mlspec.graph   every resource of the environment (resources[ref]) and dependencies[ref]
package mlspec.lib

import rego.v1

resource := input.resource

env := input.environment.spec

production if env.tier == "production"

guarded if env.tier in {"staging", "production"}

# an online endpoint: the rollout, auth and endpoint rules apply to it (batch jobs and edge packages have none)
online_deployment if {
	resource.kind == "Deployment"
	resource.spec.mode == "online"
}

sensitive := {"confidential", "pii"}

# Every resource ``ref`` is built from, itself included.
upstream(ref) := graph.reachable(data.mlspec.graph.dependencies, {ref})

# The DataSources holding confidential or pii data that ``ref`` is built from.
sensitive_sources(ref) := {s |
	some s in upstream(ref)
	source := data.mlspec.graph.resources[s]
	source.kind == "DataSource"
	source.spec.classification in sensitive
}

# The DataSources holding pii that ``ref`` is built from.
pii_sources(ref) := {s |
	some s in upstream(ref)
	source := data.mlspec.graph.resources[s]
	source.kind == "DataSource"
	source.spec.classification == "pii"
}

# The DataSources holding pii that a TrainingPipeline's features come from: the sources of the views its
# FeatureService selects (its label and entity rows are not model inputs). The register step reads the same
# thing from the Feast registry's source tags (mlspec/runtime/explain.py).
pii_feature_sources(pipeline) := {s |
	some s in upstream(sprintf("FeatureService/%s", [pipeline.spec.features]))
	source := data.mlspec.graph.resources[s]
	source.kind == "DataSource"
	source.spec.classification == "pii"
}

finding(id, path, message, fix) := {"id": id, "path": path, "message": message, "fix": fix}
