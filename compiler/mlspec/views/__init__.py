"""Views render plain data (diagnostics, later plans) for people and machines."""
