"""Apply: reconcile a plan through targets, with state, locks and an audit trail."""
