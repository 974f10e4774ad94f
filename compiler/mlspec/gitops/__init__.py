"""GitOps: what a branch changes, pull-request comments, promotion between environments, the pull-based reconciler."""
