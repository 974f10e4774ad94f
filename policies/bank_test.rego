package mlspec.policies.bank_test

import data.mlspec.policies.bank
import rego.v1

prod := {"name": "prod", "spec": {"tier": "production"}}

test_untagged_models_are_denied_in_production if {
	count(bank.deny) == 1 with input as {"resource": {"kind": "TrainingPipeline", "name": "m", "spec": {"register": {"tags": {}}}}, "environment": prod}
}

test_tagged_models_pass if {
	count(bank.deny) == 0 with input as {"resource": {"kind": "TrainingPipeline", "name": "m", "spec": {"register": {"tags": {"use_case": "fraud"}}}}, "environment": prod}
}
